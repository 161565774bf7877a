"""Train the SimGAN refiner: ``refinegan train --config C --sim F... --real F --out DIR [--resume]``.

Schedule (all counts from ``config['train']``): ``pretrain_r_steps`` R steps on
self-regularisation only, ``pretrain_d_steps`` D steps, then ``steps`` adversarial steps of
``k_g`` R updates and ``k_d`` D updates. The global step counter runs through all three phases.

Writes into ``out_dir``: ``refiner.pt`` (the model `refinegan.refiner.refine` uses), ``checkpoint.pt``
(full state, every ``checkpoint_every`` steps, atomically), ``train_log.h5`` and
``samples/step-<k>.png``. On CUDA the data stay on the device, bf16 autocast and channels_last
are on, and the loop does not synchronise with the host except at log / checkpoint steps.

`_train` reads top to bottom: data (`refinegan.refiner.data.prepare_data`), the `Trainer` and
its noise targets, resume, the loop (step, log, checkpoint, samples), then the outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..errors import ConfigError, TrainingError
from ..io import package_versions
from ..seeds import stream_sequence
from . import monitor as mon
from .data import TrainData, prepare_data
from .distributed import World, init_world
from .harm_check import CHECK_STAMPS, HARM_AUC, harm_check
from .refiner_file import RefinerFile, TrainCheckpoint
from .settings import TrainSettings
from .trainer import Trainer

__all__ = ["TrainResult", "train", "resolve_device", "resume_from", "save_checkpoint", "save_samples",
           "refiner_file"]

logger = logging.getLogger(__name__)

WATCH_STAMPS = 256  # fixed sim stamps used for the failure-mode watch and sample grids


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


def train(
    config: Mapping,
    sim_paths: Sequence[str | os.PathLike],
    real_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    resume: bool | str = False,
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
    resume : bool or 'if_matches'
        True: continue from ``out_dir/checkpoint.pt`` when it exists, refusing one made with other
        settings; 'if_matches': continue only from a checkpoint of this same run, else train
        afresh (what the workflow does, so a job killed by a scheduler resumes) [default: False].
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


def _train(config: RunConfig, s: TrainSettings, device: torch.device, world: World, sim_paths,
           real_path, out_dir, resume_run: bool | str, progress: bool,
           stop_after_step: int | None) -> TrainResult:
    """`train` for one process of ``world``; only rank 0 writes files.

    Data, trainer, resume; then per step: one step, log (flush at log and checkpoint steps),
    checkpoint, samples; then the watch, ``refiner.pt`` (when finished) and ``train_log.h5``.
    """
    out_dir = Path(out_dir)
    ckpt_path, model_path, log_path = out_dir / "checkpoint.pt", out_dir / "refiner.pt", out_dir / "train_log.h5"
    data = prepare_data(s, config.seed, sim_paths, real_path, device)
    t = Trainer(s, config.seed, data.stamp_shape, device, world)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the inputs are good: no empty folder
    set_noise_targets(t, data)
    done = None
    if resume_run == "if_matches" and ckpt_path.exists():
        try:
            done = resume_from(t, s, ckpt_path, config.seed, data.stamp_shape)
        except TrainingError as err:  # another run's checkpoint, or an unreadable one
            logger.warning("not resuming (%s); training afresh", err)
    elif resume_run is True and ckpt_path.exists():
        done = resume_from(t, s, ckpt_path, config.seed, data.stamp_shape)
    elif resume_run is True:
        logger.warning("--resume: no checkpoint at %s, starting from step 0", ckpt_path)
    if done is None and world.is_main:
        clear_previous_run(out_dir)
    n_watch = min(WATCH_STAMPS, data.sim_z.shape[0])
    watch_z, watch_real = data.sim_z[:n_watch], data.real_z[:n_watch]
    watch_sky = None if data.sim_sky is None else data.sim_sky[:n_watch]
    n_samples = min(s.sample_count, n_watch, data.real_z.shape[0])
    meta = {"config": config.to_dict(), "device": str(device),
            "sim_files": [str(p) for p in data.sim_paths], "real_file": str(data.real_path)}
    log = mon.TrainLog(s, device, ckpt_path, done)
    samples = (watch_z[:n_samples], data.real_z[:n_samples])
    end = s.total_steps if stop_after_step is None else min(s.total_steps, stop_after_step)
    good = _run_steps(t, data, log, end, out_dir, samples, world, progress, config.seed,
                      (watch_z, watch_sky))
    log.flush(t.step)
    report = mon.watch(watch_z, t.refine_eval(watch_z), *log.d_accuracy(), watch_real,
                       watch_sky, matched_noise=s.noise_match)
    for w in report["warnings"]:
        logger.warning("failure mode: %s", w)
    finished = t.step >= s.total_steps
    kept = None  # (step, weights) saved instead of the last ones: the noise-drift guard
    if (finished and s.noise_match and good is not None and good[0] < t.step
            and mon.drift_warning(report["noise_drift"]) is not None):
        kept = good
        logger.warning("R's last weights changed the matched noise (above); refiner.pt holds the "
                       "weights of step %d, the last checkpoint within the bar", kept[0])
    harm = {"skipped": "train.harm_check is false" if not s.harm_check else "training not finished"}
    if finished and world.is_main and s.harm_check:
        kept, harm = _harm_check(t, data, kept, config.seed)
    if finished and world.is_main:
        save_samples(out_dir, t.step, t, *samples)
        refiner_file(config, s, t, data, meta, kept).write(model_path)
    if world.is_main:
        mon.write_log(log_path, log.done(), meta | {"world_size": world.size,
                                                    "warnings": report["warnings"],
                                                    "identity_rms": report["identity_rms"],
                                                    "diversity_ratio": report["diversity_ratio"],
                                                    "noise_ratio": report["noise_ratio"],
                                                    "noise_drift": report["noise_drift"],
                                                    "d_stamp_auc": log.d_auc(),
                                                    "harm_check": harm,
                                                    "model_step": t.step if kept is None else kept[0],
                                                    "finished": finished})
    _log_learned_kernel(t)
    world.barrier()  # the other ranks wait until rank 0 has written its files
    logger.info("training %s at step %d of %d (%d pretraining + %d adversarial); failure modes: %s",
                "finished" if finished else "stopped", t.step, s.total_steps,
                s.pretrain_r_steps + s.pretrain_d_steps, s.steps, report["warnings"] or "none")
    return TrainResult(model_path, ckpt_path, log_path, t.step, report)


def _harm_check(t: Trainer, data: TrainData, kept: tuple[int, dict] | None, seed: int
                ) -> tuple[tuple[int, dict] | None, dict]:
    """`refinegan.refiner.harm_check` on the weights about to be saved (``kept`` or the last);
    returns what to save instead (step 0's, the identity, when R harmed) and the check's result."""
    n = min(CHECK_STAMPS, data.sim_z.shape[0])
    x = data.sim_z[:n]
    check_seed = int(stream_sequence(seed, "harm_check").generate_state(1)[0])
    res = harm_check(x, t.refine_eval(x, None if kept is None else kept[1]), data.real_z[:CHECK_STAMPS],
                     check_seed)
    if "skipped" in res:
        logger.info("harm check skipped: %s", res["skipped"])
        return kept, res
    logger.info("harm check: pixel CNN AUC vs the target %.3f for R's input, %.3f for its output "
                "(paired difference %+.3f +- %.3f, %d seeds, %d stamps a side)", res["auc_input"],
                res["auc_refined"], res["diff"], res["err"], res["seeds"], res["n"])
    if res["harmed"]:
        logger.warning("R's output is easier to tell from the target than its input (AUC %+.3f +- "
                       "%.3f, past %.2f): refiner.pt holds R's initial weights, the identity, so "
                       "refined = R's input (the matched sims); the watch above describes the "
                       "weights not saved", res["diff"], res["err"], HARM_AUC)
        return (0, t.initial_model_state()), res
    return kept, res


def clear_previous_run(out_dir: Path) -> list[Path]:
    """Remove an earlier run's outputs from ``out_dir`` before a fresh run starts, so the
    directory never holds a model and a log (or samples) from different runs; returns them."""
    old = [out_dir / name for name in ("refiner.pt", "checkpoint.pt", "train_log.h5")]
    old = [p for p in old if p.exists()] + sorted((out_dir / "samples").glob("step-*.png"))
    for p in old:
        p.unlink()
    if old:
        logger.info("%s: a fresh run; removed the previous run's %s", out_dir,
                    ", ".join(sorted({p.name if p.parent == out_dir else "samples/" for p in old})))
    return old


def _run_steps(t: Trainer, data: TrainData, log: mon.TrainLog, end: int, out_dir: Path,
               samples: tuple[torch.Tensor, torch.Tensor], world: World, progress: bool,
               seed: int, watch: tuple[torch.Tensor, torch.Tensor | None] | None = None
               ) -> tuple[int, dict] | None:
    """Step ``t`` up to global step ``end``: each step logged, flushed at log and checkpoint
    steps, checkpointed and sampled (rank 0) on the schedules of ``t.s``; at each checkpoint
    R's own change of the noise on the ``watch`` stamps (and their sky masks) is logged
    (`refinegan.refiner.monitor.noise_drift`), so a drift shows when it began.

    Returns (step, R's weights) of the last checkpoint whose drift was within the watch's bar
    (`refinegan.refiner.monitor.drift_warning`) when R's input has the target's noise
    (``train.noise_match``), else None; `_train` saves them instead of the last weights when
    those drifted. Kept in memory only: after a resume, only checkpoints since count."""
    s = t.s
    good = None
    bar = _progress_bar(s, t.step) if progress and world.is_main else None
    while t.step < end:
        log.append(t.one_step(data.sim_z, data.real_z))
        step = t.step
        if bar is not None:
            bar.update(1)
        at_ckpt = step % s.checkpoint_every == 0 or step == end
        if step % s.log_every == 0 or at_ckpt:
            log.report(step, log.flush(step), bar)
        if at_ckpt and world.is_main:
            save_checkpoint(log.checkpoint_path, t, s, log, seed, data.stamp_shape)
            if watch is not None:
                d = mon.noise_drift(watch[0], t.refine_eval(watch[0]), watch[1])
                logger.info("step %d: R's own change of the noise on the watch stamps: sigma %+.2f %%, "
                            "lag-1 x %+.4f, y %+.4f", step, 100 * d["sigma"], d["lag1_x"], d["lag1_y"])
                if s.noise_match and mon.drift_warning(d) is None:
                    good = (step, {k: v.clone() for k, v in t.model_state().items()})
        if s.sample_every and step % s.sample_every == 0 and world.is_main:
            save_samples(out_dir, step, t, *samples)
    if bar is not None:
        bar.close()
    return good


def set_noise_targets(t: Trainer, data: TrainData) -> None:
    """Give ``t`` the target's noise statistics (and the sims' sky pixels) its anchors need.

    Nothing happens when no noise anchor is on.
    """
    if not t.needs_noise_target:
        return
    if data.sim_sky is not None:
        t.set_sim_sky(data.sim_sky)
    if t.s.noise_anchor_reference == "input":  # hold R's output to its own matched input
        if not t.s.noise_match:
            raise TrainingError("train.noise_anchor_reference: input holds the refined noise to R's "
                                "input, which has the target's noise only with train.noise_match: "
                                "true; set it, or noise_anchor_reference: target")
        t.set_noise_target(data.sim_z, sky=data.sim_sky, shape_from=data.real_z)
    else:
        t.set_noise_target(data.real_z, sky=data.real_sky)
    logger.info("noise anchors (%s): border-frame variance %.4f (normalised linear units), "
                "lag-1 correlations x %.3f, y %.3f; target noise skewness %.4f, excess kurtosis %.4f",
                t.s.noise_anchor_reference, float(t.noise_target), float(t.acf_target[t.acf_lags.index((0, 1))]),
                float(t.acf_target[t.acf_lags.index((1, 0))]), float(t.shape_target[0]),
                float(t.shape_target[1]))


def resume_from(t: Trainer, s: TrainSettings, path: Path, seed: int, stamp_shape) -> np.ndarray:
    """Load ``path`` (``checkpoint.pt``) into ``t``; returns the log rows done.

    Raises
    ------
    TrainingError
        If the checkpoint is unreadable, was made with other settings (`TrainSettings.resume_settings`,
        `TrainSettings.run_settings`: each key named with both values), or is past the end the
        config now gives.
    """
    ckpt = TrainCheckpoint.read(path)
    now = s.resume_settings()
    if {k: ckpt.arch_settings.get(k) for k in now} != now:
        raise TrainingError(f"{path}: checkpoint was made with train settings {ckpt.arch_settings}, "
                            f"config now gives {now}; resume needs the same ones")
    run_now, run_then = s.run_settings(seed, stamp_shape), ckpt.arch_settings.get("run", {})
    changed = [f"{k} {run_then[k]!r} -> {v!r}" for k, v in run_now.items()
               if k in run_then and run_then[k] != v]
    if changed:
        raise TrainingError(
            f"{path}: resuming would change what the checkpoint's run computes: "
            f"{'; '.join(changed)} (checkpoint -> config now). Resume with the checkpoint's values "
            f"(only train.steps, the log / checkpoint / sample intervals and the device may change) "
            f"or train afresh without --resume")
    unchecked = sorted(set(run_now) - set(run_then))
    if unchecked:
        logger.warning("%s predates the full resume check: %s not recorded, not checked", path,
                       ", ".join(unchecked))
    step = int(ckpt.trainer["step"])
    if step > s.total_steps:
        raise TrainingError(f"{path}: the checkpoint is at step {step}, past the {s.total_steps} "
                            f"steps the config gives (train.steps {s.steps} + pretraining "
                            f"{s.pretrain_r_steps + s.pretrain_d_steps}); a resume may only add steps")
    rows = ckpt.log_rows.numpy()
    if rows.ndim != 2 or rows.shape[1] != len(mon.LOG_COLUMNS):
        raise TrainingError(f"{path}: the checkpoint's log rows have {rows.shape[-1]} columns, this "
                            f"refinegan logs {len(mon.LOG_COLUMNS)} ({', '.join(mon.LOG_COLUMNS)}); "
                            f"it was made by another version: train afresh without --resume")
    t.load_state_dict(ckpt.trainer)
    logger.info("resumed from %s at step %d", path, t.step)
    return rows


def save_checkpoint(path: Path, t: Trainer, s: TrainSettings, log: mon.TrainLog, seed: int,
                    stamp_shape) -> Path:
    """Write ``checkpoint.pt`` atomically: the trainer state, the rows flushed, the settings
    (`TrainSettings.resume_settings`, and `TrainSettings.run_settings` under ``run``)."""
    settings = s.resume_settings() | {"run": s.run_settings(seed, stamp_shape)}
    return TrainCheckpoint(trainer=t.state_dict(), log_rows=torch.from_numpy(log.done()),
                           arch_settings=settings).write(path)


def save_samples(out_dir: Path, step: int, t: Trainer, sim_z: torch.Tensor,
                 real_z: torch.Tensor) -> Path:
    """``samples/step-<step>.png``: rows sim ``sim_z`` | refined | real ``real_z`` (k, 1, H, W)."""
    ref = t.refine_eval(sim_z)
    return mon.save_sample_grid(out_dir / "samples" / f"step-{step:06d}.png", sim_z[:, 0].cpu().numpy(),
                                ref[:, 0].cpu().numpy(), real_z[:, 0].float().cpu().numpy())


def refiner_file(config: RunConfig, s: TrainSettings, t: Trainer, data: TrainData,
                 meta: Mapping, kept: tuple[int, dict] | None = None) -> RefinerFile:
    """The `RefinerFile` of the trained R (EMA weights when enabled), or of ``kept`` = (step,
    weights) of an earlier checkpoint (the noise-drift guard, `_run_steps`)."""
    step, state = (int(t.step), t.model_state()) if kept is None else kept
    return RefinerFile(
        arch=s.arch(), state_dict=state, normalization=data.norm.to_dict(),
        pixel_scale=data.pixel_scale, stamp_shape=[int(v) for v in data.stamp_shape],
        sim_sigma_median=data.sim_sigma_median, real_sigma_median=data.real_sigma_median,
        config=config.to_dict(), step=int(step), versions=package_versions(),
        sim_files=meta["sim_files"], real_file=meta["real_file"],
        psf_match=data.match.to_dict() if data.match is not None else None,
        noise_match=data.noise_match.to_dict() if data.noise_match is not None else None)


def _progress_bar(s: TrainSettings, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=s.total_steps, initial=initial, desc="train", unit="step")


def _log_learned_kernel(t: Trainer) -> None:
    """Log what the learned PSF kernel amounts to (second moments, centre; docs/refiner.md)."""
    kern = t.refiner.kernel()
    if kern is None:
        return
    k = kern.detach().double().cpu()
    c = torch.arange(k.shape[0], dtype=torch.float64) - (k.shape[0] - 1) / 2.0
    logger.info("learned PSF kernel %dx%d: second moments Ixx %.3f Iyy %.3f Ixy %.3f px^2, "
                "centre %.3f, min %.3f", k.shape[0], k.shape[1], float((k * c[None] ** 2).sum()),
                float((k * c[:, None] ** 2).sum()), float((k * c[:, None] * c[None]).sum()),
                float(k[k.shape[0] // 2, k.shape[1] // 2]), float(k.min()))
