"""The training data: the two domains read, checked, PSF-matched, normalised and on the device.

`prepare_data` runs the steps in order: read the sim and real stamp files (`load_domain`), check
they fit each other, re-observe the sims through the target's PSF (``train.psf_match``), replace
the target's masked pixels by noise (`fill_masked`), normalise both domains onto the device and,
with ``noise_region: sky``, find the sky pixels the noise anchors measure (`sky_mask`). It
returns a `TrainData`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import noise
from ..errors import TrainingError
from ..io import PSF_FLUX_ATTR, StampSet, open_stamps, read_many
from ..noise import fill_masked
from .noise_match import NoiseMatch, build_noise_match
from .normalize import Normalization
from .psf_match import PsfMatch, build_psf_match, psf_flux_gain
from .reobserve import Reobserve, known_noise_seed
from .settings import TrainSettings

__all__ = ["TrainData", "prepare_data", "load_domain", "check_pair", "psf_match_for",
           "sky_mask", "PIXEL_SCALE_RTOL"]

logger = logging.getLogger(__name__)

PIXEL_SCALE_RTOL = 1e-6  # sim and real pixel scales must agree to this relative tolerance


@dataclasses.dataclass
class TrainData:
    """Both domains ready for training, and what ``refiner.pt`` records about them.

    Attributes
    ----------
    sim_z, real_z : torch.Tensor
        (N, 1, H, W) and (M, 1, H, W) float32 normalised stamps on the device (channels_last on
        CUDA with ``train.cuda_channels_last``); the sims PSF-matched when enabled.
    sim_sky, real_sky : torch.Tensor or None
        (N, H, W) and (M, H, W) bool sky pixels on the device (``noise_region: sky`` with a
        noise anchor on), else None.
    norm : Normalization
        The stamp transform.
    match : PsfMatch or None
        The PSF matching kernel (``train.psf_match``), else None.
    pixel_scale : float
        Pixel scale in arcsec / pixel.
    stamp_shape : tuple of int
        (H, W) in pixels.
    sim_sigma_median, real_sigma_median : float
        Median per-stamp noise sigma of each domain, in counts.
    sim_paths : list of Path
        The sim stamp files, in order.
    real_path : Path
        The real stamp file.
    noise_match : NoiseMatch or None
        The noise matching (``train.noise_match``), else None.
    """

    sim_z: torch.Tensor
    real_z: torch.Tensor
    sim_sky: torch.Tensor | None
    real_sky: torch.Tensor | None
    norm: Normalization
    match: PsfMatch | None
    pixel_scale: float
    stamp_shape: tuple[int, ...]
    sim_sigma_median: float
    real_sigma_median: float
    sim_paths: list[Path]
    real_path: Path
    noise_match: NoiseMatch | None = None


def prepare_data(s: TrainSettings, seed: int, sim_paths: Sequence[str | os.PathLike],
                 real_path: str | os.PathLike, device: torch.device) -> TrainData:
    """Read, check, PSF-match, fill, normalise and move both domains to ``device``.

    Parameters
    ----------
    s : TrainSettings
        Uses the ``norm_*``, ``psf_match``, ``noise_region`` and noise-anchor settings.
    seed : int
        The run's seed (``config.seed``): the PSF matching's and the mask fill's noise.
    sim_paths : sequence of path
        Simulated stamp files (shards are concatenated in order).
    real_path : path
        The real (target) stamp file.
    device : torch.device
        Where the stamps go.

    Raises
    ------
    TrainingError
        Empty, mismatched or non-finite inputs; PSF matching without the PSFs it needs.
    """
    sim, sim_paths = load_domain(sim_paths, "sim")
    real, (real_path,) = load_domain([real_path], "real")
    check_pair(sim, sim_paths, real, real_path)
    norm = Normalization(s.norm_softening, s.norm_sigma_source, s.norm_border_px)
    sig_sim = norm.sigmas(sim.images, sim.labels, f"{sim_paths[0]}")
    match = psf_match_for(sim, sim_paths[0], real, real_path, seed) if s.psf_match else None
    nmatch = None
    if s.noise_match:
        nmatch = build_noise_match(real.images, seed, s.norm_border_px, real.mask,
                                   spread_basis=s.noise_spread)
    reob = Reobserve(match, nmatch, _known_noise_seed(sim_paths) if nmatch else None,
                     f"{sim_paths[0]}")
    if nmatch is not None and not reob.replaces_noise:  # added to: needs the sims quieter
        nmatch.check(sig_sim, f"{sim_paths[0]}")
    sim.images, sig_sim_matched = reob.apply(sim.images, sig_sim, sim.labels)
    if nmatch is not None:
        logger.info("noise matching %s -> %s: the sims' noise %s the target's (variance %.4g "
                    "counts^2, lag-1 correlations x %.3f, y %.3f)", sim_paths[0], real_path,
                    "replaced by" if reob.replaces_noise else "added to, up to",
                    nmatch.covariance[0, 0], nmatch.covariance[0, 1] / nmatch.covariance[0, 0],
                    nmatch.covariance[1, 0] / nmatch.covariance[0, 0])
        logger.info("noise matching: %s", "one covariance (the target's stamps spread no more "
                    "than sampling allows)" if nmatch.bank is None else
                    f"{len(nmatch.bank)} covariance classes carry the target's stamp-to-stamp spread")
    sig_real = norm.sigmas(real.images, real.labels, f"{real_path}")
    real.images, n_filled = fill_masked(real.images, real.mask, sig_real, seed)
    if n_filled:
        logger.info("%s: %d masked pixels replaced by noise for training", real_path, n_filled)
    cl = device.type == "cuda" and s.cuda_channels_last
    sim_sky = real_sky = None
    if s.needs_noise_target and s.noise_region == "sky":  # where compare measures the noise
        sim_sky = torch.from_numpy(sky_mask(sim.images, s.norm_border_px, f"{sim_paths[0]}")).to(device)
        real_sky = torch.from_numpy(sky_mask(real.images, s.norm_border_px, f"{real_path}")).to(device)
    return TrainData(
        sim_z=_to_device(sim.images, sig_sim_matched, norm, device, cl),
        real_z=_to_device(real.images, sig_real, norm, device, cl),
        sim_sky=sim_sky, real_sky=real_sky, norm=norm, match=match,
        pixel_scale=float(sim.pixel_scale), stamp_shape=sim.images.shape[1:],
        sim_sigma_median=float(np.median(sig_sim)), real_sigma_median=float(np.median(sig_real)),
        sim_paths=sim_paths, real_path=real_path, noise_match=nmatch)


def _known_noise_seed(paths: Sequence[Path]) -> int | None:
    """The seed of the sims' own noise when every file's can be taken out (`known_noise_seed`),
    else None; shards of different seeds refused."""
    seeds = set()
    for p in paths:
        with open_stamps(p) as sf:
            seeds.add(known_noise_seed(sf.attrs))
    if len(seeds) > 1:
        raise TrainingError(f"sim files {[str(p) for p in paths]} mix noise seeds {sorted(seeds, key=str)}: "
                            "noise matching takes each sim's own noise out, so they must come "
                            "from one run")
    return seeds.pop()


def load_domain(paths: Sequence[str | os.PathLike], role: str) -> tuple[StampSet, list[Path]]:
    """Read stamp files, refusing empty sets and NaN / inf pixels (naming file and stamp).

    Parameters
    ----------
    paths : sequence of path
        The files, concatenated in order.
    role : str
        ``sim`` or ``real``, for the messages.

    Returns
    -------
    stamps : StampSet
        All stamps of the files.
    paths : list of Path
        The files.
    """
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


def check_pair(sim: StampSet, sim_paths: Sequence[Path], real: StampSet, real_path: Path) -> None:
    """Refuse sim and real stamps of another pixel scale or stamp size (`TrainingError`)."""
    ps, pr = sim.pixel_scale, real.pixel_scale
    if abs(ps - pr) > PIXEL_SCALE_RTOL * max(ps, pr):
        raise TrainingError(f"pixel scale differs: {sim_paths[0]} has {ps} arcsec/pixel, "
                            f"{real_path} has {pr}; resample the real stamps to the sim scale")
    if sim.images.shape[1:] != real.images.shape[1:]:
        raise TrainingError(f"stamp size differs: {sim_paths[0]} has {sim.images.shape[1:]}, "
                            f"{real_path} has {real.images.shape[1:]}; cut both to one size")


PSF_RESIDUAL_MAX = 0.02  # largest |K * psf_sim - psf_target| / target peak PSF matching accepts
PSF_MOMENT_RTOL = 1e-3  # a target this much narrower (of the sims' moment trace) counts as equal


def _moment_matrix(psf: np.ndarray, where) -> np.ndarray:
    """HSM adaptive second-moment matrix (2, 2) of a PSF image, pixels^2."""
    import galsim

    res = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(psf, dtype=np.float64)),
                                     strict=False)
    if res.moments_status != 0:
        raise TrainingError(f"{where}: HSM cannot measure its PSF image ({res.error_message.strip()})")
    m = res.observed_shape.getMatrix() * res.moments_sigma
    return m @ m.T


def check_psf_wider(sim_psf: np.ndarray, target_psf: np.ndarray, sim_path, real_path) -> None:
    """PSF matching can only widen: refuse a target PSF narrower than the sims' in any direction
    (its adaptive second moments minus the sims' not positive), naming both sizes."""
    ms, mt = _moment_matrix(sim_psf, sim_path), _moment_matrix(target_psf, real_path)
    narrow = float(np.linalg.eigvalsh(mt - ms).min())
    if narrow < -PSF_MOMENT_RTOL * float(np.trace(ms)):  # equal PSFs match by the identity
        s_s, s_t = (float(np.sqrt(np.sqrt(np.linalg.det(m)))) for m in (ms, mt))
        raise TrainingError(
            f"PSF matching is impossible: the target's PSF ({real_path}: HSM sigma {s_t:.3f} px) is "
            f"narrower than the sims' ({sim_path}: {s_s:.3f} px) in some direction (moment "
            f"difference {narrow:.3f} px^2), and matching can only widen; draw the sims with a "
            f"narrower PSF (sim.psf.fwhm) or set train.psf_match=false")


def psf_match_for(sim: StampSet, sim_path: Path, real: StampSet, real_path: Path,
                  seed: int) -> PsfMatch:
    """The matching kernel from the sims' PSF to the target's (``train.psf_match``), with its
    residual (`refinegan.refiner.psf_match.PsfMatch.summary`) and the bound `PSF_RESIDUAL_MAX`
    recorded (refiner.pt, then the refined files' attributes).

    Raises
    ------
    TrainingError
        If the target has no /psf, or the sims not exactly one 2-D /psf.
    """
    if real.psf is None:
        raise TrainingError(f"train.psf_match is on but {real_path} has no /psf; give the target's PSF "
                            f"image or set train.psf_match=false")
    if sim.psf is None or np.asarray(sim.psf).ndim != 2:
        got = "no /psf" if sim.psf is None else f"/psf of shape {np.asarray(sim.psf).shape}"
        raise TrainingError(f"train.psf_match needs one sim PSF image (h, w); {sim_path} has {got}")
    target = np.asarray(real.psf, dtype=np.float64)
    if target.ndim == 3:
        target = target.mean(axis=0)  # one PSF per target stamp: match to their mean
    check_psf_wider(sim.psf, target, sim_path, real_path)
    gain, why = psf_flux_gain(sim.attrs.get(PSF_FLUX_ATTR), real.attrs.get(PSF_FLUX_ATTR))
    logger.info("PSF matching %s -> %s: %s", sim_path, real_path, why)
    match = build_psf_match(sim.psf, target, sim.images.shape[1:], seed, gain=gain)
    q = match.summary(target)
    if q["psf_residual"] > PSF_RESIDUAL_MAX:
        raise TrainingError(
            f"PSF matching {sim_path} -> {real_path} fails: |K * psf_sim - psf_target| reaches "
            f"{q['psf_residual']:.3g} of the target's peak (bound {PSF_RESIDUAL_MAX:g}; "
            f"{100 * q['clipped_fraction']:.1f}% of Fourier modes clipped): the sims' PSF has too "
            f"little power where the target's has some; draw the sims with a narrower PSF "
            f"(sim.psf.fwhm) or set train.psf_match=false")
    logger.info("PSF matching %s -> %s: |K * psf_sim - psf_target| <= %.2g of the target peak, "
                "%.1f%% of Fourier modes clipped to |K| = 1", sim_path, real_path, q["psf_residual"],
                100 * q["clipped_fraction"])
    return dataclasses.replace(match, residual=q["psf_residual"], residual_max=PSF_RESIDUAL_MAX)


def sky_mask(images: np.ndarray, border_px: int, where: str) -> np.ndarray:
    """(N, H, W) bool: the sky pixels the noise anchors measure.

    `refinegan.noise.sky_mask`, where compare measures the noise; logs the sky fraction.
    """
    sky, few = noise.sky_mask(images, border_px)
    logger.info("%s: noise anchors on sky pixels (%.0f%% of all; %d stamps on their border frame, "
                "too little sky)", where, 100 * sky.mean(), int(few.sum()))
    return sky


def _to_device(images: np.ndarray, sigma: np.ndarray, norm: Normalization, device: torch.device,
               channels_last: bool) -> torch.Tensor:
    """(N, H, W) counts -> (N, 1, H, W) normalised float32 on ``device``."""
    z = norm.forward(images.astype(np.float32), sigma.astype(np.float32))[:, None]  # (N, 1, H, W)
    t = torch.from_numpy(np.ascontiguousarray(z)).to(device)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t
