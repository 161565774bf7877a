"""Train the SimGAN refiner: ``refinegan train --config C --sim F... --real F --out DIR [--resume]``.

Schedule (all counts from ``config['train']``): ``pretrain_r_steps`` R steps on
self-regularisation only, ``pretrain_d_steps`` D steps, then ``steps`` adversarial steps of
``k_g`` R updates and ``k_d`` D updates. The global step counter runs through all three phases.

Writes into ``out_dir``: ``refiner.pt`` (the model `refinegan.refiner.refine` uses), ``checkpoint.pt``
(full state, every ``checkpoint_every`` steps, atomically), ``train_log.h5`` and
``samples/step-<k>.png``. On CUDA the data stay on the device, bf16 autocast and channels_last
are on, and the loop does not synchronise with the host except at log / checkpoint steps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .. import noise
from ..config import RunConfig
from ..errors import ConfigError, TrainingError
from ..io import open_stamps, package_versions, read_many
from ..seeds import stream_sequence
from . import monitor as mon
from .distributed import World, init_world
from .normalize import Normalization
from .psf_match import PsfMatch, build_psf_match
from .refiner_file import MODEL_FORMAT, MODEL_VERSION, atomic_save, load_file
from .trainer import Trainer, TrainSettings

__all__ = ["TrainSettings", "Trainer", "TrainResult", "train", "resolve_device"]

logger = logging.getLogger(__name__)

PIXEL_SCALE_RTOL = 1e-6
WATCH_STAMPS = 256  # fixed sim stamps used for the failure-mode watch and sample grids
PHASES = ("pretrain_r", "pretrain_d", "adversarial")
ARCH_KEYS = ("refiner_channels", "refiner_blocks", "residual_space", "psf_kernel_px", "psf_match", "latent_dim", "disc_channels", "disc_global_branch",
             "disc_spectral_norm", "moment_weights_px", "moment_order", "moment_mode", "history_size", "ema_decay")


@dataclasses.dataclass
class TrainResult:
    """What `train` produced: paths, the last step, the failure-mode watch."""

    model_path: Path
    checkpoint_path: Path
    log_path: Path
    step: int
    watch: dict


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a `ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but torch.cuda.is_available() is False; use auto or cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def _load_domain(paths: Sequence[str | os.PathLike], role: str):
    """Read stamp files, refusing empty sets and NaN / inf pixels (naming file and stamp)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise TrainingError(f"no {role} stamp files given")
    stamps = read_many(paths)
    sizes = []
    for p in paths:
        with open_stamps(p) as sf:
            sizes.append(sf.n)
    if len(stamps) == 0:
        raise TrainingError(f"{role} stamp file(s) {[str(p) for p in paths]} hold no stamps")
    bad = ~np.isfinite(stamps.images).all(axis=(1, 2))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        k = int(np.searchsorted(np.cumsum(sizes), i, side="right"))
        local = i - (int(np.sum(sizes[:k])) if k else 0)
        raise TrainingError(f"{paths[k]}: stamp {local} has NaN or inf pixels ({int(bad.sum())} "
                            f"such {role} stamps); fix or drop them before training")
    return stamps, paths


def fill_masked(images: np.ndarray, mask: np.ndarray | None, sigma: np.ndarray,
                seed: int) -> tuple[np.ndarray, int]:
    """Replace bad pixels (``mask`` non-zero: cosmic rays, hot pixels) by white noise of each
    stamp's sigma, so D never learns them as a feature of the target and R never learns to add
    them. Returns the images (a copy when anything changed) and the number of pixels replaced.
    """
    if mask is None or not mask.any():
        return images, 0
    bad = mask != 0  # (N, H, W)
    rng = np.random.default_rng(stream_sequence(seed, "mask_fill"))
    out = images.copy()
    fill = rng.standard_normal(int(bad.sum())).astype(np.float32)
    out[bad] = fill * np.broadcast_to(sigma.astype(np.float32)[:, None, None], bad.shape)[bad]
    return out, int(bad.sum())


def sky_mask(images: np.ndarray, border_px: int, where: str) -> np.ndarray:
    """(N, H, W) bool: the sky pixels the noise anchors measure (`refinegan.noise.sky_mask`,
    where compare measures the noise)."""
    sky, few = noise.sky_mask(images, border_px)
    logger.info("%s: noise anchors on sky pixels (%.0f%% of all; %d stamps on their border frame, "
                "too little sky)", where, 100 * sky.mean(), int(few.sum()))
    return sky


def _check_pair(sim, sim_paths, real, real_path) -> None:
    ps, pr = sim.pixel_scale, real.pixel_scale
    if abs(ps - pr) > PIXEL_SCALE_RTOL * max(ps, pr):
        raise TrainingError(f"pixel scale differs: {sim_paths[0]} has {ps} arcsec/pixel, "
                            f"{real_path} has {pr}; resample the real stamps to the sim scale")
    if sim.images.shape[1:] != real.images.shape[1:]:
        raise TrainingError(f"stamp size differs: {sim_paths[0]} has {sim.images.shape[1:]}, "
                            f"{real_path} has {real.images.shape[1:]}; cut both to one size")


def _psf_match(sim, sim_path, real, real_path, seed: int) -> PsfMatch:
    """The matching kernel from the sims' PSF to the target's (``train.psf_match``)."""
    if real.psf is None:
        raise TrainingError(f"train.psf_match is on but {real_path} has no /psf; give the target's PSF "
                            f"image or set train.psf_match=false")
    if sim.psf is None or np.asarray(sim.psf).ndim != 2:
        got = "no /psf" if sim.psf is None else f"/psf of shape {np.asarray(sim.psf).shape}"
        raise TrainingError(f"train.psf_match needs one sim PSF image (h, w); {sim_path} has {got}")
    target = np.asarray(real.psf, dtype=np.float64)
    if target.ndim == 3:
        target = target.mean(axis=0)  # one PSF per target stamp: match to their mean
    match = build_psf_match(sim.psf, target, sim.images.shape[1:], seed)
    q = match.summary(target)
    logger.info("PSF matching %s -> %s: |K * psf_sim - psf_target| <= %.2g of the target peak, "
                "%.1f%% of Fourier modes clipped to |K| = 1", sim_path, real_path, q["psf_residual"],
                100 * q["clipped_fraction"])
    return match


def _to_device(images: np.ndarray, sigma: np.ndarray, norm: Normalization, device, channels_last):
    z = norm.forward(images.astype(np.float32), sigma.astype(np.float32))[:, None]  # (N, 1, H, W)
    t = torch.from_numpy(np.ascontiguousarray(z)).to(device)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def train(
    config: Mapping,
    sim_paths: Sequence[str | os.PathLike],
    real_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = False,
    stop_after_step: int | None = None,
) -> TrainResult:
    """Train R and D on sim and real stamp files; write refiner.pt, checkpoint.pt, train_log.h5.

    Parameters
    ----------
    config : RunConfig or Mapping
        The run config (a dict is validated once); uses ``seed`` and ``train``.
    sim_paths : sequence of path
        Simulated stamp files (shards are concatenated in order).
    real_path : path
        The real (target) stamp file; same pixel scale and stamp size as the sims.
    out_dir : path
        Output directory.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` when it exists [default: False].
    progress : bool
        Show a tqdm progress bar with the losses [default: False].
    stop_after_step : int, optional
        Stop (after checkpointing) once this global step is reached, as a job killed by a time
        limit would be after its last checkpoint; ``resume`` continues. [default: None]

    Raises
    ------
    TrainingError
        Empty, mismatched or non-finite inputs; a non-finite loss (the step is named and the last
        good checkpoint is kept); a checkpoint that does not fit the config.
    """
    config = RunConfig.of(config)
    s = TrainSettings.from_config(config)
    device = resolve_device(s.device)
    world = init_world(device.type)  # several processes under torchrun (refinegan.refiner.distributed)
    try:
        if world.distributed and device.type == "cuda":
            device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(device)
        return _train(config, s, device, world, sim_paths, real_path, out_dir, resume, progress,
                      stop_after_step)
    finally:
        world.close()


def _train(config, s: TrainSettings, device: torch.device, world: World, sim_paths, real_path,
           out_dir, resume: bool, progress: bool, stop_after_step: int | None) -> TrainResult:
    """`train` for one process of ``world``; only rank 0 writes files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, model_path, log_path = out_dir / "checkpoint.pt", out_dir / "refiner.pt", out_dir / "train_log.h5"
    sim, sim_paths = _load_domain(sim_paths, "sim")
    real, (real_path,) = _load_domain([real_path], "real")
    _check_pair(sim, sim_paths, real, real_path)
    norm = Normalization(s.norm_softening, s.norm_sigma_source, s.norm_border_px)
    sig_sim = norm.sigmas(sim.images, sim.labels, f"{sim_paths[0]}")
    match = _psf_match(sim, sim_paths[0], real, real_path, config.seed) if s.psf_match else None
    if match is not None:
        sim.images = match.apply(sim.images, sig_sim, sim.labels)
    sig_real = norm.sigmas(real.images, real.labels, f"{real_path}")
    real.images, n_filled = fill_masked(real.images, real.mask, sig_real, config.seed)
    if n_filled:
        logger.info("%s: %d masked pixels replaced by noise for training", real_path, n_filled)
    cl = device.type == "cuda" and s.cuda_channels_last
    sim_z = _to_device(sim.images, sig_sim, norm, device, cl)
    real_z = _to_device(real.images, sig_real, norm, device, cl)
    shape = sim.images.shape[1:]
    t = Trainer(s, config.seed, shape, device, world)
    if t.needs_noise_target:
        sky = None
        if s.noise_region == "sky":  # where compare measures the noise: outside the source masks
            t.set_sim_sky(torch.from_numpy(sky_mask(sim.images, s.norm_border_px, f"{sim_paths[0]}")).to(device))
            sky = torch.from_numpy(sky_mask(real.images, s.norm_border_px, f"{real_path}")).to(device)
        t.set_noise_target(real_z, sky=sky)
        logger.info("noise anchors: target border-frame variance %.4f (normalised linear units), "
                    "lag-1 correlations x %.3f, y %.3f; noise skewness %.4f, excess kurtosis %.4f",
                    float(t.noise_target), float(t.acf_target[t.acf_lags.index((0, 1))]),
                    float(t.acf_target[t.acf_lags.index((1, 0))]), float(t.shape_target[0]),
                    float(t.shape_target[1]))
    rows: list[np.ndarray] = []
    if resume and ckpt_path.exists():
        st = load_file(ckpt_path)
        arch_then = st.get("arch_settings", {})
        arch_now = {k: getattr(s, k) for k in ARCH_KEYS}
        if {k: arch_then.get(k) for k in ARCH_KEYS} != {k: (list(v) if isinstance(v, tuple) else v)
                                                          for k, v in arch_now.items()}:
            raise TrainingError(f"{ckpt_path}: checkpoint was made with train settings {arch_then}, "
                                f"config now gives {arch_now}; resume needs the same ones")
        t.load_state_dict(st["trainer"])
        rows = [st["log_rows"].numpy()]
        logger.info("resumed from %s at step %d", ckpt_path, t.step)
    elif resume:
        logger.warning("--resume: no checkpoint at %s, starting from step 0", ckpt_path)

    n_watch = min(WATCH_STAMPS, sim_z.shape[0])
    watch_z = sim_z[:n_watch]
    k = min(s.sample_count, n_watch, real_z.shape[0])
    meta = {"config": config.to_dict(), "device": str(device), "sim_files": [str(p) for p in sim_paths],
            "real_file": str(real_path)}

    def save_samples(step: int) -> None:
        if not world.is_main:
            return
        ref = t.refine_eval(watch_z[:k])
        mon.save_sample_grid(out_dir / "samples" / f"step-{step:06d}.png", watch_z[:k, 0].cpu().numpy(),
                             ref[:, 0].cpu().numpy(), real_z[:k, 0].float().cpu().numpy())

    def save_checkpoint() -> None:
        if not world.is_main:
            return
        done = np.concatenate(rows) if rows else np.zeros((0, len(mon.LOG_COLUMNS)))
        atomic_save({"trainer": t.state_dict(), "log_rows": torch.from_numpy(done),
                     "arch_settings": {k_: (list(v) if isinstance(v, tuple) else v)
                                       for k_, v in ((a, getattr(s, a)) for a in ARCH_KEYS)}},
                    ckpt_path)

    pending: list[torch.Tensor] = []
    window_start = time.perf_counter()

    def flush() -> np.ndarray:
        """Move pending metric rows to the host, check them for NaN, append them to rows."""
        nonlocal window_start
        if not pending:
            return np.zeros((0, len(mon.LOG_COLUMNS)))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = (time.perf_counter() - window_start) / len(pending)
        m = torch.stack(pending).cpu().double().numpy()
        first = t.step - len(pending)
        steps = np.arange(first, t.step)
        bad = ~np.isfinite(m).all(axis=1)
        pending.clear()
        window_start = time.perf_counter()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise TrainingError(
                f"loss became NaN/inf at step {int(steps[i])} ({PHASES[s.phase(int(steps[i]))]} phase: "
                f"{dict(zip(mon.LOG_COLUMNS[2:10], m[i], strict=True))}); stopped, the last good "
                f"checkpoint {ckpt_path} is kept (lower train.lr_r / lr_d or check the inputs)")
        block = np.column_stack([steps, [s.phase(int(q)) for q in steps], m,
                                 np.full(len(steps), s.reg_lambda), np.full(len(steps), dt)])
        rows.append(block)
        return block

    bar = None
    if progress and world.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=s.total_steps, initial=t.step, desc="train", unit="step")
    end = s.total_steps if stop_after_step is None else min(s.total_steps, stop_after_step)
    while t.step < end:
        pending.append(t.one_step(sim_z, real_z))
        step = t.step
        if bar is not None:
            bar.update(1)
        at_ckpt = step % s.checkpoint_every == 0 or step == end
        if step % s.log_every == 0 or at_ckpt:
            block = flush()
            if len(block):
                last = dict(zip(mon.LOG_COLUMNS, block[-1], strict=True))
                loss_r = sum(last[c] for c in ("loss_r_adv", "loss_r_reg", "loss_r_moment", "loss_r_noise"))
                logger.info("step %d | %s | loss_R %.4f (adv %.4f reg %.4f noise %.4f) | loss_D %.4f | acc "
                            "real %.2f fake %.2f | %.1f ms/step", step, PHASES[int(last["phase"])],
                            loss_r, last["loss_r_adv"], last["loss_r_reg"], last["loss_r_noise"],
                            last["loss_d"], last["acc_real"], last["acc_fake"], 1e3 * last["step_time_s"])
                if bar is not None:
                    bar.set_postfix(loss_R=f"{loss_r:.3f}", loss_D=f"{last['loss_d']:.3f}")
        if at_ckpt:
            save_checkpoint()
        if s.sample_every and step % s.sample_every == 0:
            save_samples(step)
    if bar is not None:
        bar.close()
    flush()
    all_rows = np.concatenate(rows) if rows else np.zeros((0, len(mon.LOG_COLUMNS)))
    adv_rows = all_rows[all_rows[:, mon.COL["phase"]] >= 1] if len(all_rows) else all_rows
    tail = adv_rows[-s.log_every:]
    acc_r = float(tail[:, mon.COL["acc_real"]].mean()) if len(tail) else float("nan")
    acc_f = float(tail[:, mon.COL["acc_fake"]].mean()) if len(tail) else float("nan")
    report = mon.watch(watch_z, t.refine_eval(watch_z), acc_r, acc_f, real_z[:n_watch])
    for w in report["warnings"]:
        logger.warning("failure mode: %s", w)
    finished = t.step >= s.total_steps
    if finished:
        save_samples(t.step)
    if finished and world.is_main:
        atomic_save({
            "format": MODEL_FORMAT, "version": MODEL_VERSION, "arch": s.arch(),
            "state_dict": t.model_state(), "normalization": norm.to_dict(),
            "pixel_scale": float(sim.pixel_scale), "stamp_shape": [int(v) for v in shape],
            "sim_sigma_median": float(np.median(sig_sim)), "real_sigma_median": float(np.median(sig_real)),
            "config": config.to_dict(), "step": int(t.step), "versions": package_versions(),
            "sim_files": meta["sim_files"], "real_file": meta["real_file"],
            "psf_match": match.to_dict() if match is not None else None,
        }, model_path)
    if world.is_main:
        mon.write_log(log_path, all_rows, meta | {"world_size": world.size,
                                                  "warnings": report["warnings"],
                                                  "identity_rms": report["identity_rms"],
                                                  "diversity_ratio": report["diversity_ratio"],
                                                  "noise_ratio": report["noise_ratio"],
                                                  "finished": finished})
    kern = t.refiner.kernel()
    if kern is not None:  # what the learned PSF change amounts to (docs/refiner.md)
        k = kern.detach().double().cpu()
        c = torch.arange(k.shape[0], dtype=torch.float64) - (k.shape[0] - 1) / 2.0
        logger.info("learned PSF kernel %dx%d: second moments Ixx %.3f Iyy %.3f Ixy %.3f px^2, "
                    "centre %.3f, min %.3f", k.shape[0], k.shape[1], float((k * c[None] ** 2).sum()),
                    float((k * c[:, None] ** 2).sum()), float((k * c[:, None] * c[None]).sum()),
                    float(k[k.shape[0] // 2, k.shape[1] // 2]), float(k.min()))
    world.barrier()  # the other ranks wait until rank 0 has written its files
    logger.info("training %s at step %d of %d; failure modes: %s", "finished" if finished else "stopped",
                t.step, s.total_steps, report["warnings"] or "none")
    return TrainResult(model_path, ckpt_path, log_path, t.step, report)
