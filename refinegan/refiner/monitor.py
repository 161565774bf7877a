"""What training writes for people: train_log.h5, sample grids, and the failure-mode watch.

``train_log.h5`` has one row per step: ``step``, ``phase`` (0 pretrain R, 1 pretrain D,
2 adversarial), the losses, D's accuracy on real and on refined stamps (fraction of local patches
classified correctly), lambda and the step time; its attributes hold the config (JSON), the
device and the failure-mode warnings (JSON list).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..noise import border_sigma

__all__ = [
    "LOG_COLUMNS",
    "LOG_UNITS",
    "write_log",
    "sample_grid",
    "save_sample_grid",
    "watch",
    "IDENTITY_RMS",
    "D_WIN_ACCURACY",
    "COLLAPSE_RATIO",
]

# One row per step; these are the columns, in order.
LOG_COLUMNS = ("step", "phase", "loss_r_adv", "loss_r_reg", "loss_r_moment", "loss_d",
               "acc_real", "acc_fake", "r1", "loss_r_noise", "lambda", "step_time_s")
COL = {name: j for j, name in enumerate(LOG_COLUMNS)}
LOG_UNITS = {"step_time_s": "s", "loss_r_reg": "normalised (asinh) units",
             "acc_real": "fraction of patches", "acc_fake": "fraction of patches"}

# Failure-mode thresholds (docs/refiner.md):
IDENTITY_RMS = 0.02  # rms of R(z) - z in normalised units (noise std 0.8) below which R is "identity"
D_WIN_ACCURACY = 0.99  # D's accuracy on both real and refined, averaged over the last log window
COLLAPSE_RATIO = 0.5  # refined diversity / sim diversity (pixel std across stamps) below = collapse
NOISE_RATIO_RANGE = (0.8, 1.25)  # refined / real border-frame robust sigma (normalised units) outside = warn
BORDER_PX = 4  # frame used for the noise level


def write_log(path: str | os.PathLike, rows: np.ndarray, attrs: Mapping) -> Path:
    """Write the (n, len(LOG_COLUMNS)) log rows to ``path`` atomically (tmp + rename)."""
    import h5py

    path = Path(path)
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(LOG_COLUMNS))
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for j, name in enumerate(LOG_COLUMNS):
            data = rows[:, j].astype(np.int64) if name in ("step", "phase") else rows[:, j]
            ds = f.create_dataset(name, data=data)
            ds.attrs["units"] = LOG_UNITS.get(name, "")
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return path


def sample_grid(rows: Sequence[np.ndarray], zmin: float = -3.0, gap_px: int = 1) -> np.ndarray:
    """Tile rows of normalised (asinh-stretched) stamps (k, H, W) into one image in [0, 1]."""
    arrays = [np.asarray(r, dtype=np.float64) for r in rows]
    k, h, w = arrays[0].shape
    zmax = max(float(np.percentile(np.concatenate([a.ravel() for a in arrays]), 99.5)), zmin + 1)
    grid = np.ones((len(arrays) * (h + gap_px) - gap_px, k * (w + gap_px) - gap_px))
    for i, a in enumerate(arrays):
        for j in range(k):
            y, x = i * (h + gap_px), j * (w + gap_px)
            grid[y:y + h, x:x + w] = np.clip((a[j] - zmin) / (zmax - zmin), 0, 1)
    return grid


def save_sample_grid(path: str | os.PathLike, sim: np.ndarray, refined: np.ndarray,
                     real: np.ndarray) -> Path:
    """PNG with rows sim | refined | real (normalised units are already an asinh stretch)."""
    import matplotlib.image

    path = Path(path)
    with atomic_path(path) as tmp:
        matplotlib.image.imsave(tmp, sample_grid([sim, refined, real]), cmap="gray", vmin=0,
                                vmax=1, format="png")
    return path


def _border_std(z: torch.Tensor) -> float:
    """Median over stamps of the border frame's robust sigma (`refinegan.noise.border_sigma`),
    in the units of ``z`` (B, 1, H, W)."""
    return float(np.median(border_sigma(z[:, 0].float().cpu().numpy(), BORDER_PX)))


@torch.no_grad()
def watch(sim_z: torch.Tensor, refined_z: torch.Tensor, acc_real: float, acc_fake: float,
          real_z: torch.Tensor | None = None) -> dict:
    """Check the known SimGAN failure modes on a fixed batch of sim stamps and their refinements.

    Returns a dict with the measured ``identity_rms``, ``diversity_ratio``,
    ``noise_ratio`` (refined / real border std; NaN without ``real_z``) and a list ``warnings``
    of the modes found (identity, discriminator wins, collapse, noise level off).
    """
    diff = (refined_z.float() - sim_z.float())
    identity_rms = float(diff.pow(2).mean().sqrt())
    div_sim = float(sim_z.float().std(dim=0).mean())
    div_ref = float(refined_z.float().std(dim=0).mean())
    ratio = div_ref / div_sim if div_sim > 0 else float("nan")
    noise_ratio = _border_std(refined_z) / _border_std(real_z) if real_z is not None else float("nan")
    warnings = []
    if identity_rms < IDENTITY_RMS:
        warnings.append(f"refiner stayed the identity: rms(R(x) - x) = {identity_rms:.4f} "
                        f"normalised units < {IDENTITY_RMS} (refined indistinguishable from sim)")
    if acc_real >= D_WIN_ACCURACY and acc_fake >= D_WIN_ACCURACY:
        warnings.append(f"discriminator wins completely: accuracy {acc_real:.3f} on real, "
                        f"{acc_fake:.3f} on refined (>= {D_WIN_ACCURACY}); R gets no useful gradient")
    if ratio < COLLAPSE_RATIO:
        warnings.append(f"collapse: refined stamps are {ratio:.2f}x as diverse as sim stamps "
                        f"(pixel std across stamps; < {COLLAPSE_RATIO})")
    lo, hi = NOISE_RATIO_RANGE
    if not lo <= noise_ratio <= hi and noise_ratio == noise_ratio:
        warnings.append(f"noise level off: refined border std is {noise_ratio:.2f}x the target's "
                        f"(normalised units; outside {lo}-{hi}); R amplifies or removes noise")
    return {"identity_rms": identity_rms, "diversity_ratio": ratio, "noise_ratio": noise_ratio,
            "warnings": warnings}
