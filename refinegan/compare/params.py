"""The compare stage's settings (the ``compare:`` config section) and the names of what it measures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from ..errors import ConfigError
from ..noise import MaskParams
from ..seeds import STREAMS

__all__ = ["CompareParams", "DOMAINS", "PAIRS", "SCALAR_STATS", "NOISE_STATS", "MORPH_STATS",
           "HIST_RANGE", "PIXEL_SAMPLE"]

DOMAINS = ("sim", "refined", "real")
PAIRS = ("sim_real", "refined_real", "real_real")  # columns of every distance table
SCALAR_STATS = ("flux", "peak_snr", "hsm_flux", "hsm_sigma", "hlr_pix", "hsm_g1", "hsm_g2",
                "noise_mean",
                "noise_std", "noise_skew", "noise_kurt", "acf_10", "acf_01", "acf_11")
NOISE_STATS = ("noise_mean", "noise_std", "noise_skew", "noise_kurt", "acf_10", "acf_01", "acf_11")
MORPH_STATS = ("morph_r50", "morph_c", "morph_a", "morph_s", "morph_gini", "morph_m20")
HIST_RANGE = (-4.0, 8.0)  # asinh(pixel / real median noise std)
MODES = ("full", "calibration")  # compare.mode
PIXEL_SAMPLE = 200_000  # pixels per set for the pixel-value W1 / KS


@dataclass(frozen=True)
class CompareParams:
    """The ``compare:`` config section (see config.schema.yaml for meanings and units)."""

    seed_offset: int = STREAMS["compare"]
    chunk_stamps: int = 1024
    max_stamps: int | None = None
    mode: str = "full"
    subsample_stamps: int = 4096
    mask_threshold_sigma: float = 2.5
    mask_smooth_pix: float = 1.0
    mask_dilate_pix: int = 5
    mask_min_area_pix: int = 8
    power_spectrum_bins: int = 12
    acf_max_lag: int = 3
    histogram_bins: int = 96
    morphology_n: int = 300
    morph_threshold_sigma: float = 1.5
    morph_n_pixels: int = 5
    energy_n: int = 2000
    test_fraction: float = 0.5
    n_bootstrap: int = 200
    gb_seeds: int = 3
    gb_max_iter: int = 100
    cnn_seeds: int = 3
    cnn_max_stamps: int = 2000
    cnn_epochs: int = 5
    cnn_channels: int = 8
    bar_m: float = 2e-3
    plot_stamps: int = 8
    threads: int = 1
    calibrate_with_target_psf: bool = True
    twin: bool | None = None  # whether the workflow makes and compares the paired twin (None: auto)
    morph_processes: int = 1
    calibration_processes: int = 1

    @classmethod
    def from_config(cls, config: Mapping) -> CompareParams:
        section = dict(config.get("compare", {}))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"unknown compare key(s) {unknown}; allowed: {sorted(known)}")
        if section.get("mode", "full") not in MODES:
            raise ConfigError(f"compare.mode must be one of {list(MODES)}, got {section['mode']!r}")
        return cls(**section)

    @property
    def full_stamps(self) -> int | None:
        """Stamps per set the full comparison reads: ``max_stamps``, and in calibration mode at
        most ``subsample_stamps`` (None = all)."""
        if self.mode != "calibration":
            return self.max_stamps
        return min(self.subsample_stamps, self.max_stamps or self.subsample_stamps)

    @property
    def mask(self) -> MaskParams:
        return MaskParams(self.mask_threshold_sigma, self.mask_smooth_pix, self.mask_dilate_pix,
                          min_area_pix=self.mask_min_area_pix)
