"""``real.source: hdf5``: the user's cutouts in one HDF5 file (``real.hdf5.path`` / ``dataset``).

The dataset holds floating-point (N, H, W) stamps or one (H, W) stamp. The pixel scale is
``real.hdf5.pixel_scale`` when set, otherwise a ``pixel_scale`` attribute (arcsec/pixel) of the
dataset or of the file (a refinegan stamp file has one). An optional ``mask_dataset`` of the same
shape marks bad pixels (non-zero, or the bits of ``mask_bits``), an optional ``noise_dataset``
gives the noise (``noise_kind``; refinegan.target.planes). The dataset's ``units`` (or ``unit``,
``BUNIT``) attribute is carried to ``/images``, or ``counts`` once ``real.hdf5.flux_scale`` is set (a number, 1 included)
has multiplied the pixels (and the noise plane's sigma) into the sims' counts
(`refinegan.units`). The same checks and processing as the FITS source follow
(refinegan.target.cutouts.CutoutCollector, ``augment`` included); failures name the file and
dataset. An optional ``group_dataset`` (N,) of integers names each stamp's galaxy (label
``group_id``: rotated or flipped copies of one galaxy already in the file share one, so compare
never splits them).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np

from ..config import RunConfig
from ..errors import ConfigError, InputDataError
from ..units import pixel_units, scale_pixels
from .cutouts import (
    CutoutCollector,
    CutoutOptions,
    check_pixel_scale,
    working_shape,
)
from .planes import bad_from_mask, check_plane_shape, resolve_mask_bits, sigma_from_plane
from .psf_image import check_psf_cube, check_psf_image, prepare_psf

__all__ = ["prepare_hdf5", "read_hdf5_cutouts"]

logger = logging.getLogger(__name__)

READ_BLOCK = 256  # stamps read from the file at a time
UNIT_ATTRS = ("units", "unit", "BUNIT", "bunit")  # attributes of the dataset naming its pixel unit


def _declared_unit(ds: h5py.Dataset) -> str | None:
    """The first `UNIT_ATTRS` attribute of ``ds`` (a refinegan stamp file's ``units``), or None."""
    for key in UNIT_ATTRS:
        if key in ds.attrs:
            value = ds.attrs[key]
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def _datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _dataset(f: h5py.File, path: Path, name: str, key: str) -> h5py.Dataset:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        what = "is a group, not a dataset" if obj is not None else "does not exist"
        raise InputDataError(f"{path}: dataset {name!r} ({key}) {what}; datasets present: "
                             f"{_datasets(f)[:20]}")
    return obj


def read_hdf5_cutouts(f: h5py.File, path: Path, dataset: str, mask_dataset: str | None,
                      pixel_scale: float | None) -> tuple[h5py.Dataset, h5py.Dataset | None, float]:
    """The checked pixel dataset, optional mask dataset and pixel scale of an open file."""
    ds = _dataset(f, path, dataset, "real.hdf5.dataset")
    where = f"{path} dataset {dataset!r}"
    if ds.dtype.kind != "f":
        raise InputDataError(f"{where}: pixels are {ds.dtype.name}; expected floating-point pixels")
    if ds.ndim not in (2, 3):
        raise InputDataError(f"{where}: data have shape {ds.shape}; expected a 2-D stamp (H, W) "
                             "or a 3-D stack (N, H, W)")
    mask = None
    if mask_dataset is not None:
        mask = _dataset(f, path, mask_dataset, "real.hdf5.mask_dataset")
        if mask.shape != ds.shape:
            raise InputDataError(f"{path} dataset {mask_dataset!r}: mask shape {mask.shape} "
                                 f"differs from the pixels' {ds.shape}")
    scale = pixel_scale
    if scale is None:
        for attrs in (ds.attrs, f.attrs):
            if "pixel_scale" in attrs:
                scale = float(attrs["pixel_scale"])
                break
    if scale is None:
        raise InputDataError(f"{where}: no pixel_scale attribute on the dataset or file; set "
                             "real.hdf5.pixel_scale (arcsec/pixel)")
    if not (np.isfinite(scale) and scale > 0):
        raise InputDataError(f"{where}: pixel scale must be a positive number, got {scale!r}")
    return ds, mask, scale


def _group_labels(f: h5py.File, path: Path, name: str | None, n: int) -> np.ndarray | None:
    """``real.hdf5.group_dataset``: one integer galaxy label per stamp (N,), or None."""
    if not name:
        return None
    gds = _dataset(f, path, name, "real.hdf5.group_dataset")
    if gds.dtype.kind not in "iu" or gds.shape != (n,):
        raise InputDataError(f"{path} dataset {name!r} (real.hdf5.group_dataset): {gds.dtype.name} "
                             f"of shape {gds.shape}; expected one integer galaxy label per stamp, "
                             f"shape ({n},)")
    return np.asarray(gds[()], dtype=np.int64)


def _plane_reader(f: h5py.File, path: Path, ds: h5py.Dataset, mask: h5py.Dataset | None,
                  sec: dict):
    """``real.hdf5.mask_bits`` and ``noise_dataset`` / ``noise_kind`` (`refinegan.target.planes`):
    a function of a block's slice giving its bad pixels (bool, or None without a mask) and
    per-pixel noise sigma (the pixels' unit, or None without a noise dataset)."""
    bitmask = None
    if mask is not None:
        cards = {**f.attrs, **mask.attrs}  # MP_<NAME> attributes of the mask dataset or the file
        bitmask = resolve_mask_bits(sec["mask_bits"], cards, f"{path} dataset "
                                    f"{sec['mask_dataset']!r}", "real.hdf5.mask_bits")
    noise = None
    if sec["noise_dataset"] is not None:
        noise = _dataset(f, path, sec["noise_dataset"], "real.hdf5.noise_dataset")
        where = f"{path} dataset {sec['noise_dataset']!r}"
        check_plane_shape(noise.shape, ds.shape, where, "real.hdf5.noise_dataset")
        if noise.dtype.kind not in "iuf":
            raise InputDataError(f"{where} (real.hdf5.noise_dataset): values are "
                                 f"{noise.dtype.name}; expected numbers ({sec['noise_kind']})")

    def read(sl):
        bad = None if mask is None else bad_from_mask(
            mask[()][None] if ds.ndim == 2 else mask[sl],
            bitmask, f"{path} dataset {sec['mask_dataset']!r}", "real.hdf5.mask_bits")
        sigma = None if noise is None else sigma_from_plane(
            noise[()][None] if ds.ndim == 2 else noise[sl], sec["noise_kind"])
        return bad, sigma

    return read


def _psf_dataset(f: h5py.File, path: Path, sec: dict, n: int
                 ) -> tuple[h5py.Dataset | None, float | None, str | None]:
    """``real.hdf5.psf_dataset``: the dataset (one 2-D PSF image, or a cube (N, h, w) of one PSF
    per stamp of ``real.hdf5.dataset``, N = ``n``), its pixel scale in arcsec/pixel
    (``real.hdf5.psf_pixel_scale``, else its ``pixel_scale`` attribute) and its name; Nones
    without one."""
    if not sec["psf_dataset"]:
        return None, None, None
    pds = _dataset(f, path, sec["psf_dataset"], "real.hdf5.psf_dataset")
    where = f"{path} dataset {sec['psf_dataset']!r}"
    if pds.ndim == 3:
        check_psf_cube(pds, n, where, "real.hdf5.psf_dataset", f"the stamps of dataset {sec['dataset']!r}")
    else:
        check_psf_image(pds[()], where)
    scale = sec["psf_pixel_scale"] or pds.attrs.get("pixel_scale")
    if scale is None:
        raise InputDataError(f"{where}: the PSF has no pixel_scale attribute; set "
                             "real.hdf5.psf_pixel_scale (arcsec/pixel)")
    return pds, float(scale), where


def prepare_hdf5(config: RunConfig | dict, out: str | os.PathLike, progress: bool = False) -> Path:
    """Write the user's HDF5 stamps (``real.hdf5``) as the target stamp file ``out``.

    Parameters
    ----------
    config : RunConfig or dict
        Run configuration: a `RunConfig`, or a dict (validated once, defaults filled).
    out : str or Path
        Output stamp file, domain ``real``.
    progress : bool
        Unused; accepted for the common stage signature.
    """
    config = RunConfig.of(config)
    sec = config["real"]["hdf5"]
    if not sec["path"]:
        raise ConfigError("real.hdf5.path is not set: give the path of your HDF5 file")
    path = Path(sec["path"])
    if not path.exists():
        raise InputDataError(f"{path}: no such file (real.hdf5.path)")
    if sec["mask_bits"] is not None and sec["mask_dataset"] is None:
        raise ConfigError("real.hdf5.mask_bits is set but real.hdf5.mask_dataset is not; give the "
                          "dataset of the mask plane the bits refer to")
    opts = CutoutOptions.from_config(config, "hdf5")
    collector = CutoutCollector(opts, config["real"]["n"], grouped=bool(sec["group_dataset"]))
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise InputDataError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        ds, mask, scale = read_hdf5_cutouts(f, path, sec["dataset"], sec["mask_dataset"],
                                            sec["pixel_scale"])
        where = f"{path} dataset {sec['dataset']!r}"
        check_pixel_scale(scale, opts, where)
        shape = ds.shape[-2:]
        h_out, w_out = working_shape(shape, scale, opts)
        if min(h_out, w_out) < opts.stamp_size:
            raise InputDataError(
                f"{where}: stamps are {shape[0]}x{shape[1]} pixels at {scale:.6g}\"/pixel "
                f"({h_out}x{w_out} at the working scale), smaller than the working stamp size "
                f"{opts.stamp_size} (stamp.size)")
        planes = _plane_reader(f, path, ds, mask, sec)
        n = 1 if ds.ndim == 2 else ds.shape[0]
        groups = _group_labels(f, path, sec["group_dataset"], n)
        pds, psf_scale, where_psf = _psf_dataset(f, path, sec, n)
        cube = pds is not None and pds.ndim == 3  # one PSF per stamp of the dataset
        for start in range(0, n, READ_BLOCK):
            if collector.full:
                break
            sl = slice(start, min(start + READ_BLOCK, n))
            block = scale_pixels(ds[()][None] if ds.ndim == 2 else ds[sl], sec["flux_scale"])
            mblock, nblock = planes(sl)
            nblock = None if nblock is None else scale_pixels(nblock, sec["flux_scale"])
            pblock = pds[sl] if cube else None
            for i in range(block.shape[0]):
                if collector.full:
                    break
                collector.add(block[i], None if mblock is None else mblock[i], scale, 0, start + i,
                              f"{where} stamp {start + i}",
                              noise=None if nblock is None else nblock[i],
                              group=None if groups is None else int(groups[start + i]),
                              psf=(pblock[i], psf_scale, f"{where_psf} PSF {start + i}") if cube
                              else None)
        psf = prepare_psf(pds[()], psf_scale, opts, where_psf) if pds is not None and not cube else None
        units = pixel_units(_declared_unit(ds), sec["flux_scale"], where, "real.hdf5.flux_scale")
    return collector.write(out, config, f"user HDF5 stamps: {path}:{sec['dataset']}", [str(path)],
                           scale, psf=psf, units=units)
