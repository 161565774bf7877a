"""The ``train:`` config section as a frozen dataclass: the one truth of the architecture.

`TrainSettings.arch` and `TrainSettings.disc_arch` are what `refinegan.refiner.model` builds R and
D from (and what ``refiner.pt`` stores); `TrainSettings.resume_settings` is what a resumed run
must share with its ``checkpoint.pt``, built from the same tables (`REFINER_ARCH`, `DISC_ARCH`)
plus the settings that fix the rest of the training state (`RESUME_EXTRA`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..errors import ConfigError

__all__ = ["TrainSettings", "REFINER_ARCH", "DISC_ARCH", "RESUME_EXTRA", "RESUME_MAY_CHANGE",
           "NOISE_ANCHORS"]

# R's arch key -> the TrainSettings field it comes from (`refinegan.refiner.model.build_refiner`)
REFINER_ARCH = {"channels": "refiner_channels", "blocks": "refiner_blocks",
                "moment_weights_px": "moment_weights_px", "moment_order": "moment_order",
                "residual_space": "residual_space", "psf_kernel_px": "psf_kernel_px",
                "latent_dim": "latent_dim"}
# D's arch key -> TrainSettings field (`refinegan.refiner.model.build_discriminator`)
DISC_ARCH = {"channels": "disc_channels", "global_branch": "disc_global_branch",
             "spectral_norm": "disc_spectral_norm"}
# Not arch keys, but a checkpoint's state (R's inputs, its loss, the history buffer, the EMA)
# only continues the same run with the same values of these
RESUME_EXTRA = ("psf_match", "moment_mode", "history_size", "ema_decay")
# What a resumed run may change (docs/refiner.md): how long it runs (more steps) and how it
# reports, and where it runs. Every other field, the seed and the stamp shape must be the
# checkpoint's: they change what the remaining steps compute.
RESUME_MAY_CHANGE = ("steps", "log_every", "checkpoint_every", "sample_every", "sample_count",
                     "device", "cuda_bf16", "cuda_channels_last", "compile", "harm_check")
# noise anchor -> the TrainSettings field of its weight; R's loss sums them in this order
NOISE_ANCHORS = {"level": "noise_lambda", "acf": "noise_acf_lambda",
                 "spread": "noise_acf_spread_lambda", "shape": "noise_shape_lambda"}


def _plain(value):
    """A setting as a checkpoint stores it: tuples as lists (``torch.load(weights_only=True)``)."""
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The ``train:`` section of the config (see config.schema.yaml for meanings and units)."""

    steps: int
    batch_size: int
    device: str
    refiner_channels: int
    refiner_blocks: int
    residual_space: str
    psf_kernel_px: int
    psf_match: bool
    noise_match: bool
    noise_spread: str
    latent_dim: int
    disc_channels: int
    disc_global_branch: bool
    disc_spectral_norm: bool
    d_augment: bool
    global_weight: float
    adv_weight: float
    adv_loss: str
    r1_gamma: float
    reg_lambda: float
    reg_psi: str
    reg_lowpass_sigma_px: float
    moment_mode: str
    moment_lambda: float
    moment_weights_px: tuple
    moment_order: int
    noise_lambda: float
    noise_acf_lambda: float
    noise_acf_max_lag: int
    noise_shape_lambda: float
    noise_acf_spread_lambda: float
    noise_region: str
    noise_anchor_reference: str
    history_size: int
    history_fraction: float
    pretrain_r_steps: int
    pretrain_d_steps: int
    k_g: int
    k_d: int
    lr_r: float
    lr_d: float
    adam_beta1: float
    ema_decay: float
    norm_softening: float
    norm_sigma_source: str
    norm_border_px: int
    log_every: int
    checkpoint_every: int
    sample_every: int
    sample_count: int
    cuda_bf16: bool
    cuda_channels_last: bool
    compile: bool
    harm_check: bool

    @classmethod
    def from_config(cls, config: Mapping) -> TrainSettings:
        """The settings from a config's ``train`` section, which must hold exactly the fields.

        Raises
        ------
        ConfigError
            If keys are missing or unknown.
        """
        section = dict(config.get("train", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = names - set(section), set(section) - names
        if missing or unknown:
            raise ConfigError(f"config train section: missing keys {sorted(missing)}, unknown keys "
                              f"{sorted(unknown)} (load it with refinegan.config.load_config)")
        section["moment_weights_px"] = tuple(section["moment_weights_px"])
        return cls(**section)

    @property
    def total_steps(self) -> int:
        """Global steps of all three phases (pretrain R, pretrain D, adversarial)."""
        return self.pretrain_r_steps + self.pretrain_d_steps + self.steps

    def phase(self, step: int) -> int:
        """The phase of global step ``step``: 0 pretrain R, 1 pretrain D, 2 adversarial."""
        if step < self.pretrain_r_steps:
            return 0
        return 1 if step < self.pretrain_r_steps + self.pretrain_d_steps else 2

    def arch(self) -> dict:
        """R's architecture (`REFINER_ARCH`); moment weights only with ``moment_mode: project``."""
        arch = {key: getattr(self, name) for key, name in REFINER_ARCH.items()}
        arch["moment_weights_px"] = list(self.moment_weights_px) if self.moment_mode == "project" else []
        return arch

    def disc_arch(self) -> dict:
        """D's architecture (`DISC_ARCH`)."""
        return {key: getattr(self, name) for key, name in DISC_ARCH.items()}

    def resume_settings(self) -> dict:
        """The settings a checkpoint must share to be resumed, by field name, as stored.

        The fields behind `arch` and `disc_arch` (all of ``moment_weights_px``, which the moment
        loss uses too) and `RESUME_EXTRA`; tuples as lists.
        """
        names = (*REFINER_ARCH.values(), *DISC_ARCH.values(), *RESUME_EXTRA)
        return {name: _plain(getattr(self, name)) for name in names}

    def run_settings(self, seed: int, stamp_shape) -> dict:
        """Everything a resumed run must share with its checkpoint, as stored: every field but
        `RESUME_MAY_CHANGE`, the master ``seed`` and the ``stamp_shape`` (H, W)."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)
               if f.name not in RESUME_MAY_CHANGE}
        return out | {"seed": int(seed), "stamp_shape": [int(v) for v in stamp_shape]}

    def noise_weights(self) -> dict[str, float]:
        """Each noise anchor's weight (`NOISE_ANCHORS`, in summation order); 0 = off."""
        return {anchor: getattr(self, name) for anchor, name in NOISE_ANCHORS.items()}

    @property
    def adversarial(self) -> bool:
        """Whether D is trained and R's loss has an adversarial term (``adv_weight`` > 0)."""
        return self.adv_weight > 0

    @property
    def needs_noise_target(self) -> bool:
        """Whether any noise anchor is on (the target's noise statistics are needed)."""
        return any(w > 0 for w in self.noise_weights().values())
