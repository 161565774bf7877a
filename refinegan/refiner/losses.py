"""Losses of the SimGAN refiner: adversarial (BCE / least-squares / hinge), R1, self-regularisation.

All adversarial losses take D's outputs ``(local, global)`` (see
`refinegan.refiner.discriminator`): the local map's loss is the mean over every patch logit
(SimGAN section 2.3) and the global logit's loss is added with weight ``global_weight``; the sum
is divided by ``1 + global_weight`` so the scale does not depend on the weight.

Self-regularisation (SimGAN eq. 3): ``lambda * mean | psi(R(x)) - psi(x) |`` with ``psi`` the
identity or a Gaussian low-pass filter of ``sigma_px`` pixels (R may then change texture and
noise freely but not the smooth light distribution). The moment term is the mean absolute
weighted-moment change (`moment_loss`). The noise-level anchor (`noise_level_loss`) ties the
median border-frame variance of a refined batch to the target's, and the correlation anchor
(`noise_acf_loss`) its median border-frame autocorrelation at small lags.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..noise import frame_mask
from .moments import MomentProjector

__all__ = [
    "ADV_LOSSES",
    "PSI_KINDS",
    "d_loss",
    "g_loss",
    "d_accuracy",
    "d_stamp_auc",
    "stamp_score",
    "r1_penalty",
    "SelfRegularization",
    "moment_loss",
    "border_variance",
    "noise_level_loss",
    "acf_lags",
    "border_acf",
    "noise_acf_loss",
]

ADV_LOSSES = ("bce", "lsgan", "hinge")
PSI_KINDS = ("identity", "lowpass")
GAUSS_TRUNCATE = 3.0  # low-pass kernel radius in sigmas


def _check_kind(kind: str) -> None:
    if kind not in ADV_LOSSES:
        raise ConfigError(f"train.adv_loss must be one of {ADV_LOSSES}, got {kind!r}")


def _combine(local: torch.Tensor, glob: torch.Tensor | None, global_weight: float) -> torch.Tensor:
    if glob is None or global_weight == 0:
        return local.mean()
    return (local.mean() + global_weight * glob.mean()) / (1.0 + global_weight)


def _real_term(logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bce":
        return F.softplus(-logits)  # -log sigmoid(l)
    if kind == "lsgan":
        return 0.5 * (logits - 1.0) ** 2
    return F.relu(1.0 - logits)


def _fake_term(logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "bce":
        return F.softplus(logits)  # -log(1 - sigmoid(l))
    if kind == "lsgan":
        return 0.5 * logits**2
    return F.relu(1.0 + logits)


def _per(out, fn, kind):
    local, glob = out
    return fn(local.float(), kind), None if glob is None else fn(glob.float(), kind)


def d_loss(real_out, fake_out, kind: str = "bce", global_weight: float = 1.0) -> torch.Tensor:
    """D's loss: real stamps labelled 1, refined stamps 0 (hinge: margins +/-1)."""
    _check_kind(kind)
    real = _combine(*_per(real_out, _real_term, kind), global_weight)
    fake = _combine(*_per(fake_out, _fake_term, kind), global_weight)
    return real + fake


def g_loss(fake_out, kind: str = "bce", global_weight: float = 1.0) -> torch.Tensor:
    """R's adversarial loss: refined stamps should look real (non-saturating BCE; LS; hinge -D)."""
    _check_kind(kind)
    local, glob = fake_out
    if kind == "hinge":
        return _combine(-local.float(), None if glob is None else -glob.float(), global_weight)
    return _combine(*_per(fake_out, _real_term, kind), global_weight)


def d_accuracy(out, real: bool, kind: str = "bce") -> torch.Tensor:
    """Fraction of local patches D classifies correctly (a 0-d tensor; no host sync)."""
    threshold = 0.5 if kind == "lsgan" else 0.0
    local = out[0].float()
    hit = local > threshold if real else local <= threshold
    return hit.float().mean()


def stamp_score(out, global_weight: float = 1.0) -> torch.Tensor:
    """D's score per stamp (B,): its patch-logit mean and global logit, weighted as the loss
    weighs them (the global logit alone is left out when ``global_weight`` is 0)."""
    local, glob = out
    s = local.float().mean(dim=tuple(range(1, local.ndim)))
    if glob is None or global_weight == 0:
        return s
    return (s + global_weight * glob.float().reshape(-1)) / (1.0 + global_weight)


def d_stamp_auc(real_out, fake_out, global_weight: float = 1.0) -> torch.Tensor:
    """D's stamp-level AUC on one batch (a 0-d tensor; no host sync): the fraction of (real,
    refined) stamp pairs that D ranks the right way round (ties count 1/2) by `stamp_score`.
    0.5 = D cannot rank the two sets. Patch accuracies (`d_accuracy`) can sit at chance while
    this does not: most patches are sky, where nothing differs."""
    diff = stamp_score(real_out, global_weight)[:, None] - stamp_score(fake_out, global_weight)[None, :]
    return ((diff > 0).float() + 0.5 * (diff == 0).float()).mean()


def r1_penalty(discriminator, real: torch.Tensor, global_weight: float = 1.0) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean over stamps of ||grad_x D(x)||^2 on real stamps.

    The caller multiplies by gamma / 2.
    """
    x = real.detach().requires_grad_(True)
    out = discriminator(x)
    score = _combine(out[0].float(), None if out[1] is None else out[1].float(), global_weight)
    (grad,) = torch.autograd.grad(score * x.shape[0], x, create_graph=True)
    return grad.float().pow(2).sum(dim=(1, 2, 3)).mean()


def _gauss_kernel(sigma_px: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(GAUSS_TRUNCATE * sigma_px)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    return (k / k.sum()).float()


class SelfRegularization:
    """``mean |psi(a) - psi(b)|`` with ``psi`` identity or a separable Gaussian low-pass.

    Parameters
    ----------
    psi : {'identity', 'lowpass'}
    sigma_px : float
        Low-pass Gaussian sigma in pixels (``lowpass`` only) [default: 1.5].
    """

    def __init__(self, psi: str = "identity", sigma_px: float = 1.5) -> None:
        if psi not in PSI_KINDS:
            raise ConfigError(f"train.reg_psi must be one of {PSI_KINDS}, got {psi!r}")
        if psi == "lowpass" and not sigma_px > 0:
            raise ConfigError(f"train.reg_lowpass_sigma_px must be > 0 for psi=lowpass, got {sigma_px!r}")
        self.psi = psi
        self.sigma_px = float(sigma_px)
        self._kernel = _gauss_kernel(self.sigma_px) if psi == "lowpass" else None

    def apply_psi(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W)
        if self._kernel is None:
            return x
        k = self._kernel.to(device=x.device, dtype=x.dtype)
        r = k.numel() // 2
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))

    def __call__(self, refined: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        # psi is linear: psi(a) - psi(b) = psi(a - b)
        return self.apply_psi((refined - original).float()).abs().mean()


def moment_loss(refined: torch.Tensor, original: torch.Tensor, projector: MomentProjector) -> torch.Tensor:
    """Mean |change of the weighted moments| in linear units (``sinh`` of normalised stamps).

    Zero when the refiner already projects its change out (`MomentPreservingRefiner`).
    """
    u = torch.sinh(refined.float()) - torch.sinh(original.float())
    return projector.coefficients(u).abs().mean()


def _region(lin: torch.Tensor, region) -> torch.Tensor:
    """Float weights (1 or B, H, W) of the pixels a noise statistic uses: ``region`` is a border
    width in pixels (the frame), or a bool mask (B, H, W) of sky pixels (``train.noise_region``)."""
    if isinstance(region, torch.Tensor):
        return region.to(device=lin.device).reshape(lin.shape).float()
    frame = torch.from_numpy(frame_mask(lin.shape[-2:], int(region))).to(lin.device)
    return frame[None].float()


def _centred(z: torch.Tensor, region):
    """``sinh(z)`` minus each stamp's mean over ``region`` (B, H, W), the region's weights and
    its pixel count per stamp (B,): what every noise statistic below starts from."""
    lin = torch.sinh(z.float())[:, 0]
    w = _region(lin, region)
    n = w.sum(dim=(1, 2))
    mean = (lin * w).sum(dim=(1, 2), keepdim=True) / n[:, None, None]
    return lin - mean, w, n


def border_variance(z: torch.Tensor, region) -> torch.Tensor:
    """Per-stamp variance (B,) of ``sinh(z)`` (linear units) over the border frame of ``region``
    pixels, or over the sky pixels of a mask ``region`` (B, H, W)."""
    d, w, n = _centred(z, region)
    return (d.pow(2) * w).sum(dim=(1, 2)) / (n - 1)


def noise_level_loss(refined: torch.Tensor, target_var: torch.Tensor, region) -> torch.Tensor:
    """``log(median border variance of the batch / target_var)^2``: the noise-level anchor.

    D judges 9x9-pixel patches, whose own variance scatters by ~16 %, so the adversarial loss
    alone leaves the refined noise level a few per cent off (measured in docs/benchmarks.md),
    which a calibration cannot afford. The median over stamps ignores neighbours and other
    sources that reach the frame. ``target_var`` is the same statistic of the target set
    (`Trainer.set_noise_target`).
    """
    v = border_variance(refined, region).median()
    return torch.log(v / target_var) ** 2


def acf_lags(max_lag: int) -> tuple[tuple[int, int], ...]:
    """Lags ``(dy, dx)`` of one half-plane with ``0 < max(|dy|, |dx|) <= max_lag``.

    The autocorrelation is symmetric, ``acf(-dy, -dx) = acf(dy, dx)``, so the other half adds
    nothing: ``max_lag = 2`` gives 12 lags.
    """
    return tuple((dy, dx) for dy in range(max_lag + 1) for dx in range(-max_lag, max_lag + 1)
                 if dy > 0 or dx > 0)


def _shifted(a: torch.Tensor, dy: int, dx: int):
    """The two overlapping views ``a[..., y, x]`` and ``a[..., y + dy, x + dx]`` (dy >= 0)."""
    h, w = a.shape[-2:]
    x0, x1 = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return a[..., 0:h - dy, x0], a[..., dy:h, x1]


def border_acf(z: torch.Tensor, region, lags) -> torch.Tensor:
    """Per-stamp autocorrelation (B, L) of ``sinh(z)`` over the border frame at each lag.

    ``acf = mean(d(p) d(p + lag)) / mean(d^2)`` over the pixel pairs with both pixels in the
    frame, ``d`` the pixel minus the stamp's frame mean: the same normalised correlation
    compare reports over source-masked pixels (``acf_10`` = lag (0, 1), ...). ``region``: the
    frame's width, or a sky mask (B, H, W) (`_region`).
    """
    d, w, n = _centred(z, region)
    d = d * w  # zero off the region
    var = d.pow(2).sum(dim=(1, 2)) / n
    out = []
    for dy, dx in lags:
        a, b = _shifted(d, dy, dx)
        fa, fb = _shifted(w, dy, dx)
        out.append((a * b).sum(dim=(1, 2)) / (fa * fb).sum(dim=(1, 2)) / var)
    return torch.stack(out, dim=1)


def noise_acf_loss(refined: torch.Tensor, target_acf: torch.Tensor, region, lags) -> torch.Tensor:
    """``sum over lags of (median border acf of the batch - target_acf)^2``: the correlation anchor.

    D's patches learn most of a target's noise correlations, not all (lag-1 gaps closed 0.6-0.8
    in the default runs, docs/benchmarks.md), and a classifier on noise statistics finds the rest.
    ``target_acf`` (L,) is the same statistic of the target set (`Trainer.set_noise_target`); the
    median over stamps ignores neighbours that reach the frame.
    """
    acf = border_acf(refined, region, lags).median(dim=0).values
    return (acf - target_acf).pow(2).sum()


def border_shape(z: torch.Tensor, region) -> torch.Tensor:
    """Per-stamp skewness and excess kurtosis (B, 2) of ``sinh(z)`` over the border frame (or
    the sky mask ``region``, `_region`)."""
    d, w, n = _centred(z, region)

    def moment(k: int) -> torch.Tensor:
        return (d.pow(k) * w).sum(dim=(1, 2)) / n

    m2 = moment(2)
    return torch.stack([moment(3) / m2.pow(1.5), moment(4) / m2.pow(2) - 3.0], dim=1)


def noise_shape_loss(refined: torch.Tensor, target: torch.Tensor, region) -> torch.Tensor:
    """``sum of (batch-mean border skewness, excess kurtosis - target)^2``: the noise-shape anchor.

    R builds the target's noise texture through ReLUs, which can skew it: the session-3 default
    refiners left the refined noise skewed by -0.03 to +0.03 (half the per-stamp scatter, 5-10x
    the sim-mock distance of that statistic, docs/benchmarks.md), which no 9x9 patch of D resolves.
    ``target`` (2,) is the mean over target stamps of the same statistics over their
    source-masked pixels (`Trainer.set_noise_target`; the target's neighbours would skew a frame).
    """
    return (border_shape(refined, region).mean(dim=0) - target).pow(2).sum()


SPREAD_TRIM = 0.1  # order statistics left out at each end by noise_acf_spread_loss


def noise_acf_spread_loss(refined: torch.Tensor, target_sorted: torch.Tensor, region, lags,
                          trim: float = SPREAD_TRIM) -> torch.Tensor:
    """Squared quantile distance between the batch's and the target's per-stamp correlations.

    For each lag the B per-stamp border autocorrelations of the refined batch, sorted, are
    compared with the target's quantiles at (i + 1/2) / B (``target_sorted``: (N, L), each column
    sorted), mean over the central ``1 - 2 trim`` of the order statistics (a neighbour in a target
    frame makes an outlier there), summed over lags: a 1-D Wasserstein-2 distance per lag. The
    correlation anchor (`noise_acf_loss`) ties the median; this ties the spread too, e.g. a
    coadd's stamp-to-stamp scatter of the correlation, which a refiner with a latent code
    (``train.latent_dim``) can produce and a deterministic one cannot.
    """
    acf = border_acf(refined, region, lags).sort(dim=0).values  # (B, L)
    b = acf.shape[0]
    p = (torch.arange(b, device=acf.device, dtype=torch.float32) + 0.5) / b
    q = torch.quantile(target_sorted.float(), p.to(target_sorted.device), dim=0).to(acf.device)  # (B, L)
    keep = (p >= trim) & (p <= 1 - trim)
    return (acf - q)[keep].pow(2).mean(dim=0).sum()
