"""The training state of the SimGAN refiner: networks, optimizers, noise anchors, one step.

`Trainer` (built from `refinegan.refiner.settings.TrainSettings`) holds R, D,
their optimizers, the EMA of R, the batch and history generators and the history buffer, and
runs one global step (`Trainer.one_step`) without host synchronisation; its `state_dict` is what
``checkpoint.pt`` stores. R's noise anchors are a list of `NoiseAnchor` terms (`noise_anchors`).
The loop, I/O and logging live in `refinegan.refiner.train`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..noise import noise_moments, source_mask
from ..seeds import stream_sequence
from .distributed import SINGLE, World
from .history import ImageHistory
from .losses import (
    SelfRegularization,
    acf_lags,
    border_acf,
    border_variance,
    d_accuracy,
    d_loss,
    d_stamp_auc,
    g_loss,
    moment_loss,
    noise_acf_loss,
    noise_acf_spread_loss,
    noise_level_loss,
    noise_shape_loss,
    r1_penalty,
)
from .model import build_discriminator, build_refiner
from .moments import MomentProjector
from .settings import TrainSettings

__all__ = ["Trainer", "NoiseAnchor", "noise_anchors"]

EVAL_LATENT_SEED = 0  # latent codes of refine_eval (watch, sample grids)


@dataclasses.dataclass
class NoiseAnchor:
    """One noise-anchor term of R's loss: ``weight * loss(refined, target, region)``.

    Attributes
    ----------
    name : str
        ``level``, ``acf``, ``spread`` or ``shape`` (`refinegan.refiner.settings.NOISE_ANCHORS`).
    weight : float
        The term's weight (``train.noise_lambda`` etc.), > 0.
    loss : callable
        ``loss(refined (B, 1, H, W), target, region) -> scalar``
        (`refinegan.refiner.losses`).
    target : torch.Tensor or None
        The target's statistic the loss compares with; set by `Trainer.set_noise_target`.
    """

    name: str
    weight: float
    loss: Callable[..., torch.Tensor]
    target: torch.Tensor | None = None


def noise_anchors(s: TrainSettings, lags) -> list[NoiseAnchor]:
    """The noise anchors switched on (weight > 0), in the order R's loss sums them.

    Parameters
    ----------
    s : TrainSettings
        Gives the weights (`TrainSettings.noise_weights`).
    lags : tuple of (int, int)
        The autocorrelation lags (`refinegan.refiner.losses.acf_lags`) of the ``acf`` and
        ``spread`` anchors.
    """
    losses = {"level": noise_level_loss, "acf": functools.partial(noise_acf_loss, lags=lags),
              "spread": functools.partial(noise_acf_spread_loss, lags=lags),
              "shape": noise_shape_loss}
    return [NoiseAnchor(name, w, losses[name]) for name, w in s.noise_weights().items() if w > 0]


class Trainer:
    """All training state; `train` drives it. Kept in one object so a checkpoint captures it."""

    def __init__(self, s: TrainSettings, seed: int, shape, device: torch.device,
                 world: World = SINGLE) -> None:
        self.s, self.device, self.world = s, device, world
        if world.distributed and s.batch_size % world.size:
            raise ConfigError(f"train.batch_size={s.batch_size} must be divisible by the number of "
                              f"processes ({world.size}): each takes an equal slice of the batch")
        if world.distributed and s.r1_gamma > 0:
            raise ConfigError("train.r1_gamma > 0 is not supported with several processes")
        if s.d_augment and shape[-1] != shape[-2]:
            raise ConfigError(f"train.d_augment needs square stamps (the square's symmetries), got "
                              f"{shape[-2]} x {shape[-1]} pixels; set train.d_augment: false")
        ss = stream_sequence(seed, "train")
        r_seed, d_seed, batch_seed, hist_seed = (int(x) for x in ss.generate_state(4))
        self.r_seed = r_seed
        self.refiner = build_refiner(s.arch(), r_seed).to(device)
        self.disc = build_discriminator(s.disc_arch(), d_seed).to(device)
        self.cuda = device.type == "cuda"
        self.amp = self.cuda and s.cuda_bf16  # bf16 autocast (tests switch it on for CPU too)
        if self.cuda and s.cuda_channels_last:
            self.refiner.to(memory_format=torch.channels_last)
            self.disc.to(memory_format=torch.channels_last)
        self.r_call, self.d_call = self.refiner, self.disc
        if s.compile:
            self.r_call, self.d_call = torch.compile(self.refiner), torch.compile(self.disc)
        # R's and D's own updates go through DDP when there are several processes (gradients
        # averaged over ranks); D inside R's loss and R inside D's batch are plain calls.
        self.r_train, self.d_train = self.r_call, self.d_call
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            self.r_train = DDP(self.r_call, device_ids=ids)
            self.d_train = DDP(self.d_call, device_ids=ids)
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
        self.noise_target = None
        self.acf_lags = acf_lags(s.noise_acf_max_lag)
        self.acf_target = None
        self.shape_target = None
        self.acf_sorted_target = None
        self.anchors = noise_anchors(s, self.acf_lags)
        self.sim_sky = None  # (N, H, W) bool: the sims' sky pixels (noise_region: sky)

    @property
    def needs_noise_target(self) -> bool:
        """Whether a noise anchor is on, so `set_noise_target` must be called before a step."""
        return bool(self.anchors)

    def set_sim_sky(self, sky: torch.Tensor) -> None:
        """The sims' sky pixels (N, H, W) bool, where the noise anchors measure refined stamps
        with ``noise_region: sky`` (indexed like the sim stamps given to `one_step`)."""
        self.sim_sky = sky

    def _region(self, idx: torch.Tensor):
        """Where a batch's noise statistics are measured: the border frame, or the sky mask."""
        if self.s.noise_region == "frame":
            return self.s.norm_border_px
        if self.sim_sky is None:
            raise RuntimeError("train.noise_region: sky needs Trainer.set_sim_sky(mask) first")
        return self.sim_sky[idx]

    @torch.no_grad()
    def set_noise_target(self, real: torch.Tensor, chunk: int = 1024, sky: torch.Tensor | None = None,
                         shape_from: torch.Tensor | None = None) -> None:
        """The target's median variance (linear normalised units), autocorrelations at
        `acf_lags` (median and sorted) and noise shape, for the noise anchors; over the border
        frame, or over the target's sky pixels ``sky`` (N, H, W) with ``noise_region: sky``.
        ``shape_from``: the stamps the noise shape is measured on instead of ``real`` (with
        ``noise_anchor_reference: input``, ``real`` is R's input and the shape the target's)."""
        if self.s.noise_region == "sky" and sky is None:
            raise RuntimeError("train.noise_region: sky needs the target's sky mask in set_noise_target")
        spans = [slice(i, i + chunk) for i in range(0, real.shape[0], chunk)]
        blocks = [(real[sl], self.s.norm_border_px if self.s.noise_region == "frame" else sky[sl]) for sl in spans]
        self.noise_target = torch.cat([border_variance(x, b) for x, b in blocks]).median()
        acf = torch.cat([border_acf(x, b, self.acf_lags) for x, b in blocks])
        self.acf_target = acf.median(dim=0).values
        self.acf_sorted_target = acf.sort(dim=0).values  # (N, L): the per-stamp distribution
        self.shape_target = self.noise_shape_target(real if shape_from is None else shape_from, chunk)
        targets = {"level": self.noise_target, "acf": self.acf_target,
                   "spread": self.acf_sorted_target, "shape": self.shape_target}
        for anchor in self.anchors:
            anchor.target = targets[anchor.name]

    @staticmethod
    def noise_shape_target(real: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Mean skewness and excess kurtosis (2,) of the target's noise over source-masked pixels
        (`refinegan.noise`, as compare measures ``noise_skew`` / ``noise_kurt``)."""
        out = []
        for i in range(0, real.shape[0], chunk):
            lin = torch.sinh(real[i:i + chunk, 0].float()).cpu().numpy().astype(np.float64)
            m = noise_moments(lin, source_mask(lin))
            out.append(np.stack([m["noise_skew"], m["noise_kurt"]], axis=1))
        v = np.concatenate(out)
        v = v[np.isfinite(v).all(axis=1)]
        return torch.as_tensor(v.mean(axis=0), dtype=torch.float32, device=real.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _batch_idx(self, n: int) -> torch.Tensor:
        """This process's slice of a global batch of indices into n stamps (every rank draws the
        same ones)."""
        idx = torch.randint(n, (self.s.batch_size,), generator=self.gen, device=self.device)
        return idx[self.world.local_slice(self.s.batch_size)]

    def _batch(self, data: torch.Tensor) -> torch.Tensor:
        return data[self._batch_idx(data.shape[0])]

    def _augment(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` (B, 1, H, W) with each stamp under a random one of the square's 8 symmetries
        (``train.d_augment``; a no-op otherwise), drawn from the batch generator for the global
        batch, so a checkpoint resumes the same draws and every rank agrees. D then sees real and
        refined stamps in every orientation alike: it cannot learn one stamp's orientation, and a
        difference it finds must hold in all of them."""
        if not self.s.d_augment:
            return z
        n = z.shape[0] * self.world.size
        k = torch.randint(8, (n,), generator=self.gen, device=self.device)[self.world.local_slice(n)]
        k = k.view(-1, 1, 1, 1)
        out = torch.where(k >= 4, z.flip(-1), z)
        turned = out
        for r in (1, 2, 3):
            turned = torch.where(k % 4 == r, torch.rot90(out, r, dims=(-2, -1)), turned)
        return turned

    def _cond(self, x: torch.Tensor) -> torch.Tensor:
        """R's input for sim stamps ``x``: with ``latent_dim`` > 0, fresh latent codes appended
        (drawn for the global batch, so every rank and a single process agree)."""
        d = self.s.latent_dim
        if not d:
            return x
        u = torch.randn((self.s.batch_size, d), generator=self.gen, device=self.device)
        z = self.refiner.with_latent(x, u[self.world.local_slice(self.s.batch_size)])
        return z.contiguous(memory_format=torch.channels_last) if self.cuda and self.s.cuda_channels_last else z

    def r_step(self, sim: torch.Tensor, adversarial: bool):
        """One R update on a batch of ``sim`` (N, 1, H, W); returns the detached loss terms
        (adversarial, self-regularisation, moment, noise anchors), each a scalar."""
        s = self.s
        idx = self._batch_idx(sim.shape[0])
        x = sim[idx]
        region = self._region(idx) if self.anchors else None  # no anchor: no noise measured
        self.disc.requires_grad_(False)
        with self._autocast():
            y = self.r_train(self._cond(x))
            # R's own change is regularised relative to K * sim (x itself without a PSF kernel):
            # the kernel's change of PSF is known and recorded, so it keeps the labels true
            base = self.refiner.base(x)
            reg = s.reg_lambda * self.selfreg(y, base) if s.reg_lambda > 0 else self.zero
            mom = (s.moment_lambda * moment_loss(y, base, self.moments)
                   if s.moment_mode == "loss" else self.zero)
            adv = g_loss(self.d_call(self._augment(y)), s.adv_loss, s.global_weight) if adversarial else self.zero
            if adversarial and s.adv_weight != 1.0:  # at 1, SimGAN's loss, bit for bit
                adv = s.adv_weight * adv
            noise = self.noise_loss(y, region)
            loss = adv + reg + mom + noise
        self.opt_r.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_r.step()
        self.disc.requires_grad_(True)
        if self.ema is not None:
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.refiner.parameters()],
                                 1.0 - s.ema_decay)
        return adv.detach(), reg.detach(), mom.detach(), noise.detach()

    def noise_loss(self, y: torch.Tensor, region) -> torch.Tensor:
        """The noise anchors' terms summed in order (level, acf, spread, shape), zero if none.

        The level term, when on, starts the sum itself; the others are added to it (or to zero),
        so the float result is that of ``level + acf + spread + shape`` left to right.
        """
        if any(a.target is None for a in self.anchors):
            raise RuntimeError("train.noise_lambda, noise_acf_lambda, noise_acf_spread_lambda or "
                               "noise_shape_lambda > 0 needs Trainer.set_noise_target(real) first")
        noise = self.zero
        for a in self.anchors:
            term = a.weight * a.loss(y, a.target, region)
            noise = term if a.name == "level" else noise + term
        return noise

    def d_step(self, sim: torch.Tensor, real: torch.Tensor):
        """One D update on batches of ``real`` and of refined ``sim`` mixed with the history
        buffer; returns D's loss, its accuracy on real and on refined patches, R1 and its
        stamp-level AUC on the batch (`refinegan.refiner.losses.d_stamp_auc`)."""
        s = self.s
        x, r = self._batch(sim), self._batch(real)
        with torch.no_grad(), self._autocast():
            y = self.r_call(self._cond(x))
        # The buffer sees the whole global batch, so it stays the same on every rank.
        fake = self.history.mix(self.world.gather(y))[self.world.local_slice(self.s.batch_size)]
        r, fake = self._augment(r), self._augment(fake)
        with self._autocast():
            out = self.d_train(torch.cat([r, fake]))  # one pass over real and refined stamps
            n = r.shape[0]
            out_r = tuple(None if o is None else o[:n] for o in out)
            out_f = tuple(None if o is None else o[n:] for o in out)
            loss = d_loss(out_r, out_f, s.adv_loss, s.global_weight)
            r1 = r1_penalty(self.d_call, r, s.global_weight) if s.r1_gamma > 0 else self.zero
            total = loss + 0.5 * s.r1_gamma * r1
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        with torch.no_grad():
            auc = d_stamp_auc(out_r, out_f, s.global_weight)
        return (loss.detach(), d_accuracy(out_r, True, s.adv_loss),
                d_accuracy(out_f, False, s.adv_loss), r1.detach(), auc)

    def one_step(self, sim, real) -> torch.Tensor:
        """One global step; returns its metrics row (device tensor, no host sync)."""
        s, z = self.s, self.zero
        phase = s.phase(self.step)
        adv = reg = mom = ld = acc_r = acc_f = r1 = noise = auc = z
        # adv_weight 0 (`TrainSettings.adversarial` false): D is never called nor stepped, so R's
        # gradient cannot depend on D; the pretrain-D steps do nothing (the schedule is kept)
        if phase == 0:
            adv, reg, mom, noise = self.r_step(sim, adversarial=False)
        elif phase == 1:
            if s.adversarial:
                ld, acc_r, acc_f, r1, auc = self.d_step(sim, real)
        else:
            for _ in range(s.k_g):
                adv, reg, mom, noise = self.r_step(sim, adversarial=s.adversarial)
            for _ in range(s.k_d if s.adversarial else 0):
                ld, acc_r, acc_f, r1, auc = self.d_step(sim, real)
        self.step += 1
        return self.world.mean(torch.stack([adv, reg, mom, ld, acc_r, acc_f, r1, noise, auc]).float())

    def model_state(self) -> dict:
        """R's weights for ``refiner.pt`` (the EMA weights when enabled), float32 on the CPU."""
        state = self.refiner.state_dict()
        if self.ema is not None:
            names = [n for n, _ in self.refiner.named_parameters()]
            state = dict(state) | dict(zip(names, self.ema, strict=True))
        return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}

    def state_dict(self) -> dict:
        """The whole training state (``checkpoint.pt``'s ``trainer``)."""
        return {"step": self.step, "refiner": self.refiner.state_dict(), "disc": self.disc.state_dict(),
                "opt_r": self.opt_r.state_dict(), "opt_d": self.opt_d.state_dict(),
                "ema": None if self.ema is None else [t.cpu() for t in self.ema],
                "gen": self.gen.get_state(), "history": self.history.state_dict()}

    def load_state_dict(self, st: dict) -> None:
        """Restore a `state_dict`, so the run continues exactly."""
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

    def initial_model_state(self) -> dict:
        """R's weights at step 0, the identity (its last layer is zero), as `model_state`."""
        r0 = build_refiner(self.s.arch(), self.r_seed)
        return {k: v.detach().float().cpu().contiguous() for k, v in r0.state_dict().items()}

    @torch.no_grad()
    def refine_eval(self, z: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """R applied to sim stamps ``z`` (B, 1, H, W); latent codes from a fixed seed, so the
        watch and sample grids compare like with like across steps. ``state``: other weights
        for R (e.g. a checkpoint's, `model_state`), applied to a copy."""
        model, call = self.refiner, self.r_call
        if state is not None:
            model = copy.deepcopy(self.refiner)
            model.load_state_dict(state)
            call = model
        d = self.s.latent_dim
        if d:
            g = torch.Generator(device=self.device).manual_seed(EVAL_LATENT_SEED)
            z = model.with_latent(z, torch.randn((z.shape[0], d), generator=g, device=self.device))
        with self._autocast():
            return call(z).float()
