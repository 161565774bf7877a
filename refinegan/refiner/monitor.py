"""What training writes for people: train_log.h5, its rows (`TrainLog`), the log line, sample
grids, and the failure-mode watch.

``train_log.h5`` has one row per step: ``step``, ``phase`` (0 pretrain R, 1 pretrain D,
2 adversarial), the losses, D's accuracy on real and on refined stamps (fraction of local patches
classified correctly), D's stamp-level AUC on the batch (``d_auc``: patches are mostly sky, so the
accuracies sit near chance even when D ranks whole stamps well; both 0 on steps without a D
update), lambda and the step time; its attributes hold the config (JSON), the
device and the failure-mode warnings (JSON list).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import TrainingError
from ..noise import border_sigma
from .losses import border_acf, border_variance
from .settings import TrainSettings

__all__ = [
    "LOG_COLUMNS",
    "LOG_UNITS",
    "PHASES",
    "TrainLog",
    "write_log",
    "sample_grid",
    "save_sample_grid",
    "watch",
    "IDENTITY_RMS",
    "D_WIN_ACCURACY",
    "COLLAPSE_RATIO",
    "noise_drift",
    "drift_warning",
    "DRIFT_SIGMA",
    "DRIFT_LAG1",
]

# One row per step; these are the columns, in order.
LOG_COLUMNS = ("step", "phase", "loss_r_adv", "loss_r_reg", "loss_r_moment", "loss_d",
               "acc_real", "acc_fake", "r1", "loss_r_noise", "d_auc", "lambda", "step_time_s")
COL = {name: j for j, name in enumerate(LOG_COLUMNS)}
PHASES = ("pretrain_r", "pretrain_d", "adversarial")  # the names of the phase column's values
LOG_UNITS = {"step_time_s": "s", "loss_r_reg": "normalised (asinh) units",
             "acc_real": "fraction of patches", "acc_fake": "fraction of patches",
             "d_auc": "fraction of (real, refined) stamp pairs ranked right"}

# Failure-mode thresholds (docs/refiner.md):
IDENTITY_RMS = 0.02  # rms of R(z) - z in normalised units (noise std 0.8) below which R is "identity"
D_WIN_ACCURACY = 0.99  # D's accuracy on both real and refined, averaged over the last log window
COLLAPSE_RATIO = 0.5  # refined diversity / sim diversity (pixel std across stamps) below = collapse
NOISE_RATIO_RANGE = (0.8, 1.25)  # refined / real border-frame robust sigma (normalised units) outside = warn
BORDER_PX = 4  # frame used for the noise level
# R's own change of the matched Gaussian noise (`noise_drift`) beyond which the watch warns:
DRIFT_SIGMA = 0.01  # the 1 % bar on sigma of issue 15
DRIFT_LAG1 = 0.003  # ~2x the standard error of a 4,096-stamp coadd target's mean lag-1 (docs/benchmarks.md)

logger = logging.getLogger(__name__)


class TrainLog:
    """The log rows of a run: metric rows pending on the device, and the host rows done.

    `Trainer.one_step` returns a device row per step (no host sync); `flush` moves the pending
    rows to the host at log and checkpoint steps, refuses NaN / inf losses and completes them
    to `LOG_COLUMNS` (step, phase, lambda, mean step time of the window).

    Parameters
    ----------
    s : TrainSettings
        Gives the phases, ``reg_lambda`` and ``log_every``.
    device : torch.device
        Where the rows are computed (CUDA is synchronised before timing the window).
    checkpoint_path : path
        The checkpoint the NaN message names as the last good one.
    done : numpy.ndarray, optional
        (n, len(LOG_COLUMNS)) rows of a resumed run [default: none].
    """

    def __init__(self, s: TrainSettings, device: torch.device, checkpoint_path: str | os.PathLike,
                 done: np.ndarray | None = None) -> None:
        self.s, self.device, self.checkpoint_path = s, device, Path(checkpoint_path)
        self.blocks: list[np.ndarray] = [] if done is None else [done]
        self.pending: list[torch.Tensor] = []
        self.window_start = time.perf_counter()

    def append(self, row: torch.Tensor) -> None:
        """Keep one step's device metrics row (9,) until the next `flush`."""
        self.pending.append(row)

    def done(self) -> np.ndarray:
        """(n, len(LOG_COLUMNS)) float64: every row flushed so far."""
        return np.concatenate(self.blocks) if self.blocks else np.zeros((0, len(LOG_COLUMNS)))

    def flush(self, step: int) -> np.ndarray:
        """Move the pending rows (the steps before global step ``step``) to the host.

        Returns
        -------
        numpy.ndarray
            (k, len(LOG_COLUMNS)) the rows added (k = 0 when none were pending).

        Raises
        ------
        TrainingError
            If a loss is NaN or inf (naming the step, its phase and the last good checkpoint).
        """
        s, pending = self.s, self.pending
        if not pending:
            return np.zeros((0, len(LOG_COLUMNS)))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dt = (time.perf_counter() - self.window_start) / len(pending)
        m = torch.stack(pending).cpu().double().numpy()
        steps = np.arange(step - len(pending), step)
        bad = ~np.isfinite(m).all(axis=1)
        pending.clear()
        self.window_start = time.perf_counter()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TrainingError(
                f"loss became NaN/inf at step {int(steps[i])} ({PHASES[s.phase(int(steps[i]))]} phase: "
                f"{dict(zip(LOG_COLUMNS[2:11], m[i], strict=True))}); stopped, the last good "
                f"checkpoint {self.checkpoint_path} is kept (lower train.lr_r / lr_d or check the inputs)")
        block = np.column_stack([steps, [s.phase(int(q)) for q in steps], m,
                                 np.full(len(steps), s.reg_lambda), np.full(len(steps), dt)])
        self.blocks.append(block)
        return block

    def report(self, step: int, block: np.ndarray, bar=None) -> None:
        """Log the last row of ``block`` as the one-line progress report (and on the tqdm bar)."""
        if not len(block):
            return
        last = dict(zip(LOG_COLUMNS, block[-1], strict=True))
        loss_r = sum(last[c] for c in ("loss_r_adv", "loss_r_reg", "loss_r_moment", "loss_r_noise"))
        logger.info("step %d | %s | loss_R %.4f (adv %.4f reg %.4f noise %.4f) | loss_D %.4f | acc "
                    "real %.2f fake %.2f | stamp AUC %.2f | %.1f ms/step", step, PHASES[int(last["phase"])],
                    loss_r, last["loss_r_adv"], last["loss_r_reg"], last["loss_r_noise"],
                    last["loss_d"], last["acc_real"], last["acc_fake"], last["d_auc"],
                    1e3 * last["step_time_s"])
        if bar is not None:
            bar.set_postfix(loss_R=f"{loss_r:.3f}", loss_D=f"{last['loss_d']:.3f}")

    def _d_tail(self, updated_only: bool) -> np.ndarray:
        """The last ``log_every`` rows of the D phases (only those with a D update, loss_d != 0,
        when ``updated_only``)."""
        rows = self.done()
        if len(rows):
            keep = rows[:, COL["phase"]] >= 1
            if updated_only:
                keep &= rows[:, COL["loss_d"]] != 0
            rows = rows[keep]
        return rows[-self.s.log_every:]

    def d_auc(self) -> float:
        """D's mean stamp-level AUC (``d_auc``) over the last ``log_every`` rows with a D update
        (NaN when there are none)."""
        tail = self._d_tail(updated_only=True)
        return float(tail[:, COL["d_auc"]].mean()) if len(tail) else float("nan")

    def d_accuracy(self) -> tuple[float, float]:
        """D's mean accuracy on real and on refined stamps over the last ``log_every`` rows of
        the D phases (NaN when there are none)."""
        tail = self._d_tail(updated_only=False)
        acc_r = float(tail[:, COL["acc_real"]].mean()) if len(tail) else float("nan")
        acc_f = float(tail[:, COL["acc_fake"]].mean()) if len(tail) else float("nan")
        return acc_r, acc_f


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
def noise_drift(sim_z: torch.Tensor, refined_z: torch.Tensor, sky: torch.Tensor | None = None
                ) -> dict:
    """R's own change of the noise on the same stamps: ``sim_z`` (R's input, B, 1, H, W) and
    ``refined_z`` = R(``sim_z``), measured over ``sky`` (B, H, W bool; the border frame of
    `BORDER_PX` pixels when None) in linear units (``sinh(z)``).

    Returns ``sigma`` = sqrt(median over stamps of var(refined) / var(input)) - 1 and
    ``lag1_x``, ``lag1_y`` = mean over stamps of acf(refined) - acf(input) at lag (0, 1), (1, 0):
    paired on the same noise, so they resolve what R did to the noise that physics matched
    (compare's ``R's own lag-1 change`` over all stamps is the same statistic).
    """
    region = BORDER_PX if sky is None else sky
    lags = ((0, 1), (1, 0))
    ratio = border_variance(refined_z, region) / border_variance(sim_z, region)
    d_acf = (border_acf(refined_z, region, lags) - border_acf(sim_z, region, lags)).mean(dim=0)
    return {"sigma": float(ratio.median().sqrt()) - 1.0, "lag1_x": float(d_acf[0]),
            "lag1_y": float(d_acf[1])}


def drift_warning(drift: Mapping) -> str | None:
    """The watch's warning when `noise_drift` exceeds `DRIFT_SIGMA` or `DRIFT_LAG1`, else None."""
    if abs(drift["sigma"]) <= DRIFT_SIGMA and max(abs(drift["lag1_x"]), abs(drift["lag1_y"])) <= DRIFT_LAG1:
        return None
    return (f"R changed the matched noise: sigma {100 * drift['sigma']:+.2f} % (bar {100 * DRIFT_SIGMA:.0f} %), "
            f"lag-1 correlation x {drift['lag1_x']:+.4f}, y {drift['lag1_y']:+.4f} (bar {DRIFT_LAG1}) "
            "on the watch stamps; the refined noise is further from the target's than R's input. "
            "Check compare's R-only rows, or train with another seed (refiner.pt then holds the "
            "last checkpoint's weights within the bar, if one was)")


@torch.no_grad()
def watch(sim_z: torch.Tensor, refined_z: torch.Tensor, acc_real: float, acc_fake: float,
          real_z: torch.Tensor | None = None, sim_sky: torch.Tensor | None = None,
          matched_noise: bool = False) -> dict:
    """Check the known SimGAN failure modes on a fixed batch of sim stamps and their refinements.

    Returns a dict with the measured ``identity_rms``, ``diversity_ratio``,
    ``noise_ratio`` (refined / real border std; NaN without ``real_z``), ``noise_drift``
    (`noise_drift` of R's input and output over ``sim_sky``) and a list ``warnings`` of the modes
    found (identity, discriminator wins, collapse, noise level off, and with ``matched_noise``
    (R's input already has the target's Gaussian noise, ``train.noise_match``) R changed it).
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
                        f"normalised units < {IDENTITY_RMS} (refined indistinguishable from "
                        + ("R's input, the sims after PSF and noise matching: R added nothing to "
                           "the physics)" if matched_noise else "sim)"))
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
    drift = noise_drift(sim_z, refined_z, sim_sky)
    if matched_noise and (w := drift_warning(drift)) is not None:
        warnings.append(w)
    return {"identity_rms": identity_rms, "diversity_ratio": ratio, "noise_ratio": noise_ratio,
            "noise_drift": drift, "warnings": warnings}
