"""Calibration on every stamp at flat memory: compare's ``mode: calibration``.

A calibration campaign draws O(10^5-10^6) stamps per set so that m's error reaches 1e-3; holding
them in memory, or running statmorph and the classifiers on all of them, does not scale. In
calibration mode compare runs its full comparison on the first ``compare.subsample_stamps``
stamps of each set (whole galaxy groups) and streams *every* stamp of every file through REGAUSS
here, chunk by chunk (``compare.chunk_stamps``), one file a task over ``compare.calibration_processes``
worker processes: per stamp only the shapes (eps1, eps2, status,
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
from .calibration import TARGET_PSF, ShapeSet, regauss_shapes, target_psf_of, why_not_calibrated
from .params import CompareParams
from .stats import sky_noise_std

__all__ = ["stream_shapes", "stream_shape_sets", "CALIBRATION_LABELS"]

CALIBRATION_LABELS = ("g1", "g2", "pair_id", "shear_sign")  # what group_means reads


def _file_shapes(path, p: CompareParams, psf: np.ndarray | None) -> tuple[dict, dict] | str:
    """REGAUSS shapes and calibration labels of one file, chunk by chunk, or why it cannot be
    calibrated (no g1 / g2 label or no PSF)."""
    parts: list[dict] = []
    labels: dict[str, list] = {}
    with open_stamps(path) as sf:
        file_psf = psf if psf is not None else sf.psf
        why = why_not_calibrated(sf.label_names, file_psf)
        if why:
            return why
        names = [n for n in CALIBRATION_LABELS if n in sf.label_names]
        for sl, images in sf.iter_chunks(p.chunk_stamps):
            mask = sf.mask[sl] if sf.mask is not None else None
            bad = None if mask is None else mask != 0
            var = sky_noise_std(images, bad, p.mask) ** 2
            chunk_psf = file_psf[sl] if file_psf.ndim == 3 else file_psf
            parts.append(regauss_shapes(images, chunk_psf, var, mask))
            for n, v in sf.labels(names, sl).items():
                labels.setdefault(n, []).append(v)
    return ({k: np.concatenate([d[k] for d in parts]) for k in parts[0]},
            {n: np.concatenate(v) for n, v in labels.items()})


def _run_jobs(jobs: list[tuple], p: CompareParams, progress: bool) -> list:
    """`_file_shapes` of each (path, psf) job, in order; in ``p.calibration_processes`` spawned
    workers when more than one (one file a task; the results are the same)."""
    bar = tqdm(total=len(jobs), unit="file", disable=not progress, desc="REGAUSS", leave=False)
    if p.calibration_processes <= 1 or len(jobs) <= 1:
        out = []
        for path, psf in jobs:
            out.append(_file_shapes(path, p, psf))
            bar.update(1)
        bar.close()
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(p.calibration_processes, len(jobs)), mp_context=ctx) as ex:
        futures = [ex.submit(_file_shapes, path, p, psf) for path, psf in jobs]
        out = []
        for f in futures:
            out.append(f.result())
            bar.update(1)
    bar.close()
    return out


def _merge(results: list) -> ShapeSet | str:
    """One set's files' results concatenated in order, or the first file's reason to skip."""
    for r in results:
        if isinstance(r, str):
            return r
    shapes = {k: np.concatenate([r[0][k] for r in results]) for k in results[0][0]}
    labels = {k: np.concatenate([r[1][k] for r in results]) for k in results[0][1]}
    return ShapeSet(shapes, labels)


def stream_shapes(paths: Sequence[str | os.PathLike], p: CompareParams,
                  psf: np.ndarray | None = None, progress: bool = False) -> ShapeSet | str:
    """REGAUSS shapes of every stamp of ``paths`` (shards, in order), chunk by chunk.

    ``psf`` replaces each file's ``/psf`` (e.g. the target's, for refined stamps). Returns a
    `ShapeSet`, or the reason the set cannot be calibrated (no g1 / g2 label or no PSF).
    """
    return _merge(_run_jobs([(path, psf) for path in paths], p, progress))


def stream_shape_sets(paths: dict[str, Sequence[str | os.PathLike]], p: CompareParams,
                      progress: bool = False) -> tuple[dict[str, ShapeSet], dict[str, str]]:
    """`stream_shapes` of every set (domain -> its files), plus `TARGET_PSF` (the refined files
    with the real file's PSF) where ``p.calibrate_with_target_psf``; the skipped sets' reasons.
    The same as `refinegan.compare.calibration.set_shapes` on the whole sets. All files of all
    sets are one task list, spread over ``p.calibration_processes`` workers."""
    tpsf = None
    if "real" in paths:
        with open_stamps(paths["real"][0]) as sf:
            tpsf = target_psf_of(sf.psf)
    jobs = [(d, (path, None)) for d, files in paths.items() for path in files]
    with_target = p.calibrate_with_target_psf and tpsf is not None and "refined" in paths
    if with_target:
        jobs += [(TARGET_PSF, (path, tpsf)) for path in paths["refined"]]
    results = _run_jobs([j for _, j in jobs], p, progress)
    out, skipped = {}, {}
    for d in [*paths, *([TARGET_PSF] if with_target else [])]:
        res = _merge([r for (dd, _), r in zip(jobs, results, strict=True) if dd == d])
        if isinstance(res, str):
            skipped[d] = res
        else:
            out[d] = res
    if TARGET_PSF in out and not {"sim", "refined"} <= set(out):
        del out[TARGET_PSF]
    skipped.pop(TARGET_PSF, None)
    return out, skipped
