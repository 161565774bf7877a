"""Calibration on every stamp at flat memory: compare's ``mode: calibration``.

A calibration campaign draws O(10^5-10^6) stamps per set so that m's error reaches 1e-3; holding
them in memory, or running statmorph and the classifiers on all of them, does not scale. In
calibration mode compare runs its full comparison on the first ``compare.subsample_stamps``
stamps of each set (whole galaxy groups) and streams *every* stamp of every file through REGAUSS
here, chunk by chunk (``compare.chunk_stamps``): per stamp only the shapes (eps1, eps2, status,
resolution, size, S/N) and the four labels calibration needs are kept, 64 bytes instead of the
9 KB of a 48 x 48 float32 stamp, so memory stays flat in the number of stamps.

Each stamp's REGAUSS noise variance is its source-masked sky std squared
(`refinegan.compare.stats.sky_noise_std`, exactly full mode's ``noise_std``), so a stamp gets the
same shape in both modes (tests/test_stream.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..io import open_stamps
from .calibration import TARGET_PSF, ShapeSet, regauss_shapes, target_psf_of
from .params import CompareParams
from .stats import sky_noise_std

__all__ = ["stream_shapes", "stream_shape_sets", "CALIBRATION_LABELS"]

CALIBRATION_LABELS = ("g1", "g2", "pair_id", "shear_sign")  # what group_means reads


def _file_psf(sf, override: np.ndarray | None) -> np.ndarray | None:
    return override if override is not None else sf.psf


def stream_shapes(paths: Sequence[str | os.PathLike], p: CompareParams,
                  psf: np.ndarray | None = None, progress: bool = False, desc: str = ""
                  ) -> ShapeSet | str:
    """REGAUSS shapes of every stamp of ``paths`` (shards, in order), chunk by chunk.

    ``psf`` replaces each file's ``/psf`` (e.g. the target's, for refined stamps). Returns a
    `ShapeSet`, or the reason the set cannot be calibrated (no g1 / g2 label or no PSF).
    """
    parts: list[dict] = []
    labels: dict[str, list] = {}
    total = 0
    for path in paths:
        with open_stamps(path) as sf:
            total += sf.n
    bar = tqdm(total=total, unit="stamp", disable=not progress, desc=f"REGAUSS {desc}",
               leave=False)
    for path in paths:
        with open_stamps(path) as sf:
            missing = [f"label {g}" for g in ("g1", "g2") if g not in sf.label_names]
            file_psf = _file_psf(sf, psf)
            missing += ["/psf"] if file_psf is None else []
            if missing:
                bar.close()
                return f"no {' and no '.join(missing)} in the file"
            names = [n for n in CALIBRATION_LABELS if n in sf.label_names]
            for sl, images in sf.iter_chunks(p.chunk_stamps):
                mask = sf.mask[sl] if sf.mask is not None else None
                bad = None if mask is None else mask != 0
                var = sky_noise_std(images, bad, p.mask) ** 2
                chunk_psf = file_psf[sl] if file_psf.ndim == 3 else file_psf
                parts.append(regauss_shapes(images, chunk_psf, var, mask))
                for n, v in sf.labels(names, sl).items():
                    labels.setdefault(n, []).append(v)
                bar.update(images.shape[0])
    bar.close()
    shapes = {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}
    return ShapeSet(shapes, {n: np.concatenate(v) for n, v in labels.items()})


def stream_shape_sets(paths: dict[str, Sequence[str | os.PathLike]], p: CompareParams,
                      progress: bool = False) -> tuple[dict[str, ShapeSet], dict[str, str]]:
    """`stream_shapes` of every set (domain -> its files), plus `TARGET_PSF` (the refined files
    with the real file's PSF) where ``p.calibrate_with_target_psf``; the skipped sets' reasons.
    The same as `refinegan.compare.calibration.set_shapes` on the whole sets."""
    out, skipped = {}, {}
    for d, files in paths.items():
        res = stream_shapes(files, p, progress=progress, desc=d)
        if isinstance(res, str):
            skipped[d] = res
        else:
            out[d] = res
    tpsf = None
    if "real" in paths:
        with open_stamps(paths["real"][0]) as sf:
            tpsf = target_psf_of(sf.psf)
    if p.calibrate_with_target_psf and tpsf is not None and {"sim", "refined"} <= set(out):
        res = stream_shapes(paths["refined"], p, psf=tpsf, progress=progress, desc="refined")
        out[TARGET_PSF] = res
    return out, skipped
