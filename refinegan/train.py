"""Train the SimGAN refiner: ``refinegan train --config C --sim F... --real F --out DIR [--resume]``.

Schedule (all counts from ``config['train']``): ``pretrain_r_steps`` R steps on
self-regularisation only, ``pretrain_d_steps`` D steps, then ``steps`` adversarial steps of
``k_g`` R updates and ``k_d`` D updates. The global step counter runs through all three phases.

Writes into ``out_dir``: ``refiner.pt`` (the model `refinegan.refine` uses), ``checkpoint.pt``
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

from . import train_monitor as mon
from .checkpoint import MODEL_FORMAT, MODEL_VERSION, atomic_save, load_file
from .errors import ConfigError, TrainingError
from .history import ImageHistory
from .io import open_stamps, package_versions, read_many
from .losses import SelfRegularization, d_accuracy, d_loss, g_loss, moment_loss, r1_penalty
from .model import MomentProjector, build_discriminator, build_refiner
from .normalize import Normalization

__all__ = ["TrainSettings", "TrainResult", "train", "resolve_device"]

logger = logging.getLogger(__name__)

TRAIN_STREAM = 4  # SeedSequence([seed, TRAIN_STREAM]): training's own stream of the master seed
PIXEL_SCALE_RTOL = 1e-6
WATCH_STAMPS = 256  # fixed sim stamps used for the failure-mode watch and sample grids
PHASES = ("pretrain_r", "pretrain_d", "adversarial")
ARCH_KEYS = ("refiner_channels", "refiner_blocks", "disc_channels", "disc_global_branch",
             "disc_spectral_norm", "moment_weights_px", "moment_order", "moment_mode", "history_size", "ema_decay")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The ``train:`` section of the config (see config.schema.yaml for meanings and units)."""

    steps: int
    batch_size: int
    device: str
    refiner_channels: int
    refiner_blocks: int
    disc_channels: int
    disc_global_branch: bool
    disc_spectral_norm: bool
    global_weight: float
    adv_loss: str
    r1_gamma: float
    reg_lambda: float
    reg_psi: str
    reg_lowpass_sigma_px: float
    moment_mode: str
    moment_lambda: float
    moment_weights_px: tuple
    moment_order: int
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

    @classmethod
    def from_config(cls, config: Mapping) -> TrainSettings:
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
        return self.pretrain_r_steps + self.pretrain_d_steps + self.steps

    def phase(self, step: int) -> int:
        if step < self.pretrain_r_steps:
            return 0
        return 1 if step < self.pretrain_r_steps + self.pretrain_d_steps else 2

    def arch(self) -> dict:
        weights = list(self.moment_weights_px) if self.moment_mode == "project" else []
        return {"channels": self.refiner_channels, "blocks": self.refiner_blocks,
                "moment_weights_px": weights, "moment_order": self.moment_order}

    def disc_arch(self) -> dict:
        return {"channels": self.disc_channels, "global_branch": self.disc_global_branch,
                "spectral_norm": self.disc_spectral_norm}


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


def _check_pair(sim, sim_paths, real, real_path) -> None:
    ps, pr = sim.pixel_scale, real.pixel_scale
    if abs(ps - pr) > PIXEL_SCALE_RTOL * max(ps, pr):
        raise TrainingError(f"pixel scale differs: {sim_paths[0]} has {ps} arcsec/pixel, "
                            f"{real_path} has {pr}; resample the real stamps to the sim scale")
    if sim.images.shape[1:] != real.images.shape[1:]:
        raise TrainingError(f"stamp size differs: {sim_paths[0]} has {sim.images.shape[1:]}, "
                            f"{real_path} has {real.images.shape[1:]}; cut both to one size")


class _Trainer:
    """All training state; `train` drives it. Kept in one object so a checkpoint captures it."""

    def __init__(self, s: TrainSettings, seed: int, shape, device: torch.device) -> None:
        self.s, self.device = s, device
        ss = np.random.SeedSequence([int(seed), TRAIN_STREAM])
        r_seed, d_seed, batch_seed, hist_seed = (int(x) for x in ss.generate_state(4))
        self.refiner = build_refiner(s.arch(), r_seed).to(device)
        self.disc = build_discriminator(s.disc_arch(), d_seed).to(device)
        self.cuda = device.type == "cuda"
        if self.cuda and s.cuda_channels_last:
            self.refiner.to(memory_format=torch.channels_last)
            self.disc.to(memory_format=torch.channels_last)
        self.r_call, self.d_call = self.refiner, self.disc
        if s.compile:
            self.r_call, self.d_call = torch.compile(self.refiner), torch.compile(self.disc)
        betas = (s.adam_beta1, 0.999)
        self.opt_r = torch.optim.Adam(self.refiner.parameters(), lr=s.lr_r, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=s.lr_d, betas=betas)
        self.ema = [p.detach().clone() for p in self.refiner.parameters()] if s.ema_decay > 0 else None
        self.gen = torch.Generator(device=device).manual_seed(batch_seed)
        self.history = ImageHistory(s.history_size, (1, *shape),
                                    torch.Generator(device=device).manual_seed(hist_seed),
                                    device=device, fraction=s.history_fraction)
        self.selfreg = SelfRegularization(s.reg_psi, s.reg_lowpass_sigma_px)
        self.moments = MomentProjector(s.moment_weights_px, s.moment_order)
        self.step = 0
        self.zero = torch.zeros((), device=device)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.s.cuda_bf16)

    def _batch(self, data: torch.Tensor) -> torch.Tensor:
        idx = torch.randint(data.shape[0], (self.s.batch_size,), generator=self.gen, device=self.device)
        return data[idx]

    def r_step(self, sim: torch.Tensor, adversarial: bool):
        s = self.s
        x = self._batch(sim)
        self.disc.requires_grad_(False)
        with self._autocast():
            y = self.r_call(x)
            reg = s.reg_lambda * self.selfreg(y, x) if s.reg_lambda > 0 else self.zero
            mom = (s.moment_lambda * moment_loss(y, x, self.moments)
                   if s.moment_mode == "loss" else self.zero)
            adv = g_loss(self.d_call(y), s.adv_loss, s.global_weight) if adversarial else self.zero
            loss = adv + reg + mom
        self.opt_r.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_r.step()
        self.disc.requires_grad_(True)
        if self.ema is not None:
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.refiner.parameters()],
                                 1.0 - s.ema_decay)
        return adv.detach(), reg.detach(), mom.detach()

    def d_step(self, sim: torch.Tensor, real: torch.Tensor):
        s = self.s
        x, r = self._batch(sim), self._batch(real)
        with torch.no_grad(), self._autocast():
            y = self.r_call(x)
        fake = self.history.mix(y)
        with self._autocast():
            out_r, out_f = self.d_call(r), self.d_call(fake)
            loss = d_loss(out_r, out_f, s.adv_loss, s.global_weight)
            r1 = r1_penalty(self.d_call, r, s.global_weight) if s.r1_gamma > 0 else self.zero
            total = loss + 0.5 * s.r1_gamma * r1
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        return (loss.detach(), d_accuracy(out_r, True, s.adv_loss),
                d_accuracy(out_f, False, s.adv_loss), r1.detach())

    def one_step(self, sim, real) -> torch.Tensor:
        """One global step; returns its metrics row (device tensor, no host sync)."""
        s, z = self.s, self.zero
        phase = s.phase(self.step)
        adv = reg = mom = ld = acc_r = acc_f = r1 = z
        if phase == 0:
            adv, reg, mom = self.r_step(sim, adversarial=False)
        elif phase == 1:
            ld, acc_r, acc_f, r1 = self.d_step(sim, real)
        else:
            for _ in range(s.k_g):
                adv, reg, mom = self.r_step(sim, adversarial=True)
            for _ in range(s.k_d):
                ld, acc_r, acc_f, r1 = self.d_step(sim, real)
        self.step += 1
        return torch.stack([adv, reg, mom, ld, acc_r, acc_f, r1]).float()

    def model_state(self) -> dict:
        state = self.refiner.state_dict()
        if self.ema is not None:
            names = [n for n, _ in self.refiner.named_parameters()]
            state = dict(state) | dict(zip(names, self.ema, strict=True))
        return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}

    def state_dict(self) -> dict:
        return {"step": self.step, "refiner": self.refiner.state_dict(), "disc": self.disc.state_dict(),
                "opt_r": self.opt_r.state_dict(), "opt_d": self.opt_d.state_dict(),
                "ema": None if self.ema is None else [t.cpu() for t in self.ema],
                "gen": self.gen.get_state(), "history": self.history.state_dict()}

    def load_state_dict(self, st: dict) -> None:
        self.step = int(st["step"])
        self.refiner.load_state_dict(st["refiner"])
        self.disc.load_state_dict(st["disc"])
        self.opt_r.load_state_dict(st["opt_r"])
        self.opt_d.load_state_dict(st["opt_d"])
        if self.ema is not None:
            for t, v in zip(self.ema, st["ema"], strict=True):
                t.copy_(v)
        self.gen.set_state(st["gen"])
        self.history.load_state_dict(st["history"])

    @torch.no_grad()
    def refine_eval(self, z: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.r_call(z).float()


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
    config : Mapping
        A validated config (`refinegan.config.load_config`); uses ``seed`` and ``train``.
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
    s = TrainSettings.from_config(config)
    device = resolve_device(s.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, model_path, log_path = out_dir / "checkpoint.pt", out_dir / "refiner.pt", out_dir / "train_log.h5"
    sim, sim_paths = _load_domain(sim_paths, "sim")
    real, (real_path,) = _load_domain([real_path], "real")
    _check_pair(sim, sim_paths, real, real_path)
    norm = Normalization(s.norm_softening, s.norm_sigma_source, s.norm_border_px)
    sig_sim = norm.sigmas(sim.images, sim.labels, f"{sim_paths[0]}")
    sig_real = norm.sigmas(real.images, real.labels, f"{real_path}")
    cl = device.type == "cuda" and s.cuda_channels_last
    sim_z = _to_device(sim.images, sig_sim, norm, device, cl)
    real_z = _to_device(real.images, sig_real, norm, device, cl)
    shape = sim.images.shape[1:]
    t = _Trainer(s, int(config["seed"]), shape, device)
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
    meta = {"config": dict(config), "device": str(device), "sim_files": [str(p) for p in sim_paths],
            "real_file": str(real_path)}

    def save_samples(step: int) -> None:
        ref = t.refine_eval(watch_z[:k])
        mon.save_sample_grid(out_dir / "samples" / f"step-{step:06d}.png", watch_z[:k, 0].cpu().numpy(),
                             ref[:, 0].cpu().numpy(), real_z[:k, 0].float().cpu().numpy())

    def save_checkpoint() -> None:
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
                f"{dict(zip(mon.LOG_COLUMNS[2:9], m[i], strict=True))}); stopped, the last good "
                f"checkpoint {ckpt_path} is kept (lower train.lr_r / lr_d or check the inputs)")
        block = np.column_stack([steps, [s.phase(int(q)) for q in steps], m,
                                 np.full(len(steps), s.reg_lambda), np.full(len(steps), dt)])
        rows.append(block)
        return block

    bar = None
    if progress:
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
                last = block[-1]
                logger.info("step %d | %s | loss_R %.4f (adv %.4f reg %.4f) | loss_D %.4f | acc real "
                            "%.2f fake %.2f | %.1f ms/step", step, PHASES[int(last[1])],
                            last[2] + last[3] + last[4], last[2], last[3], last[5], last[6], last[7],
                            1e3 * last[10])
                if bar is not None:
                    bar.set_postfix(loss_R=f"{last[2] + last[3]:.3f}", loss_D=f"{last[5]:.3f}")
        if at_ckpt:
            save_checkpoint()
        if s.sample_every and step % s.sample_every == 0:
            save_samples(step)
    if bar is not None:
        bar.close()
    flush()
    all_rows = np.concatenate(rows) if rows else np.zeros((0, len(mon.LOG_COLUMNS)))
    adv_rows = all_rows[all_rows[:, 1] >= 1] if len(all_rows) else all_rows
    tail = adv_rows[-s.log_every:]
    acc_r = float(tail[:, 6].mean()) if len(tail) else float("nan")
    acc_f = float(tail[:, 7].mean()) if len(tail) else float("nan")
    report = mon.watch(watch_z, t.refine_eval(watch_z), acc_r, acc_f)
    for w in report["warnings"]:
        logger.warning("failure mode: %s", w)
    finished = t.step >= s.total_steps
    if finished:
        save_samples(t.step)
        atomic_save({
            "format": MODEL_FORMAT, "version": MODEL_VERSION, "arch": s.arch(),
            "state_dict": t.model_state(), "normalization": norm.to_dict(),
            "pixel_scale": float(sim.pixel_scale), "stamp_shape": [int(v) for v in shape],
            "sim_sigma_median": float(np.median(sig_sim)), "real_sigma_median": float(np.median(sig_real)),
            "config": dict(config), "step": int(t.step), "versions": package_versions(),
            "sim_files": meta["sim_files"], "real_file": meta["real_file"],
        }, model_path)
    mon.write_log(log_path, all_rows, meta | {"warnings": report["warnings"],
                                              "identity_rms": report["identity_rms"],
                                              "diversity_ratio": report["diversity_ratio"],
                                              "finished": finished})
    logger.info("training %s at step %d of %d; failure modes: %s", "finished" if finished else "stopped",
                t.step, s.total_steps, report["warnings"] or "none")
    return TrainResult(model_path, ckpt_path, log_path, t.step, report)
