"""Refine a stamp file with a trained refiner: ``refinegan refine --model M --in F --out F``.

Streams the input in chunks of ``chunk_stamps`` (memory is bounded by one chunk, whatever N),
normalises each stamp with the model's `Normalization`, applies R, transforms back to counts and
writes a ``refined`` stamp file whose labels (and mask, and PSF) are the input's, unchanged and
in order. The output records the parent file (path and sha256) and the model's sha256.

The model is refused (`ContractError`) for an input of another pixel scale, or one whose noise
cannot be normalised as in training (missing noise label, other normalisation version, or a
median noise sigma outside a factor ``sigma_tolerance`` of the training sims'). Any stamp size
works: R is fully convolutional.

``matching_only`` writes R's input instead (the sims through the model's PSF and noise matching,
no R): the ``psf_matched`` set compare measures R's own contribution against.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import ContractError
from ..io import StampWriter, file_sha256, open_stamps
from ..seeds import realisation_normals
from .model import MomentPreservingRefiner
from .noise_match import NoiseMatch
from .normalize import Normalization
from .psf_match import PsfMatch
from .refiner_file import RefinerFile
from .reobserve import Reobserve, known_noise_seed

__all__ = ["refine", "check_compatible", "refine_array", "fast_refiner", "latent_codes", "SIGMA_TOLERANCE",
           "PIXEL_SCALE_RTOL"]

logger = logging.getLogger(__name__)

PIXEL_SCALE_RTOL = 1e-6
SIGMA_TOLERANCE = 2.0  # refuse inputs whose median noise sigma is off by more than this factor


def check_compatible(model: RefinerFile, sf, model_path, sigma: np.ndarray | None,
                     sigma_tolerance: float = SIGMA_TOLERANCE) -> None:
    """Raise `ContractError` if the stamp file ``sf`` cannot be refined by ``model``.

    Parameters
    ----------
    model : RefinerFile
        The model (its pixel scale and training sims' median noise sigma).
    sf : refinegan.io.StampFile
        The open input file.
    model_path : path
        The model's file, for the messages.
    sigma : numpy.ndarray or None
        (N,) the input's noise sigma in counts; None skips the noise check.
    sigma_tolerance : float
        Largest factor between the input's and the training sims' median sigma; 0 = no check
        [default: `SIGMA_TOLERANCE`].
    """
    ps_model, ps_file = float(model.pixel_scale), sf.pixel_scale
    if abs(ps_model - ps_file) > PIXEL_SCALE_RTOL * max(ps_model, ps_file):
        raise ContractError(f"{model_path} was trained at pixel scale {ps_model} arcsec/pixel, "
                            f"{sf.path} has {ps_file}; resample the stamps or train at this scale")
    if sf.domain == "refined":
        raise ContractError(f"{sf.path} is already refined (parent {sf.attrs.get('parent')!r}); "
                            f"refine a sim file")
    if sigma is not None and sigma_tolerance > 0:
        ref = float(model.sim_sigma_median)
        med = float(np.median(sigma))
        if not (ref / sigma_tolerance <= med <= ref * sigma_tolerance):
            raise ContractError(
                f"{sf.path}: median noise sigma {med:.4g} counts is outside a factor "
                f"{sigma_tolerance} of the {ref:.4g} counts {model_path} was trained on; the "
                f"model's noise normalisation does not fit this file")


def _check_match_psf(match: PsfMatch, sf, model_path, rtol: float = 1e-3) -> None:
    """The matching kernel is only right for the PSF it was built from: refuse any other."""
    psf = None if sf.psf is None else np.asarray(sf.psf, dtype=np.float64)
    if psf is None or psf.shape != match.sim_psf.shape:
        got = "no /psf" if psf is None else f"a /psf of shape {psf.shape}"
        raise ContractError(f"{model_path} matches the sims' PSF {match.sim_psf.shape} to the target's "
                            f"(train.psf_match); {sf.path} has {got}")
    diff = float(np.abs(psf / psf.sum() - match.sim_psf).max())
    if diff > rtol * float(match.sim_psf.max()):
        raise ContractError(f"{sf.path}: /psf differs from the PSF {model_path} was trained on (max "
                            f"|difference| {diff:.3g}); its PSF matching kernel does not fit this file")


def latent_codes(labels, n: int, dim: int, seed: int, offset: int = 0) -> np.ndarray | None:
    """R's latent codes (n, dim) for n stamps, one per sim noise realisation (None if dim = 0)."""
    if not dim:
        return None
    return realisation_normals(labels, n, (dim,), seed, "latent", offset).astype(np.float32)


def fast_refiner(module, device, example_shape, jit: bool = True):
    """A callable z -> R(z) (with the moment projection) tuned for inference on ``device``.

    CPU: R's network is traced and frozen with ``torch.jit.optimize_for_inference`` (MKLDNN
    layout kept between layers, conv + ReLU fused), about 2x the plain eager model (see
    docs/benchmarks.md); falls back to eager channels_last if tracing fails. CUDA: eager with
    channels_last and bf16 autocast (`refine_array`).
    """
    if torch.device(device).type != "cpu" or not jit:
        return module
    net = module.refiner.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch.jit is deprecated in favour of torch.compile, which needs a compiler and
            # minutes per shape on CPU; jit.freeze is still the fastest CPU inference path here.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            example = torch.zeros((2, 1 + module.latent_dim, *example_shape)).contiguous(
                memory_format=torch.channels_last)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, example)))
    except Exception as err:  # pragma: no cover - depends on the torch build
        logger.warning("jit freeze of the refiner failed (%s); using eager mode", err)
        return module
    return lambda z: module.project(z, frozen(z))


@torch.inference_mode()
def refine_array(module, norm: Normalization, images: np.ndarray, sigma: np.ndarray,
                 device="cpu", channels_last: bool = True, latent: np.ndarray | None = None) -> np.ndarray:
    """Refine (B, H, W) counts with per-stamp noise sigma (B,); returns float32 counts.

    ``module`` is the refiner (`refinegan.refiner.refiner_file.RefinerFile.build`) or `fast_refiner`'s callable;
    ``latent`` (B, d) the latent codes of a refiner with ``latent_dim`` d > 0 (`latent_codes`).
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device)[:, None]
    s = torch.from_numpy(np.asarray(sigma, dtype=np.float32)).to(device)
    z = norm.forward(x, s)
    if latent is not None:
        z = MomentPreservingRefiner.with_latent(z, torch.from_numpy(np.asarray(latent, dtype=np.float32)))
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda"):
        out = module(z).float()
    return norm.inverse(out, s)[:, 0].contiguous().cpu().numpy()


def refine(
    model_path: str | os.PathLike,
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    chunk_stamps: int = 1024,
    progress: bool = False,
    device: str = "auto",
    sigma_tolerance: float = SIGMA_TOLERANCE,
    jit: bool = True,
    matching_only: bool = False,
) -> Path:
    """Refine every stamp of ``in_path`` with the model ``model_path`` into ``out_path``.

    Parameters
    ----------
    model_path : path
        ``refiner.pt`` written by `refinegan.refiner.train.train`.
    in_path : path
        Stamp file to refine (usually domain ``sim``).
    out_path : path
        Output stamp file (domain ``refined``), written atomically.
    chunk_stamps : int
        Stamps read, refined and written at a time (bounds memory) [default: 1024].
    progress : bool
        tqdm progress bar [default: False].
    device : {'auto', 'cpu', 'cuda'}
        [default: 'auto' = CUDA when available].
    sigma_tolerance : float
        Largest factor between the input's and the training sims' median noise sigma; 0 turns
        the check off [default: `SIGMA_TOLERANCE`].
    jit : bool
        CPU only: run R through ``torch.jit.freeze`` (`fast_refiner`) [default: True].
    matching_only : bool
        Write R's input instead of its output: the sims through the model's PSF matching (and
        noise matching), no R, no learned PSF kernel; ``/psf`` is the matched PSF and the file
        attribute ``matching_only`` is 1. What compare calls the ``psf_matched`` set: refined vs
        it, on the same stamps, is R's own contribution [default: False].

    Raises
    ------
    ContractError
        Unreadable or incompatible model, or an input it cannot refine (see module docstring).
    """
    if chunk_stamps < 1:
        raise ContractError(f"chunk_stamps must be >= 1, got {chunk_stamps}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model = RefinerFile.read(model_path)
    module = model.build(dev, model_path)
    norm = Normalization.from_dict(model.normalization, where=str(model_path))
    model_sha = file_sha256(model_path)
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.resolve() == in_path.resolve() or (out_path.exists() and in_path.exists()
                                                    and out_path.samefile(in_path)):
        raise ContractError(f"refine --out {out_path} is the input file {in_path}: refined stamps "
                            "go to a new file, the sims stay as they are")
    with open_stamps(in_path) as sf:
        label_checked = _check_input(model, sf, norm, model_path, sigma_tolerance)
        seed = int(model.config["seed"])  # the latent codes' seed: the training run's
        match = PsfMatch.from_dict(model.psf_match)
        if match is not None:
            _check_match_psf(match, sf, model_path)
        nmatch = _noise_match_for(model, sf, model_path)
        reob = Reobserve(match, nmatch, known_noise_seed(sf.attrs) if nmatch else None, str(in_path))
        psf = _refined_psf(sf, match, None if matching_only else module)
        runner = None if matching_only else fast_refiner(module, dev, sf.stamp_shape, jit=jit)
        extra = _provenance(in_path, model_path, model_sha, match, None if matching_only else module)
        if matching_only:
            extra["matching_only"] = 1
        if nmatch is not None:  # the target's noise covariance the sims were re-observed with
            extra["noise_match_covariance"] = nmatch.covariance_near()
            extra["noise_match_replaced"] = int(reob.replaces_noise)  # the sims' own noise taken out
            extra["noise_match_classes"] = 1 if nmatch.bank is None else len(nmatch.bank)  # spread
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sf.n, desc="refine", unit="stamp")
        with _writer(out_path, sf, model_path, chunk_stamps, psf, extra, matching_only) as w:
            for i, (sl, images) in enumerate(sf.iter_chunks(chunk_stamps)):
                labels = sf.labels(sl=sl)  # each label's own dtype, bytes unchanged
                sigma = _chunk_sigma(images, labels, sl, norm, in_path)
                if i == 0 and not label_checked:
                    check_compatible(model, sf, model_path, sigma, sigma_tolerance)
                if nmatch is not None and not reob.replaces_noise:  # added to: quieter sims only
                    nmatch.check(sigma, str(in_path))
                images, sigma = reob.apply(images, sigma, labels, offset=sl.start)
                if matching_only:  # R's input, as refine_array would receive it
                    out = np.asarray(images, dtype=np.float32)
                else:
                    latent = latent_codes(labels, images.shape[0], module.latent_dim, seed, sl.start)
                    out = refine_array(runner, norm, images, sigma, dev, channels_last=True,
                                       latent=latent)
                w.write(out, labels, sf.mask[sl] if sf.mask is not None else None)
                if bar is not None:
                    bar.update(images.shape[0])
        if bar is not None:
            bar.close()
    logger.info("refined %s -> %s with %s", in_path, out_path, model_path)
    return out_path


def _check_input(model: RefinerFile, sf, norm: Normalization, model_path,
                 sigma_tolerance: float) -> bool:
    """The checks of `check_compatible` that need no pixels; returns whether the noise sigma
    check is done (from the ``noise_sigma`` labels) or is left to the first chunk."""
    check_compatible(model, sf, model_path, None, sigma_tolerance)
    has_label = "noise_sigma" in sf.label_names
    if norm.sigma_source == "label" and not has_label:
        norm.sigmas(np.zeros((0, 1, 1)), {}, str(sf.path))  # raises the missing-label error
    label_checked = has_label and norm.sigma_source != "estimate"
    if label_checked and sf.n:
        # (N,) floats: small even for 10^6 stamps; the border estimate is checked per chunk
        check_compatible(model, sf, model_path, sf.labels(["noise_sigma"])["noise_sigma"],
                         sigma_tolerance)
    return label_checked


def _chunk_sigma(images: np.ndarray, labels, sl: slice, norm: Normalization, in_path) -> np.ndarray:
    """(B,) noise sigma of a chunk of stamps ``sl``, refusing NaN / inf pixels (`ContractError`)."""
    if not np.isfinite(images).all():
        bad = sl.start + int(np.flatnonzero(~np.isfinite(images).all(axis=(1, 2)))[0])
        raise ContractError(f"{in_path}: stamp {bad} has NaN or inf pixels")
    return norm.sigmas(images, labels, str(in_path))


def _refined_psf(sf, match: PsfMatch | None, module) -> np.ndarray | None:
    """The refined file's /psf: with PSF matching and a learned PSF kernel the refined stamps
    are the sims through K_learned * K_match * psf (docs/refiner.md)."""
    psf = sf.psf if (sf.psf is None or match is None) else match.apply_psf(sf.psf)
    return psf if (psf is None or module is None) else module.refined_psf(psf)


def _writer(out_path: Path, sf, model_path, chunk_stamps: int, psf: np.ndarray | None,
            extra: dict, matching_only: bool = False) -> StampWriter:
    """The ``refined`` stamp file for the stamps of ``sf`` (same shape, pixel scale, seed, mask,
    pixel units)."""
    config = {"refine": {"model": str(model_path), "chunk_stamps": chunk_stamps},
              "parent_config": sf.attrs.get("config")}
    what = "the matching (no R) of" if matching_only else "refine of"
    if matching_only:
        config["refine"]["matching_only"] = True
    return StampWriter(out_path, sf.n, sf.stamp_shape, domain="refined", pixel_scale=sf.pixel_scale,
                       source=f"refinegan {what} {sf.path.name} with {Path(model_path).name}",
                       config=config, seed=int(sf.attrs["seed"]), psf=psf,
                       with_mask=sf.mask is not None, extra_attrs=extra,
                       image_attrs={"units": sf.units})


def _noise_match_for(model: RefinerFile, sf, model_path) -> NoiseMatch | None:
    """The model's noise matching (``train.noise_match``), refused for stamps of another size."""
    nmatch = NoiseMatch.from_dict(model.noise_match)
    if nmatch is not None and nmatch.shape != tuple(sf.stamp_shape):
        raise ContractError(f"{model_path} matches the target's noise on {nmatch.shape} stamps "
                            f"(train.noise_match); {sf.path} has {sf.stamp_shape}")
    return nmatch


def _provenance(in_path: Path, model_path, model_sha: str, match: PsfMatch | None,
                module) -> dict:
    """The refined file's extra attributes: parent and model (paths, sha256) and the kernels."""
    extra = {"parent": str(in_path.resolve()), "parent_sha256": file_sha256(in_path),
             "model": str(Path(model_path).resolve()), "model_sha256": model_sha}
    if match is not None:
        extra["psf_match_kernel"] = match.kernel
        extra["psf_match_gain"] = float(match.gain)  # K = gain x the unit-sum kernel
        for key, value in (("psf_match_residual", match.residual),
                           ("psf_match_residual_max", match.residual_max)):
            if value is not None:  # recorded at training (not by an older refiner.pt)
                extra[key] = float(value)
    kern = None if module is None else module.kernel()
    if kern is not None:
        extra["psf_kernel"] = kern.detach().cpu().numpy().astype(np.float64)
    return extra
