"""Do no harm: does R make its input easier to tell from the target? (docs/refiner.md)

R is trained against a discriminator, and a trajectory can go wrong in ways the loss curves and
the noise watch do not show: one panel run in four on a target made stamps that the compare
stage's pixel CNN told from the target at AUC 0.93 where R's own input, the physics-matched
sims, stood at 0.72 (docs/benchmarks.md, sessions 10-12). At the end of training, `harm_check`
trains that CNN (`refinegan.pixel_cnn`) twice per seed, with the same
initial weights, batches and split, once on R's input vs the target and once on R's output vs
the target, and compares the held-out AUCs, paired. ``train.harm_check`` then saves R's initial
weights (the identity: refined = R's input) instead of weights that raise the AUC by more than
`HARM_AUC` and by more than twice its error over seeds.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from ..pixel_cnn import pixel_cnn

__all__ = ["harm_check", "HARM_AUC", "CHECK_STAMPS", "MIN_STAMPS"]

HARM_AUC = 0.05  # AUC rise (R's output - R's input, vs the target) that counts as harm
CHECK_STAMPS = 2048  # stamps per side the check uses at most (the first ones: whole groups)
MIN_STAMPS = 256  # fewer stamps on either side: the check is skipped (an AUC error of ~0.05)
TRAIN_FRACTION = 0.75  # the first 3/4 of each side train the CNN, the rest measure the AUC

logger = logging.getLogger(__name__)


def _fit_auc(fake: torch.Tensor, real: torch.Tensor, n_fake: int, n_real: int, seed: int,
             steps: int, batch: int, channels: int, lr: float) -> float:
    """Train the CNN on the first ``n_fake`` / ``n_real`` stamps (label 0 / 1) and return its
    held-out AUC on the rest; everything random drawn from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = pixel_cnn(channels)
    net = net.to(fake.device)
    gen = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    y = torch.cat([torch.zeros(batch), torch.ones(batch)]).to(fake.device)
    net.train()
    for _ in range(steps):
        i, j = gen.integers(0, n_fake, batch), gen.integers(0, n_real, batch)
        x = torch.cat([fake[torch.from_numpy(i)], real[torch.from_numpy(j)]]).float()
        loss = F.binary_cross_entropy_with_logits(net(x)[:, 0], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        score = lambda z: torch.cat([net(z[k:k + 512].float())[:, 0] for k in range(0, len(z), 512)])  # noqa: E731
        neg, pos = score(fake[n_fake:]).cpu().numpy(), score(real[n_real:]).cpu().numpy()
    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    return float(roc_auc_score(y, np.r_[neg, pos].astype(np.float64)))


def harm_check(input_z: torch.Tensor, refined_z: torch.Tensor, real_z: torch.Tensor, seed: int,
               seeds: int = 3, steps: int = 400, batch: int = 64, channels: int = 8,
               lr: float = 1e-3) -> dict:
    """Held-out pixel-CNN AUC against the target of R's input and of R's output, paired.

    Parameters
    ----------
    input_z, refined_z : torch.Tensor
        (N, 1, H, W) R's input (normalised sims, after the matchings) and R's output on them,
        stamp for stamp.
    real_z : torch.Tensor
        (M, 1, H, W) normalised target stamps.
    seed : int
        Base seed; classifier k uses ``seed + k`` for its weights, batches (the same for both
        arms) and nothing else (the split is the stamps' order: the first `TRAIN_FRACTION`).
    seeds, steps, batch, channels, lr
        Classifiers per arm, their Adam steps, stamps per side per step, width, learning rate.

    Returns
    -------
    dict
        ``auc_input``, ``auc_refined`` (means over seeds), ``diff`` (mean of the paired
        differences, refined - input), ``err`` (its standard error; 0 with one seed), ``harmed``
        (diff > `HARM_AUC` and diff > 2 err), ``n`` (stamps per side), or ``skipped`` (a reason)
        with fewer than `MIN_STAMPS` stamps on a side.
    """
    n = min(len(input_z), len(real_z), CHECK_STAMPS)
    if input_z.shape != refined_z.shape:
        raise ValueError(f"harm_check: R's input {tuple(input_z.shape)} and output "
                         f"{tuple(refined_z.shape)} differ in shape")
    if n < MIN_STAMPS:
        return {"skipped": f"{n} stamps on a side, fewer than {MIN_STAMPS}", "harmed": False}
    k = int(TRAIN_FRACTION * n)
    real = real_z[:n]
    pairs = []
    for s in range(seeds):
        a = _fit_auc(input_z[:n], real, k, k, seed + s, steps, batch, channels, lr)
        b = _fit_auc(refined_z[:n], real, k, k, seed + s, steps, batch, channels, lr)
        pairs.append((a, b))
    a, b = np.array(pairs).T
    d = b - a
    err = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    diff = float(d.mean())
    return {"auc_input": float(a.mean()), "auc_refined": float(b.mean()), "diff": diff, "err": err,
            "harmed": bool(diff > HARM_AUC and diff > 2 * err), "n": int(n), "seeds": int(seeds)}
