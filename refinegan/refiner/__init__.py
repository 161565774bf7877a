"""The ``train`` and ``refine`` stages: the SimGAN refiner.

- `model`: R (residual ResNet + moment projection + optional PSF kernel) and the builders
- `discriminator`: D (local patch map + galaxy-scale branch); `moments`: the moment basis
- `losses`: adversarial, self-regularisation, moment and noise-anchor losses
- `settings`: the ``train:`` section as a frozen dataclass (the architecture's one truth)
- `data`: the training data prepared (read, checked, PSF-matched, normalised, on the device)
- `trainer`: all training state, the noise anchors and one step; `train`: the loop (the stage)
- `history`: the history buffer; `monitor`: train_log.h5, sample grids, failure-mode watch
- `refiner_file`: ``refiner.pt`` and ``checkpoint.pt``; `distributed`: torchrun / DDP
- `psf_match`: re-observing the sims through the target's PSF; `normalize`: noise + asinh
- `refine`: the ``refine`` stage
"""
