"""The cutout toolkit every user-data target source shares (``real.source: fits`` / ``hdf5``).

The user's cutouts all pass through `CutoutCollector`: bad pixels (NaN, inf, masked, padded)
go to ``/mask`` with value 1, stamps with too many are rejected and counted (never silently
dropped: attributes ``n_rejected`` and ``n_rejected_<reason>``), optional resampling to the
working pixel scale (`refinegan.target.resample`), centring, cropping, and a robust per-stamp background and noise estimate
from source-masked pixels (`refinegan.target.sky`; labels ``background``, ``noise_sigma``,
``sky_ok``, ``n_sky_pixels``), or the noise from the user's noise plane
(`refinegan.target.planes`); a user PSF image is checked and prepared by
`refinegan.target.psf_image`. Nothing is written unless the whole run succeeds.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..config import RunConfig
from ..errors import InputDataError
from ..io import write_stamps
from ..noise import robust_sigma
from ..units import PixelUnits
from .psf_image import prepare_psf, square_psf
from .resample import SCALE_RTOL, resample_cutout
from .sky import MIN_SKY_FRACTION, MIN_SKY_PIXELS, estimate_sky, plane_sigma

__all__ = ["dihedral_copies", "AUGMENT_COPIES", "CutoutOptions", "CutoutCollector", "center_crop",
           "crop_at", "check_pixel_scale", "working_shape"]

logger = logging.getLogger(__name__)

CENTER_SMOOTH_PIX = 1.5  # smoothing (pixels) before locating the peak to centre on
CENTER_THRESHOLD_SIGMA = 3.0  # recentring: sources above this many robust sigmas of the smoothed image
CENTER_MIN_AREA_PIX = 5  # ... in 8-connected regions of at least this many pixels
RECENTER_MAX_FRACTION = 0.25  # a target further than this fraction of the stamp size from the centre: rejected
AUGMENT_COPIES = (0, 4, 8)  # real.<source>.augment: off, the 4 rotations, the square's 8 symmetries


def dihedral_copies(stamp: np.ndarray, n: int) -> list[np.ndarray]:
    """The first ``n`` (1, 4 or 8) symmetries of the square applied to ``stamp`` (H, W).

    Copy i is ``np.rot90(x, i % 4)`` with ``x = stamp`` for i < 4 and ``x = np.fliplr(stamp)``
    for i >= 4. They turn about the stamp's geometric centre (GalSim's true centre), so with an
    even stamp.size the recentred peak pixel (size // 2, size // 2) lands within one pixel of
    itself.
    """
    if n not in (1, 4, 8):
        raise ValueError(f"augment copies must be 1, 4 or 8, got {n}")
    return [np.rot90(np.fliplr(stamp) if i >= 4 else stamp, i % 4).copy() for i in range(n)]


@dataclass(frozen=True)
class CutoutOptions:
    """Processing of user cutouts (``real.fits`` / ``real.hdf5`` keys; arcsec, pixels)."""

    stamp_size: int
    pixel_scale: float  # working scale, arcsec/pixel
    resample: bool
    recenter: bool
    max_bad_fraction: float
    subtract_background: bool
    section: str  # "fits" or "hdf5", for messages
    augment: int = 0  # copies per cutout (`AUGMENT_COPIES`): 0 = off, 4 rotations, 8 with mirrors

    @classmethod
    def from_config(cls, config: dict, section: str) -> CutoutOptions:
        sec = config["real"][section]
        return cls(stamp_size=config["stamp"]["size"], pixel_scale=config["stamp"]["pixel_scale"],
                   resample=sec["resample"], recenter=sec["recenter"],
                   max_bad_fraction=sec["max_bad_fraction"],
                   subtract_background=sec["subtract_background"], section=section,
                   augment=sec["augment"])


def check_pixel_scale(scale: float, opts: CutoutOptions, where: str) -> bool:
    """True if cutouts at ``scale`` need resampling; InputDataError if they do and may not."""
    if abs(scale / opts.pixel_scale - 1) <= SCALE_RTOL:
        return False
    if not opts.resample:
        raise InputDataError(
            f"{where}: pixel scale {scale:.6g}\"/pixel differs from the working stamp.pixel_scale "
            f"{opts.pixel_scale:.6g}\"/pixel; set real.{opts.section}.resample: true to resample")
    return True


def working_shape(shape: tuple[int, int], scale: float, opts: CutoutOptions) -> tuple[int, int]:
    """(H, W) of a cutout of ``shape`` at ``scale`` once resampled to the working scale."""
    if abs(scale / opts.pixel_scale - 1) <= SCALE_RTOL:
        return int(shape[0]), int(shape[1])
    return tuple(int(np.floor(s * scale / opts.pixel_scale + 1e-6)) for s in shape)


def _target_peak(image: np.ndarray, bad: np.ndarray) -> tuple[int, int] | None:
    """(y, x) of the brightest smoothed pixel of the source nearest the cutout's centre, or None.

    Sources: smoothed pixels above `CENTER_THRESHOLD_SIGMA` robust sigmas of the smoothed good
    pixels, 8-connected regions of at least `CENTER_MIN_AREA_PIX` pixels; the one containing the
    centre pixel, else the one with a pixel nearest to it.
    """
    h, w = image.shape
    good = ~bad
    filled = np.where(bad, np.median(image[good]), image)
    smooth = ndimage.gaussian_filter(filled, CENTER_SMOOTH_PIX)
    sigma = float(robust_sigma(smooth[good]))
    if not sigma > 0:
        return None
    det = (smooth - np.median(smooth[good]) > CENTER_THRESHOLD_SIGMA * sigma) & good
    lab, n = ndimage.label(det, structure=np.ones((3, 3)))
    if n == 0:
        return None
    area = np.bincount(lab.ravel(), minlength=n + 1)
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - h // 2, xx - w // 2)
    ok = (lab > 0) & (area[lab] >= CENTER_MIN_AREA_PIX)
    if not ok.any():
        return None
    nearest = int(lab[ok][np.argmin(dist[ok])])
    y, x = np.unravel_index(int(np.argmax(np.where(lab == nearest, smooth, -np.inf))), smooth.shape)
    return int(y), int(x)


def center_crop(image: np.ndarray, bad: np.ndarray, size: int, recenter: bool
                ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Crop (padding with bad pixels where needed) a size x size stamp; return it and the shift.

    With ``recenter`` the target goes to pixel (size // 2, size // 2) (GalSim's centre
    convention): the source nearest the cutout's centre (`_target_peak`: not the brightest one,
    which may be a neighbour), at its brightest smoothed pixel; without a detected source, or
    without ``recenter``, the geometric centre.
    """
    h, w = image.shape
    cy, cx = h // 2, w // 2
    if recenter and np.any(~bad):
        peak = _target_peak(image, bad)
        if peak is not None:
            cy, cx = peak
    stamp, sbad = crop_at(image, bad, cy, cx, size)
    return stamp, sbad, cy - h // 2, cx - w // 2


def crop_at(image: np.ndarray, bad: np.ndarray, cy: int, cx: int, size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """The size x size stamp of ``image`` whose pixel (size // 2, size // 2) is (cy, cx), and its
    bad pixels; pixels beyond the image are 0 and bad."""
    h, w = image.shape
    y0, x0 = cy - size // 2, cx - size // 2
    stamp = np.zeros((size, size), dtype=np.float64)
    sbad = np.ones((size, size), dtype=bool)
    ys, xs = slice(max(y0, 0), min(y0 + size, h)), slice(max(x0, 0), min(x0 + size, w))
    ts = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    stamp[ts], sbad[ts] = image[ys, xs], bad[ys, xs]
    return stamp, sbad


class CutoutCollector:
    """Check, process and gather user cutouts; count rejections; write the stamp file.

    Parameters
    ----------
    opts : CutoutOptions
    n_max : int
        Stop accepting after this many stamps (``real.n``; with ``opts.augment`` the copies
        count, and the last cutout's copies are cut to fit).
    grouped : bool
        Label each stamp's galaxy (``group_id``) even without ``opts.augment``: the caller
        passes ``group`` to `add` (``real.hdf5.group_dataset``) [default: False].

    With ``opts.augment`` (4 or 8) or ``grouped``, stamps carry ``group_id`` (the accepted
    cutout's running index, or the ``group`` given to `add`) and ``augment_index`` (the copy,
    `dihedral_copies`), so compare keeps a galaxy's copies on one side of every split.

    PSFs: one for all stamps (`write`'s ``psf``) or one per cutout (`add`'s ``psf``), never
    both; a rejected cutout drops its PSF with it, and each copy's PSF is turned and mirrored
    as its stamp is, so ``/psf`` is per stamp (N, h, w) with a PSF per cutout or with
    ``opts.augment``.
    """

    def __init__(self, opts: CutoutOptions, n_max: int, grouped: bool = False) -> None:
        if opts.augment not in AUGMENT_COPIES:
            raise ValueError(f"real.{opts.section}.augment must be one of {AUGMENT_COPIES}, "
                             f"got {opts.augment!r}")
        self.opts, self.n_max = opts, int(n_max)
        self.grouped = bool(grouped or opts.augment)
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.labels: dict[str, list] = {k: [] for k in (
            "file_index", "index_in_file", "background", "noise_sigma", "n_bad_pixels",
            "center_dy", "center_dx", "sky_ok", "n_sky_pixels")}
        self.no_sky: list[tuple[int, str, bool]] = []  # (stamp, where, noise from a plane)
        if self.grouped:
            self.labels.update(group_id=[], augment_index=[])
        self.rejected: Counter = Counter()
        self.first_reject: dict[str, str] = {}
        self.n_seen = 0
        self.n_cutouts = 0  # cutouts accepted (each gives 1, 4 or 8 stamps)
        self.psfs: list[np.ndarray] = []  # per stamp, when `add` is given each cutout's PSF

    @property
    def full(self) -> bool:
        return len(self.images) >= self.n_max

    def reject(self, reason: str, where: str) -> None:
        """Count a cutout refused for ``reason`` (``where`` names it in the log and messages)."""
        self.rejected[reason] += 1
        self.first_reject.setdefault(reason, where)
        logger.warning("rejected %s: %s", where, reason.replace("_", " "))

    def add(self, image: np.ndarray, bad: np.ndarray | None, scale: float, file_index: int,
            index: int, where: str, noise: np.ndarray | None = None,
            group: int | None = None, psf: tuple[np.ndarray, float, str] | None = None) -> None:
        """Process one 2-D cutout at ``scale`` arcsec/pixel (``where`` names it in messages).

        ``bad``: non-zero = bad pixel; ``noise``: per-pixel noise sigma of the cutout in counts
        (`refinegan.target.planes.sigma_from_plane`; NaN = bad pixel), which then sets the
        ``noise_sigma`` label instead of the sky estimate; ``group``: its ``group_id`` when the
        collector is ``grouped`` [default: its running index among accepted cutouts]; ``psf``:
        the cutout's own PSF (image (h, w), its pixel scale in arcsec/pixel, and where it is
        for messages), checked, centred and resampled by `prepare_psf` once the cutout is
        accepted (a rejected cutout's PSF is dropped unchecked). With ``opts.augment`` the
        cutout gives 4 or 8 stamps (`dihedral_copies`), each with its PSF turned the same way.
        """
        if (psf is None) != (not self.psfs) and self.images:
            raise ValueError("a PSF for every cutout or for none (CutoutCollector.add)")
        self.n_seen += 1
        image = np.asarray(image, dtype=np.float64)
        bad = ~np.isfinite(image) | (np.zeros(image.shape, bool) if bad is None else bad != 0)
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float64)
            bad |= ~np.isfinite(noise)
        if bad.all():
            self.reject("all_nan", f"{where} (all pixels NaN or masked)")
            return
        if abs(scale / self.opts.pixel_scale - 1) > SCALE_RTOL:
            if noise is not None:
                raise InputDataError(
                    f"{where}: a noise plane (real.{self.opts.section}.noise_*) of cutouts that are "
                    "resampled is not supported (resampling correlates the noise, and the plane is "
                    "at the input pixel scale); drop the noise plane (the noise is then measured "
                    "on the resampled sky) or give cutouts at stamp.pixel_scale")
            image, bad = resample_cutout(image, bad, scale, self.opts.pixel_scale)
        stamp, sbad, dy, dx = center_crop(image, bad, self.opts.stamp_size, self.opts.recenter)
        if max(abs(dy), abs(dx)) > RECENTER_MAX_FRACTION * self.opts.stamp_size:
            self.reject("recenter_far", f"{where} (the source nearest the centre is ({dy:+d}, "
                         f"{dx:+d}) pixels off, more than {RECENTER_MAX_FRACTION:g} of the stamp)")
            return
        if sbad.mean() > self.opts.max_bad_fraction:
            self.reject("bad_fraction", f"{where} ({sbad.mean():.0%} bad pixels > "
                         f"real.{self.opts.section}.max_bad_fraction)")
            return
        sky = estimate_sky(stamp, sbad)
        bkg, sigma = (sky.background if sky.ok else float("nan")), sky.noise_sigma
        if noise is not None:
            h, w = image.shape
            sigma = plane_sigma(crop_at(noise, bad, h // 2 + dy, w // 2 + dx, self.opts.stamp_size)[0],
                                sky.sky, ~sbad)
        if sky.ok and self.opts.subtract_background:  # (without enough sky: see no_sky below)
            stamp = stamp - bkg
        stamp[sbad] = 0.0
        n_copies = max(1, self.opts.augment)
        gid = self.n_cutouts if group is None else int(group)
        psfs = [None] * n_copies
        if psf is not None:
            psfs = dihedral_copies(self.copy_psf(prepare_psf(*psf[:2], self.opts, psf[2])), n_copies)
        for k, (st, sb, ps) in enumerate(zip(dihedral_copies(stamp, n_copies),
                                             dihedral_copies(sbad, n_copies), psfs, strict=True)):
            if self.full:
                break
            if not sky.ok:
                self.no_sky.append((len(self.images), where, noise is not None))
            self.images.append(st.astype(np.float32))
            self.masks.append(sb.astype(np.uint8))
            if ps is not None:
                self.psfs.append(ps)
            for key, value in (("file_index", file_index), ("index_in_file", index),
                               ("background", bkg), ("noise_sigma", sigma),
                               ("n_bad_pixels", int(sbad.sum())), ("center_dy", dy),
                               ("center_dx", dx), ("sky_ok", int(sky.ok)),
                               ("n_sky_pixels", sky.n_sky)):
                self.labels[key].append(value)
            if self.grouped:
                self.labels["group_id"].append(gid)
                self.labels["augment_index"].append(k)
        self.n_cutouts += 1

    def copy_psf(self, psf: np.ndarray) -> np.ndarray:
        """A prepared PSF ready to turn with its stamp's copies: squared (`square_psf`) with
        ``opts.augment`` on, unchanged without."""
        return square_psf(psf) if self.opts.augment and psf.shape[0] != psf.shape[1] else psf

    def stamp_psfs(self, psf: np.ndarray | None) -> np.ndarray | None:
        """``/psf``: the per-cutout PSFs given to `add`, one per stamp (N, h, w); else ``psf``
        (one prepared (h, w) image, or None), turned per copy (N, h, w) with ``opts.augment``."""
        if self.psfs:
            if psf is not None:
                raise ValueError("a PSF per cutout and one for all stamps (CutoutCollector.write)")
            return np.stack(self.psfs)
        if psf is None or not self.opts.augment:
            return psf
        copies = dihedral_copies(self.copy_psf(np.asarray(psf, np.float64)), self.opts.augment)
        return np.stack([copies[k] for k in self.labels["augment_index"]])

    def write(self, out: str | os.PathLike, config: RunConfig, source: str, files: list[str],
              input_scale: float, psf: np.ndarray | None = None,
              units: PixelUnits | None = None) -> Path:
        """Write the gathered stamps (and their PSFs, `stamp_psfs`: ``psf`` is one prepared
        image for all, see `prepare_psf`) in ``units`` (the attributes of ``/images``; counts
        when None); error if none survived."""
        if not self.images:
            reasons = "; ".join(f"{n} {r.replace('_', ' ')} (e.g. {self.first_reject[r]})"
                                for r, n in self.rejected.items())
            raise InputDataError(
                f"no usable stamps in {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}: "
                f"{reasons or 'no cutouts'}; expected stamps with at most "
                f"real.{self.opts.section}.max_bad_fraction = {self.opts.max_bad_fraction:g} "
                "NaN, inf or masked pixels")
        n = len(self.images)
        labels = {"id": np.arange(n, dtype=np.int64)}
        for key, vals in self.labels.items():
            dtype = np.float64 if key in ("background", "noise_sigma") else np.int64
            labels[key] = np.asarray(vals, dtype=dtype)
        attrs = {"files": list(files), "n_input": self.n_seen, "n_rejected": sum(self.rejected.values()),
                 "input_pixel_scale": float(input_scale), "resampled": bool(
                     abs(input_scale / self.opts.pixel_scale - 1) > SCALE_RTOL), "is_mock": False}
        for reason in ("all_nan", "bad_fraction", "recenter_far", "too_small"):
            attrs[f"n_rejected_{reason}"] = int(self.rejected.get(reason, 0))
        attrs["n_sky_too_few"] = len(self.no_sky)
        self._fill_no_sky_noise(labels["noise_sigma"], labels["sky_ok"])
        if self.grouped:
            attrs.update(augment=int(self.opts.augment), n_cutouts=int(self.n_cutouts))
        path = write_stamps(out, np.stack(self.images), labels, domain="real",
                            pixel_scale=self.opts.pixel_scale, source=source, config=config,
                            seed=config.seed, psf=self.stamp_psfs(psf), mask=np.stack(self.masks),
                            extra_attrs=attrs,
                            image_attrs=None if units is None else units.image_attrs())
        logger.info("%d stamps kept of %d (%d rejected) -> %s", n, self.n_seen,
                    attrs["n_rejected"], path)
        return path

    def _fill_no_sky_noise(self, noise_sigma: np.ndarray, sky_ok: np.ndarray) -> None:
        """Log the stamps without enough sky (`refinegan.target.sky.MIN_SKY_PIXELS`,
        `MIN_SKY_FRACTION`); those without a noise plane take the median ``noise_sigma`` of the
        stamps with enough sky (their own sky estimate when there is none), in place."""
        if not self.no_sky:
            return
        no_plane = [i for i, _, from_plane in self.no_sky if not from_plane]
        fill = "their noise_sigma from the noise plane"
        if no_plane and sky_ok.any():
            typical = float(np.median(noise_sigma[sky_ok == 1]))
            noise_sigma[no_plane] = typical
            fill = (f"the {len(no_plane)} without a noise plane take the median noise_sigma of the "
                    f"others, {typical:.4g}")
        elif no_plane:
            fill = ("no stamp has enough sky, so their noise_sigma is measured on what little sky "
                    "they have: unreliable")
        logger.warning(
            "%d of %d stamps have too few sky pixels outside the sources (fewer than %d, or %g of "
            "their good pixels; e.g. %s): their background is not subtracted (label background "
            "NaN, sky_ok 0); %s", len(self.no_sky), len(self.images), MIN_SKY_PIXELS,
            MIN_SKY_FRACTION, self.no_sky[0][1], fill)
