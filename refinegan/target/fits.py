"""``real.source: fits``: the user's FITS cutouts (a directory, a glob, or one file / cube).

Every file must hold floating-point pixels in the chosen HDU (``real.fits.hdu``; default the
first HDU with data): 2-D (one cutout) or 3-D (a cube of N cutouts), the same for all files.
The pixel scale comes from ``real.fits.pixel_scale`` when set, otherwise from the header
(``PIXSCALE`` / ``PIXSCAL1`` / ``SECPIX`` in arcsec, the WCS ``CD`` matrix or ``CDELT`` with
``PC``, in ``CUNIT`` or degrees)
and must agree across files, as must ``BUNIT``: ``/images`` carries it (`refinegan.units`), or
``counts`` once ``real.fits.flux_scale`` (a number, 1 included) has multiplied the pixels into the sims' counts.
An optional mask HDU (``real.fits.mask_hdu``, its bad bits ``mask_bits``) and noise plane
(``noise_hdu``, ``noise_kind``) are read with the pixels (refinegan.target.planes).
Cutouts then go through refinegan.target.cutouts.CutoutCollector
(``real.fits.augment``: 4 or 8 rotated / mirrored copies of each, labelled ``group_id``).
Each failure names the file (and HDU) and what was expected; nothing is written then.
"""

from __future__ import annotations

import glob
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from ..config import RunConfig
from ..errors import ConfigError, InputDataError
from ..units import normalise_unit, pixel_units, same_units, scale_pixels
from .cutouts import (
    CutoutCollector,
    CutoutOptions,
    check_pixel_scale,
    working_shape,
)
from .planes import bad_from_mask, check_plane_shape, resolve_mask_bits, sigma_from_plane
from .psf_image import check_psf_cube, check_psf_image, prepare_psf
from .resample import SCALE_RTOL

__all__ = ["prepare_fits", "list_fits_files", "read_fits_cutouts", "header_pixel_scale"]

logger = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")


def list_fits_files(path: str | None) -> list[Path]:
    """The FITS files ``real.fits.path`` names: a directory, a glob or one file (sorted)."""
    if not path:
        raise ConfigError("real.fits.path is not set: give a directory, a glob or one FITS file")
    if any(ch in path for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(path))
        if not files:
            raise InputDataError(f"real.fits.path {path!r}: the glob matches no files")
        return files
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.name.lower().endswith(FITS_SUFFIXES))
        if not files:
            raise InputDataError(
                f"{p}: directory holds no FITS files ({', '.join('*' + s for s in FITS_SUFFIXES)})")
        return files
    if not p.exists():
        raise InputDataError(f"{p}: no such file or directory (real.fits.path)")
    return [p]


def header_pixel_scale(header: fits.Header, where: str) -> float | None:
    """Pixel scale in arcsec/pixel from a FITS header, or None if it says nothing.

    ``PIXSCALE`` / ``PIXSCAL1`` / ``SECPIX`` (arcsec), else the celestial WCS (``CD``, or ``CDELT``
    with ``PC``, in ``CUNIT``) through astropy's ``proj_plane_pixel_scales``; non-square pixels
    are refused (the cutouts would be stretched), whichever keywords say so.
    """
    for key in ("PIXSCALE", "PIXSCAL1", "SECPIX"):
        if key in header:
            return float(header[key])
    if not any(k in header for k in ("CD1_1", "CD2_2", "CDELT1", "CDELT2")):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's notes on a cutout's partial WCS
        w = WCS(header, naxis=2)
    units = [u.Unit(c) if str(c) else u.deg for c in w.wcs.cunit]
    s1, s2 = (float((v * unit).to_value(u.arcsec))
              for v, unit in zip(proj_plane_pixel_scales(w), units, strict=True))
    if abs(s1 / s2 - 1) > SCALE_RTOL:
        raise InputDataError(f"{where}: pixels are not square ({s1:.6g}\" x {s2:.6g}\" from the WCS); "
                             "expected equal pixel scales on both axes")
    return float(np.sqrt(s1 * s2))


def _describe_hdus(hdul: fits.HDUList) -> str:
    parts = []
    for i, h in enumerate(hdul):
        shape = "no data" if h.data is None else "x".join(str(s) for s in h.data.shape)
        parts.append(f"{i} {h.name or '?'} ({type(h).__name__}, {shape})")
    return "; ".join(parts)


def _select_hdu(hdul: fits.HDUList, hdu: int | str | None, path: Path, what: str):
    if hdu is None:
        for i, h in enumerate(hdul):
            if isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) and h.data is not None:
                return i, h
        raise InputDataError(f"{path}: no HDU holds image data (HDUs: {_describe_hdus(hdul)})")
    try:
        h = hdul[hdu]
    except (KeyError, IndexError):
        raise InputDataError(f"{path}: HDU {hdu!r} ({what}) does not exist; expected one of "
                             f"{_describe_hdus(hdul)}") from None
    if not isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) or h.data is None:
        raise InputDataError(f"{path}: HDU {hdu!r} ({what}) holds no image data; HDUs: "
                             f"{_describe_hdus(hdul)}")
    return hdul.index_of(hdu) if not isinstance(hdu, int) else hdu, h


def read_fits_cutouts(path: Path, hdu: int | str | None, mask_hdu: int | str | None,
                      what: str = "a 2-D cutout (H, W) or a 3-D cube (N, H, W)"
                      ) -> tuple[np.ndarray, np.ndarray | None, fits.Header, int]:
    """Pixels (2-D or 3-D), optional mask, header and HDU index of one file, checked."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False) as hdul:
                index, h = _select_hdu(hdul, hdu, path, "real.fits.hdu")
                data, header = np.array(h.data), h.header.copy()
                mask = None
                if mask_hdu is not None:
                    _, mh = _select_hdu(hdul, mask_hdu, path, "real.fits.mask_hdu")
                    mask = np.array(mh.data)
    except InputDataError:
        raise
    except Exception as err:  # astropy raises OSError, ValueError, TypeError... on corrupt files
        raise InputDataError(f"{path}: not a readable FITS file ({type(err).__name__}: {err})") from None
    for w in caught:
        if "truncated" in str(w.message).lower():
            raise InputDataError(f"{path}: corrupt FITS file ({w.message})")
        logger.warning("%s: %s", path, w.message)
    where = f"{path} HDU {index}"
    if data.dtype.kind != "f":
        raise InputDataError(f"{where}: pixels are {data.dtype.name} (BITPIX {header.get('BITPIX')}); "
                             "expected floating-point pixels (BITPIX -32 or -64)")
    if data.ndim not in (2, 3, 4):
        raise InputDataError(f"{where}: data have shape {data.shape}; expected {what}")
    if mask is not None and mask.shape != data.shape:
        raise InputDataError(f"{path} HDU {mask_hdu!r}: mask shape {mask.shape} differs from the "
                             f"pixels' {data.shape}")
    return data, mask, header, index


def _pixel_scale(configured: float | None, header: fits.Header, where: str) -> float:
    """``real.fits.pixel_scale`` when set (warning if the header disagrees), else the header's."""
    head = header_pixel_scale(header, where)
    if configured is None:
        if head is None:
            raise InputDataError(f"{where}: no pixel scale in the header (PIXSCALE, CD or CDELT); "
                                 "set real.fits.pixel_scale (arcsec/pixel)")
        return head
    if head is not None and abs(head / configured - 1) > SCALE_RTOL:
        logger.warning("%s: header pixel scale %.6g\" overridden by real.fits.pixel_scale %.6g\"",
                       where, head, configured)
    return configured


def _read_psf(path: str, configured_scale: float | None) -> tuple[np.ndarray, float, str]:
    """The pixels (a 2-D PSF image, or a 3-D cube of one PSF per cutout), the pixel scale
    (arcsec/pixel) and the name (file and HDU) of ``real.fits.psf_path``; the scale is
    ``real.fits.psf_pixel_scale`` (a warning if the header says otherwise) or the header's,
    never assumed."""
    psf_file = Path(path)
    if not psf_file.is_file():
        raise InputDataError(f"{psf_file}: no such PSF file (real.fits.psf_path)")
    data, _, header, index = read_fits_cutouts(
        psf_file, None, None, what="a 2-D PSF image or a 3-D cube (N, h, w) of one PSF per cutout")
    where = f"{psf_file} HDU {index}"
    if data.ndim != 3:
        check_psf_image(data, where)
    head = header_pixel_scale(header, where)
    if configured_scale is None and head is None:
        raise InputDataError(f"{where}: the PSF image has no pixel scale in its header (PIXSCALE, "
                             "CD or CDELT); set real.fits.psf_pixel_scale (arcsec/pixel)")
    if configured_scale is not None and head is not None and abs(head / configured_scale - 1) > SCALE_RTOL:
        logger.warning("%s: header pixel scale %.6g\" overridden by real.fits.psf_pixel_scale %.6g\"",
                       where, head, configured_scale)
    return data, float(configured_scale or head), where


def _count_cutouts(files: list[Path], sec: dict) -> int:
    """The number of input cutouts in ``files`` (``real.fits.hdu``, ``band``), from their
    headers: what a PSF cube (``real.fits.psf_path``) must hold one PSF each of."""
    total = 0
    for path in files:
        shape = None
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                if sec["hdu"] is None:
                    shape = next((h.shape for h in hdul if isinstance(
                        h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) and h.shape), None)
                else:
                    shape = hdul[sec["hdu"]].shape
        except Exception:  # unreadable, no such HDU: read it as the cutouts are, for the error
            pass
        if not shape or len(shape) not in (2, 3, 4):
            shape = read_fits_cutouts(path, sec["hdu"], None)[0].shape
        data, _ = _select_band(np.broadcast_to(np.float32(0), shape), None, sec["band"], str(path))
        total += 1 if data.ndim == 2 else data.shape[0]
    return total


def _select_band(data: np.ndarray, mask: np.ndarray | None, band: int | None, where: str):
    """``real.fits.band``: the band's plane of a multi-band file ((bands, H, W) or
    (bands, N, H, W)); without it a file must be a cutout (H, W) or a stack (N, H, W)."""
    if band is None:
        if data.ndim == 4:
            raise InputDataError(f"{where}: data have shape {data.shape} (bands, N, H, W?); set "
                                 "real.fits.band to the band to use")
        return data, mask
    if data.ndim < 3:
        raise InputDataError(f"{where}: real.fits.band = {band} but the data are one 2-D cutout "
                             f"{data.shape}; expected (bands, H, W) or (bands, N, H, W)")
    if band >= data.shape[0]:
        raise InputDataError(f"{where}: real.fits.band = {band} but the file has {data.shape[0]} "
                             f"bands (shape {data.shape})")
    return data[band], None if mask is None else mask[band]


def _check_unit(header: fits.Header, where: str, first: tuple[str, str] | None) -> tuple[str, str]:
    """(BUNIT of ``header`` as written, ``where``) of the first file; a later file must declare the
    same unit (`refinegan.units.same_units`), or none if the first declared none."""
    raw = str(header.get("BUNIT", "")).strip()
    if first is None:
        return raw, where
    if not same_units(normalise_unit(raw), normalise_unit(first[0])):
        raise InputDataError(f"{where}: BUNIT {raw!r} differs from {first[0]!r} of {first[1]}; "
                             "expected all files in one unit")
    return first


def _read_planes(path: Path, mask: np.ndarray | None, shape: tuple, sec: dict
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``real.fits.mask_bits`` and ``noise_hdu`` / ``noise_kind`` (`refinegan.target.planes`):
    the bad pixels of ``mask`` (bool, or None without a mask) and the per-pixel noise sigma
    (the pixels' unit, or None without a noise HDU) of one file whose pixels have ``shape``."""
    bad = None
    if mask is not None:
        where = f"{path} HDU {sec['mask_hdu']!r}"
        bits = sec["mask_bits"]
        names = isinstance(bits, list | tuple) and any(isinstance(b, str) for b in bits)
        cards = _read_hdu(path, sec["mask_hdu"], "real.fits.mask_hdu").header if names else None
        bitmask = resolve_mask_bits(bits, cards, where, "real.fits.mask_bits")
        bad = bad_from_mask(mask, bitmask, where, "real.fits.mask_bits")
    noise = None
    if sec["noise_hdu"] is not None:
        plane = _read_hdu(path, sec["noise_hdu"], "real.fits.noise_hdu").data
        where = f"{path} HDU {sec['noise_hdu']!r}"
        check_plane_shape(plane.shape, shape, where, "real.fits.noise_hdu")
        if plane.dtype.kind not in "iuf":
            raise InputDataError(f"{where} (real.fits.noise_hdu): values are {plane.dtype.name}; "
                                 f"expected numbers ({sec['noise_kind']})")
        noise = sigma_from_plane(plane, sec["noise_kind"])
    return bad, noise


def _read_hdu(path: Path, hdu: int | str, key: str) -> fits.ImageHDU:
    """A copy of one image HDU (data and header) of ``path`` (``key`` names it in errors)."""
    try:
        with fits.open(path, memmap=False) as hdul:
            _, h = _select_hdu(hdul, hdu, path, key)
            return fits.ImageHDU(np.array(h.data), h.header.copy())
    except InputDataError:
        raise
    except Exception as err:  # astropy raises OSError, ValueError, TypeError... on corrupt files
        raise InputDataError(f"{path}: not a readable FITS file ({type(err).__name__}: {err})") from None


def prepare_fits(config: RunConfig | dict, out: str | os.PathLike, progress: bool = False) -> Path:
    """Write the user's FITS cutouts (``real.fits``) as the target stamp file ``out``.

    Parameters
    ----------
    config : RunConfig or dict
        Run configuration: a `RunConfig`, or a dict (validated once, defaults filled).
    out : str or Path
        Output stamp file, domain ``real``.
    progress : bool
        Unused (reading is fast); accepted for the common stage signature.
    """
    config = RunConfig.of(config)
    sec = config["real"]["fits"]
    opts = CutoutOptions.from_config(config, "fits")
    files = list_fits_files(sec["path"])
    if sec["mask_bits"] is not None and sec["mask_hdu"] is None:
        raise ConfigError("real.fits.mask_bits is set but real.fits.mask_hdu is not; give the HDU "
                          "of the mask plane the bits refer to")
    collector = CutoutCollector(opts, config["real"]["n"])
    psf, psf_scale, psf_where = (_read_psf(sec["psf_path"], sec["psf_pixel_scale"])
                                 if sec["psf_path"] else (None, None, None))
    if psf is not None and psf.ndim == 3:  # one PSF per input cutout, in the files' sorted order
        check_psf_cube(psf, _count_cutouts(files, sec), psf_where, "real.fits.psf_path",
                       f"those of the {len(files)} file(s) of real.fits.path, in sorted order")
    ndim0 = scale0 = unit0 = None
    offset = 0  # index of the file's first cutout among all input cutouts (the PSF cube's axis 0)
    for fi, path in enumerate(files):
        if collector.full:
            break
        data, mask, header, index = read_fits_cutouts(path, sec["hdu"], sec["mask_hdu"])
        where = f"{path} HDU {index}"
        mask, noise = _read_planes(path, mask, data.shape, sec)
        if noise is not None:
            noise = _select_band(noise, None, sec["band"], where)[0]
        data, mask = _select_band(data, mask, sec["band"], where)
        unit0 = _check_unit(header, where, unit0)
        data = scale_pixels(data, sec["flux_scale"])
        noise = None if noise is None else scale_pixels(noise, sec["flux_scale"])  # sigma: linear
        if ndim0 is None:
            ndim0, first = data.ndim, where
        elif data.ndim != ndim0:
            raise InputDataError(f"{where}: {data.ndim}-D data among {ndim0}-D files (first: {first}); "
                                 "expected all files 2-D cutouts or all 3-D cubes")
        scale = _pixel_scale(sec["pixel_scale"], header, where)
        if scale0 is None:
            scale0, scale_file = scale, where
            check_pixel_scale(scale, opts, where)
        elif abs(scale / scale0 - 1) > SCALE_RTOL:
            raise InputDataError(f"{where}: pixel scale {scale:.6g}\"/pixel differs from "
                                 f"{scale0:.6g}\"/pixel of {scale_file}; expected one pixel scale")
        cube = data[None] if data.ndim == 2 else data
        mcube = None if mask is None else (mask[None] if mask.ndim == 2 else mask)
        ncube = None if noise is None else (noise[None] if noise.ndim == 2 else noise)
        h_out, w_out = working_shape(cube.shape[1:], scale, opts)
        if min(h_out, w_out) < opts.stamp_size:  # rejected and counted, as NaN stamps are
            for i in range(cube.shape[0]):
                collector.n_seen += 1
                collector.reject("too_small", f"{where} cutout {i} ({cube.shape[1]}x{cube.shape[2]} "
                                 f"pixels at {scale:.6g}\"/pixel, {h_out}x{w_out} at the working "
                                 f"scale: smaller than stamp.size {opts.stamp_size})")
            offset += cube.shape[0]
            continue
        for i in range(cube.shape[0]):
            if collector.full:
                break
            collector.add(cube[i], None if mcube is None else mcube[i], scale, fi, i,
                          f"{where} cutout {i}", noise=None if ncube is None else ncube[i],
                          psf=None if psf is None or psf.ndim == 2 else (
                              psf[offset + i], psf_scale, f"{psf_where} PSF {offset + i}"))
        offset += cube.shape[0]
    one_psf = prepare_psf(psf, psf_scale, opts, psf_where) if psf is not None and psf.ndim == 2 else None
    return collector.write(out, config, f"user FITS cutouts: {sec['path']}", [str(f) for f in files],
                           scale0, psf=one_psf,
                           units=pixel_units(unit0[0], sec["flux_scale"], unit0[1],
                                             "real.fits.flux_scale"))
