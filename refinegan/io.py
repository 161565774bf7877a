"""The HDF5 stamp contract: the one module that knows dataset names, dtypes and shapes.

A stamp file holds one set of postage stamps (docs/data_contract.md)::

    /images            float32 (N, H, W), per pixel in its ``units`` attribute (counts unless a
                       user source says otherwise, `refinegan.units`), sky-subtracted, chunked
    /labels/<name>     one 1-D array of length N per label
    /mask              optional uint8 (N, H, W), non-zero = bad pixel
    /psf               float32 (h, w) or (N, h, w), unit sum, at the stamp pixel scale
    attributes         schema_version, domain, pixel_scale, source, config (JSON), seed,
                       created (UTC ISO), versions (JSON); refined sets add parent, model_sha256;
                       optional ``psf_flux_in_stamp`` (`PSF_FLUX_ATTR`): the share of the PSF's
                       light that falls inside the stamp (``/psf`` is unit-sum inside it), where
                       the writer drew the PSF and knows it (sims, mock, COSMOS)

Files are written atomically (`refinegan.atomic`: a temporary file, fsync, `os.replace`): a file
that exists is complete.
Readers validate the contract and raise `ContractError` naming the file and the problem.
Slicing ``StampFile.images`` reads only the requested stamps.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import gc
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from .atomic import commit, discard, temporary_path
from .config import to_plain
from .errors import ContractError, OutputWriteError

__all__ = [
    "SCHEMA_VERSION",
    "PSF_FLUX_ATTR",
    "DOMAINS",
    "SIM_LABELS",
    "StampSet",
    "StampFile",
    "StampWriter",
    "write_stamps",
    "open_stamps",
    "read_stamps",
    "read_many",
    "validate_file",
    "file_sha256",
    "package_versions",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PSF_FLUX_ATTR = "psf_flux_in_stamp"  # file attribute: in-stamp share of the PSF's flux (0, 1]
DOMAINS = ("sim", "real", "refined")
CHUNK_STAMPS = 256  # stamps per HDF5 chunk along N (64x64 float32: 4 MiB a chunk)

REQUIRED_ATTRS = (
    "schema_version",
    "domain",
    "pixel_scale",
    "source",
    "config",
    "seed",
    "created",
    "versions",
)
REFINED_ATTRS = ("parent", "model_sha256")

# Labels every simulated set carries (DESIGN.md section 3).
SIM_LABELS = (
    "id",
    "g1",
    "g2",
    "e1_int",
    "e2_int",
    "flux",
    "hlr",
    "sersic_n",
    "psf_fwhm",
    "noise_sigma",
    "snr",
)

# Labels that must be finite wherever present (the writer and the reader refuse NaN / inf in them);
# others may legitimately be NaN or inf (sersic_n of a bulge + disk galaxy, snr of a noiseless stamp).
FINITE_LABELS = ("id", "pair_id", "rot90", "shear_sign", "g1", "g2", "e1_int", "e2_int", "flux",
                 "hlr", "psf_fwhm", "noise_sigma")

# Units written as the ``units`` attribute of each label dataset; unknown labels get "".
LABEL_UNITS = {
    "id": "",
    "pair_id": "",
    "rot90": "",
    "shear_sign": "",
    "g1": "",
    "g2": "",
    "e1_int": "",
    "e2_int": "",
    "flux": "counts",
    "hlr": "arcsec",
    "sersic_n": "",
    "bulge_frac": "",
    "psf_fwhm": "arcsec",
    "noise_sigma": "counts",
    "snr": "",
    "background": "counts",
}


def package_versions() -> dict[str, str]:
    """Versions of refinegan and the libraries that determine a file's bytes."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    versions = {"refinegan": __version__, "numpy": np.__version__, "h5py": h5py.__version__}
    for dist in ("galsim", "torch"):  # metadata only: importing torch costs seconds
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:  # pragma: no cover - both are dependencies
            versions[dist] = "absent"
    return versions


def file_sha256(path: str | os.PathLike, block_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block_bytes):
            h.update(chunk)
    return h.hexdigest()


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class StampSet:
    """Stamps held in memory.

    Attributes
    ----------
    images : ndarray, float32, shape (N, H, W)
        Per pixel in ``units``, sky-subtracted.
    labels : dict of str to ndarray
        One 1-D array of length N per label.
    psf : ndarray or None
        (h, w) or (N, h, w), unit sum.
    mask : ndarray or None
        uint8 (N, H, W), non-zero = bad pixel.
    attrs : dict
        File attributes; ``config`` and ``versions`` decoded from JSON.
    units : str
        The ``units`` attribute of ``/images`` [default: "counts"].
    """

    images: np.ndarray
    labels: dict[str, np.ndarray]
    psf: np.ndarray | None = None
    mask: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)
    units: str = "counts"

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def pixel_scale(self) -> float:
        return float(self.attrs["pixel_scale"])


class StampWriter:
    """Write a stamp file in pieces, atomically.

    Data go to a temporary file beside ``path`` (`refinegan.atomic`); `close` checks that all N stamps were written and renames the
    file into place. Leaving the ``with`` block on an exception deletes the temporary file, so
    an interrupted run never leaves a file that looks complete.

    Parameters
    ----------
    path : str or Path
        Final file path.
    n : int
        Number of stamps that will be written.
    stamp_shape : (int, int)
        (H, W) of each stamp in pixels.
    domain : {'sim', 'real', 'refined'}
    pixel_scale : float
        arcsec per pixel.
    source : str
        One line saying where the stamps come from.
    config : Mapping
        The resolved config, stored as JSON.
    seed : int
        The master seed the stamps derive from.
    psf : ndarray, optional
        (h, w) or (N, h, w) PSF image(s) at the stamp pixel scale; normalised to unit sum here.
    with_mask : bool, optional
        Create a ``/mask`` dataset [default: False].
    extra_attrs : Mapping, optional
        More file attributes (e.g. ``parent``, ``model_sha256`` for refined sets). Values that
        are dicts or lists are stored as JSON strings.
    image_attrs : Mapping, optional
        Attributes of ``/images``: ``units`` [default: "counts"] and any others (a user source's
        ``input_units``, ``flux_scale``; `refinegan.units.PixelUnits`). Labels in counts
        (``flux``, ``noise_sigma``, ``background``) take the images' ``units``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n: int,
        stamp_shape: tuple[int, int],
        *,
        domain: str,
        pixel_scale: float,
        source: str,
        config: Mapping,
        seed: int,
        psf: np.ndarray | None = None,
        with_mask: bool = False,
        extra_attrs: Mapping | None = None,
        image_attrs: Mapping | None = None,
    ) -> None:
        if domain not in DOMAINS:
            raise ContractError(f"domain must be one of {DOMAINS}, got {domain!r}")
        if not (np.isfinite(pixel_scale) and pixel_scale > 0):
            raise ContractError(f"pixel_scale must be a positive number (arcsec), got {pixel_scale!r}")
        if n < 0:
            raise ContractError(f"number of stamps must be >= 0, got {n}")
        self.path = Path(path)
        if self.path.is_dir():
            raise ContractError(f"{self.path} is a directory; give the stamp file's path (e.g. "
                                f"{self.path / 'stamps.h5'})")
        self.tmp_path = temporary_path(self.path)
        self.n = int(n)
        self.stamp_shape = (int(stamp_shape[0]), int(stamp_shape[1]))
        self.domain = domain
        image_attrs = {"units": "counts", **(image_attrs or {})}
        self.units = str(image_attrs["units"])
        self._pos = 0
        self._labels: dict[str, h5py.Dataset] = {}
        _check_free_space(self.path, self.n, self.stamp_shape, with_mask)
        self._f = None
        try:  # the open too: a Ctrl-C while HDF5 creates the file must not leave it behind
            self._f = h5py.File(self.tmp_path, "w")
            # HDF5 cannot chunk an empty dataset: a file of zero stamps is stored contiguous.
            chunk = (min(CHUNK_STAMPS, self.n), *self.stamp_shape) if self.n else None
            self._images = self._f.create_dataset(
                "images", shape=(self.n, *self.stamp_shape), dtype="f4", chunks=chunk
            )
            for key, value in image_attrs.items():
                self._images.attrs[key] = value
            self._mask = None
            if with_mask:
                self._mask = self._f.create_dataset(
                    "mask", shape=(self.n, *self.stamp_shape), dtype="u1", chunks=chunk,
                    compression="gzip", compression_opts=1,
                )
                self._mask.attrs["units"] = ""
                self._mask.attrs["meaning"] = "non-zero = bad pixel"
            self._f.create_group("labels")
            if psf is not None:
                self._write_psf(psf)
            attrs = {
                "schema_version": SCHEMA_VERSION,
                "domain": domain,
                "pixel_scale": float(pixel_scale),
                "source": str(source),
                "config": json.dumps(to_plain(config), sort_keys=True, default=str),
                "seed": int(seed),
                "created": _utc_now(),
                "versions": json.dumps(package_versions(), sort_keys=True),
            }
            for key, value in (extra_attrs or {}).items():
                attrs[key] = json.dumps(value) if isinstance(value, dict | list | tuple) else value
            for key, value in attrs.items():
                self._f.attrs[key] = value
        except BaseException:
            self._abort()
            raise

    def _write_psf(self, psf: np.ndarray) -> None:
        psf = np.asarray(psf, dtype=np.float64)
        if psf.ndim not in (2, 3) or (psf.ndim == 3 and psf.shape[0] != self.n):
            raise ContractError(
                f"psf must have shape (h, w) or (N={self.n}, h, w), got {psf.shape}"
            )
        total = psf.sum(axis=(-2, -1), keepdims=True)
        if np.any(~np.isfinite(total)) or np.any(total <= 0):
            raise ContractError("psf image(s) must have a finite, positive sum")
        ds = self._f.create_dataset("psf", data=(psf / total).astype(np.float32))
        ds.attrs["units"] = "fraction of flux per pixel (unit sum)"

    @property
    def n_written(self) -> int:
        return self._pos

    def write(
        self,
        images: np.ndarray,
        labels: Mapping[str, np.ndarray],
        mask: np.ndarray | None = None,
    ) -> None:
        """Append a block of stamps (B, H, W) with their labels (each length B).

        Raises
        ------
        ContractError
            Wrong shapes, non-finite pixels or labels, too many stamps.
        OutputWriteError
            The disk refused the data (full, a size limit): the partial file is removed.
        """
        hook, unraisable = sys.unraisablehook, []
        sys.unraisablehook = unraisable.append  # HDF5 also reports failed writes on deallocation
        try:
            self._write(images, labels, mask)
        except (OSError, RuntimeError) as err:
            raise self._write_failed(err) from None
        finally:
            sys.unraisablehook = hook
        if unraisable:
            raise self._write_failed(unraisable[0].exc_value)

    def _write_failed(self, err: BaseException) -> OutputWriteError:
        """Remove the partial file; the error to raise instead of HDF5's."""
        self._abort()
        code = getattr(err, "errno", None) or _hdf5_errno(err)
        reason = os.strerror(code) if code else _first_line(err)
        return OutputWriteError(code or 0, f"writing failed: {reason}; the partial file was "
                                           "removed", str(self.path))

    def _write(self, images, labels, mask) -> None:
        images = np.asarray(images)
        b = images.shape[0]
        if images.shape[1:] != self.stamp_shape:
            raise ContractError(
                f"{self.path}: stamps must be {self.stamp_shape}, got {images.shape[1:]}"
            )
        if self._pos + b > self.n:
            raise ContractError(
                f"{self.path}: writing {b} stamps at {self._pos} overflows N={self.n}"
            )
        finite = np.isfinite(images).all(axis=tuple(range(1, images.ndim)))
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise ContractError(f"{self.path}: stamp {self._pos + i} has NaN or inf pixels; /images "
                                "must be finite (mark bad pixels in /mask instead)")
        for name in FINITE_LABELS:
            if name in labels and not np.isfinite(np.asarray(labels[name], dtype=np.float64)).all():
                i = int(np.flatnonzero(~np.isfinite(np.asarray(labels[name], np.float64)))[0])
                raise ContractError(f"{self.path}: label {name!r} of stamp {self._pos + i} is "
                                    f"{float(np.asarray(labels[name])[i])!r}; it must be finite")
        sl = slice(self._pos, self._pos + b)
        self._images[sl] = images.astype(np.float32, copy=False)
        if (mask is None) != (self._mask is None):
            raise ContractError(f"{self.path}: mask given for a file without /mask or vice versa")
        if mask is not None:
            self._mask[sl] = np.asarray(mask, dtype=np.uint8)
        if self._labels and set(labels) != set(self._labels):
            raise ContractError(
                f"{self.path}: label names changed between blocks: "
                f"{sorted(self._labels)} vs {sorted(labels)}"
            )
        for name, values in labels.items():
            values = np.asarray(values)
            if values.shape != (b,):
                raise ContractError(
                    f"{self.path}: label {name!r} must have shape ({b},), got {values.shape}"
                )
            if name not in self._labels:
                ds = self._f["labels"].create_dataset(name, shape=(self.n,), dtype=values.dtype)
                unit = LABEL_UNITS.get(name, "")
                ds.attrs["units"] = self.units if unit == "counts" else unit
                self._labels[name] = ds
            self._labels[name][sl] = values
        self._pos += b

    def close(self) -> Path:
        """Check completeness, close, and move the file into place. Returns the final path."""
        if self._f is None:
            return self.path
        if self._pos != self.n:
            self._abort()
            raise ContractError(f"{self.path}: only {self._pos} of {self.n} stamps were written")
        try:
            self._release()
            self._f.close()  # HDF5 flushes here: a full disk may fail here, not in write()
            self._f = None
            commit(self.tmp_path, self.path)
        except (OSError, RuntimeError) as err:
            raise self._write_failed(err) from None
        except BaseException:
            self._abort()
            raise
        logger.info("wrote %s (%d stamps, domain %s)", self.path, self.n, self.domain)
        return self.path

    def _release(self) -> None:
        """Drop this writer's handles on the open file's datasets, so that closing the file
        closes every HDF5 object (none is left for the garbage collector on a failed file)."""
        self._images = self._mask = None
        self._labels = {}

    def _abort(self) -> None:
        if self._f is not None:
            hook = sys.unraisablehook
            sys.unraisablehook = lambda *_: None  # a failed file's HDF5 objects complain as they go
            try:
                self._release()
                with contextlib.suppress(Exception):
                    self._f.close()
                self._f = None
                gc.collect()
            finally:
                sys.unraisablehook = hook
        discard(self.tmp_path)

    def __enter__(self) -> StampWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()


def write_stamps(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: Mapping[str, np.ndarray],
    *,
    domain: str,
    pixel_scale: float,
    source: str,
    config: Mapping,
    seed: int,
    psf: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    extra_attrs: Mapping | None = None,
    image_attrs: Mapping | None = None,
) -> Path:
    """Write a whole `StampSet`-like block to ``path`` atomically. See `StampWriter`."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ContractError(f"images must have shape (N, H, W), got {images.shape}")
    with StampWriter(
        path,
        images.shape[0],
        images.shape[1:],
        domain=domain,
        pixel_scale=pixel_scale,
        source=source,
        config=config,
        seed=seed,
        psf=psf,
        with_mask=mask is not None,
        extra_attrs=extra_attrs,
        image_attrs=image_attrs,
    ) as w:
        w.write(images, labels, mask)
    return Path(path)


SPACE_MARGIN_BYTES = 1 << 20  # headroom beyond the estimate: attributes, PSF, HDF5's own records


def _check_free_space(path: Path, n: int, shape: tuple[int, int], with_mask: bool) -> None:
    """Refuse to start a file the disk cannot hold (HDF5 fails badly on a full disk)."""
    need = n * shape[0] * shape[1] * (4 + (1 if with_mask else 0)) + n * 8 * 24 + SPACE_MARGIN_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise OutputWriteError(errno.ENOSPC, f"not enough disk space for {n} stamps: needs about "
                      f"{need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free", str(path.parent))


def _hdf5_errno(err: BaseException) -> int | None:
    """The errno HDF5 reports inside its message (``errno = 28``), if any."""
    found = re.search(r"errno = (\d+)", str(err))
    return int(found.group(1)) if found else None


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (HDF5's run over several)."""
    text = str(err).strip()
    return text.splitlines()[0].rstrip(" (") if text else type(err).__name__


def _decode_attrs(raw: Mapping) -> dict:
    attrs = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        attrs[key] = value
    for key in ("config", "versions"):
        if isinstance(attrs.get(key), str):
            with contextlib.suppress(json.JSONDecodeError):
                attrs[key] = json.loads(attrs[key])
    return attrs


class StampFile:
    """A validated stamp file, open for lazy reading.

    ``images`` (and ``mask``) are h5py datasets: ``sf.images[10:20]`` reads those 10 stamps only.

    Parameters
    ----------
    path : str or Path
        The stamp file.
    require_labels : sequence of str, optional
        Labels that must be present in addition to the domain's own requirements.
    """

    def __init__(self, path: str | os.PathLike, require_labels: Sequence[str] = ()) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ContractError(f"{self.path}: no such stamp file")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as err:
            raise ContractError(f"{self.path}: not a readable HDF5 file ({err})") from None
        try:
            self._validate(require_labels)
        except BaseException:
            self._f.close()
            raise

    def _fail(self, what: str) -> None:
        raise ContractError(f"{self.path}: {what}")

    def _validate(self, require_labels: Sequence[str]) -> None:
        f = self._f
        for key in REQUIRED_ATTRS:
            if key not in f.attrs:
                self._fail(f"missing file attribute {key!r} (required: {', '.join(REQUIRED_ATTRS)})")
        self.attrs = _decode_attrs(f.attrs)
        if self.attrs["schema_version"] != SCHEMA_VERSION:
            self._fail(
                f"schema_version is {self.attrs['schema_version']!r}, this refinegan reads "
                f"{SCHEMA_VERSION}"
            )
        if self.attrs["domain"] not in DOMAINS:
            self._fail(f"unknown domain {self.attrs['domain']!r}, expected one of {DOMAINS}")
        if not (np.isfinite(self.attrs["pixel_scale"]) and self.attrs["pixel_scale"] > 0):
            self._fail(f"pixel_scale must be positive, got {self.attrs['pixel_scale']!r}")
        if "images" not in f or not isinstance(f["images"], h5py.Dataset):
            self._fail("missing dataset /images")
        images = f["images"]
        if images.dtype != np.float32:
            self._fail(f"/images must be float32, got {images.dtype}")
        if images.ndim != 3:
            self._fail(f"/images must have rank 3 (N, H, W), got shape {images.shape}")
        n = images.shape[0]
        if "labels" not in f or not isinstance(f["labels"], h5py.Group):
            self._fail("missing group /labels")
        for name, ds in f["labels"].items():
            if not isinstance(ds, h5py.Dataset) or ds.ndim != 1:
                self._fail(f"label {name!r} must be a 1-D dataset")
            if ds.shape[0] != n:
                self._fail(f"label {name!r} has length {ds.shape[0]}, /images has N={n}")
        needed = list(require_labels)
        if self.attrs["domain"] == "sim":
            needed += SIM_LABELS
        if self.attrs["domain"] == "refined":
            for key in REFINED_ATTRS:
                if key not in self.attrs:
                    self._fail(f"refined file is missing attribute {key!r}")
        missing = [name for name in needed if name not in f["labels"]]
        if missing:
            self._fail(f"missing label(s) {missing} for a {self.attrs['domain']} set")
        for name in FINITE_LABELS:
            if name in f["labels"] and f["labels"][name].dtype.kind == "f":
                values = f["labels"][name][()]
                if not np.isfinite(values).all():
                    i = int(np.flatnonzero(~np.isfinite(values))[0])
                    self._fail(f"label {name!r} of stamp {i} is {float(values[i])!r}; it must be finite")
        if "mask" in f:
            m = f["mask"]
            if m.dtype != np.uint8 or m.shape != images.shape:
                self._fail(f"/mask must be uint8 of shape {images.shape}, got {m.dtype} {m.shape}")
        if "psf" in f:
            p = f["psf"]
            if p.dtype != np.float32:
                self._fail(f"/psf must be float32, got {p.dtype}")
            if p.ndim not in (2, 3) or (p.ndim == 3 and p.shape[0] != n):
                self._fail(f"/psf must have shape (h, w) or (N={n}, h, w), got {p.shape}")

    # -- accessors ---------------------------------------------------------------------------
    @property
    def images(self) -> h5py.Dataset:
        return self._f["images"]

    @property
    def units(self) -> str:
        """The ``units`` attribute of ``/images`` ("counts" where a file has none)."""
        value = self._f["images"].attrs.get("units", "counts")
        return value.decode() if isinstance(value, bytes) else str(value)

    @property
    def mask(self) -> h5py.Dataset | None:
        return self._f["mask"] if "mask" in self._f else None

    @property
    def n(self) -> int:
        return self.images.shape[0]

    def __len__(self) -> int:
        return self.n

    @property
    def stamp_shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:])

    @property
    def domain(self) -> str:
        return self.attrs["domain"]

    @property
    def pixel_scale(self) -> float:
        return float(self.attrs["pixel_scale"])

    @property
    def label_names(self) -> list[str]:
        return list(self._f["labels"].keys())

    def labels(self, names: Sequence[str] | None = None, sl: slice = slice(None)) -> dict:
        """Read labels (all by default) for the stamps in ``sl``."""
        names = self.label_names if names is None else names
        out = {}
        for name in names:
            if name not in self._f["labels"]:
                self._fail(f"no label {name!r}; labels present: {self.label_names}")
            out[name] = self._f["labels"][name][sl]
        return out

    @property
    def psf(self) -> np.ndarray | None:
        return self._f["psf"][()] if "psf" in self._f else None

    def read(self, sl: slice = slice(None)) -> StampSet:
        """Read the stamps in ``sl`` into memory."""
        psf = self.psf
        if psf is not None and psf.ndim == 3:
            psf = psf[sl]
        mask = self.mask[sl] if self.mask is not None else None
        return StampSet(self.images[sl], self.labels(sl=sl), psf, mask, dict(self.attrs),
                        self.units)

    def iter_chunks(self, chunk_stamps: int = CHUNK_STAMPS) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield (slice, images) blocks of at most ``chunk_stamps`` stamps."""
        for start in range(0, self.n, chunk_stamps):
            sl = slice(start, min(start + chunk_stamps, self.n))
            yield sl, self.images[sl]

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> StampFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_stamps(path: str | os.PathLike, require_labels: Sequence[str] = ()) -> StampFile:
    """Open and validate a stamp file for lazy reading (use as a context manager)."""
    return StampFile(path, require_labels)


def validate_file(path: str | os.PathLike, require_labels: Sequence[str] = ()) -> dict:
    """Check a file against the contract; return its attributes or raise `ContractError`."""
    with StampFile(path, require_labels) as sf:
        return dict(sf.attrs)


def read_stamps(path: str | os.PathLike, sl: slice = slice(None)) -> StampSet:
    """Read (a slice of) a stamp file into memory, validating it first."""
    with StampFile(path) as sf:
        return sf.read(sl)


def read_many(paths: Sequence[str | os.PathLike], max_stamps: int | None = None) -> StampSet:
    """Read several stamp files (e.g. shards) and concatenate them in the given order.

    All files must share domain, pixel scale, stamp shape, label names and /images units. A
    shared 2-D PSF is kept when every file has the same one; otherwise PSFs are expanded per
    stamp. With ``max_stamps`` only the first that many stamps are read (later files not at all).
    """
    if not paths:
        raise ContractError("no stamp files given")
    sets, left = [], max_stamps
    for p in paths:
        if left is not None and left <= 0:
            break
        sets.append(read_stamps(p, slice(0, left)))
        left = None if left is None else left - len(sets[-1])
    paths = list(paths)[:len(sets)]
    first = sets[0]
    for p, s in zip(paths, sets, strict=True):
        for what, a, b in (
            ("domain", s.attrs["domain"], first.attrs["domain"]),
            ("pixel_scale", s.pixel_scale, first.pixel_scale),
            ("stamp shape", s.images.shape[1:], first.images.shape[1:]),
            ("label names", sorted(s.labels), sorted(first.labels)),
            ("/images units", s.units, first.units),
        ):
            if a != b:
                raise ContractError(f"{p}: {what} {a} differs from {paths[0]}'s {b}")
    images = np.concatenate([s.images for s in sets])
    labels = {k: np.concatenate([s.labels[k] for s in sets]) for k in first.labels}
    masks = [s.mask for s in sets]
    mask = None
    if any(m is not None for m in masks):
        mask = np.concatenate(
            [m if m is not None else np.zeros(s.images.shape, np.uint8) for m, s in zip(masks, sets, strict=True)]
        )
    psfs = [s.psf for s in sets]
    psf = None
    if all(p is not None for p in psfs):
        if all(p.ndim == 2 and p.shape == psfs[0].shape and np.array_equal(p, psfs[0]) for p in psfs):
            psf = psfs[0]
        elif all(p.shape[-2:] == psfs[0].shape[-2:] for p in psfs):
            psf = np.concatenate(
                [np.broadcast_to(p, (len(s), *p.shape[-2:])) for p, s in zip(psfs, sets, strict=True)]
            )
    return StampSet(images, labels, psf, mask, dict(first.attrs), first.units)
