"""The compare stage: is refined closer to real than sim was, and did refinement keep the labels?

`compare` reads the sim shards, their refined versions and the real (target) set, measures
per-image statistics (`refinegan.compare.stats`, `refinegan.compare.morphology` on a subsample), computes
two-sample distances for (sim, real), (refined, real) and the floor (real half A, real half B),
classifier two-sample tests, label drift and shear calibration (`refinegan.compare.calibration`), writes
``compare.h5`` (`refinegan.compare.store`, layout in docs/compare.md), logs a summary table and
draws captioned plots (`refinegan.compare.plots`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..errors import ContractError
from ..io import StampSet, file_sha256, package_versions, read_many, read_stamps
from . import calibration as cal
from . import distances as dist
from .measure import groups_of, measure, pick_groups, truncate
from .morphology import morphology
from .params import DOMAINS, HIST_RANGE, PAIRS, PIXEL_SAMPLE, CompareParams
from .store import summary_lines, write_compare_h5

__all__ = ["compare"]

logger = logging.getLogger(__name__)

def _check_pairing(sim: StampSet, ref: StampSet, sim_paths, ref_paths) -> None:
    where = f"refined {list(map(str, ref_paths))} vs sim {list(map(str, sim_paths))}"
    if ref.attrs.get("domain") != "refined":
        raise ContractError(f"{ref_paths[0]}: domain is {ref.attrs.get('domain')!r}, expected 'refined'")
    if len(ref) != len(sim):
        raise ContractError(f"{where}: {len(ref)} refined stamps but {len(sim)} sim stamps; "
                            "give the refined shards in the same order as the sim shards")
    if sorted(ref.labels) != sorted(sim.labels):
        raise ContractError(f"{where}: label names differ: {sorted(ref.labels)} vs "
                            f"{sorted(sim.labels)} (refined sets carry exactly the sim labels)")
    for name in sim.labels:
        a, b = np.asarray(sim.labels[name]), np.asarray(ref.labels[name])
        diff = a != b
        if a.dtype.kind == "f" and b.dtype.kind == "f":
            diff &= ~(np.isnan(a) & np.isnan(b))
        if diff.any():
            i = int(np.flatnonzero(diff)[0])
            raise ContractError(f"{where}: label {name!r} differs at stamp {i} "
                                f"(sim {a[i]!r}, refined {b[i]!r}); stamps must pair one to one")
    if sim.images.shape[1:] != ref.images.shape[1:]:
        raise ContractError(f"{where}: stamp shapes {ref.images.shape[1:]} vs {sim.images.shape[1:]}")


def compare(
    config: Mapping,
    sim_paths: Sequence[str | os.PathLike],
    refined_paths: Sequence[str | os.PathLike],
    real_path: str | os.PathLike,
    out_path: str | os.PathLike,
    plots_dir: str | os.PathLike | None = None,
    progress: bool = True,
    control_paths: Sequence[str | os.PathLike] | None = None,
) -> dict:
    """Compare sim, refined and real stamp sets; write ``out_path`` (compare.h5) and plots.

    Parameters
    ----------
    config : RunConfig or Mapping
        The run config (a dict is validated once); reads ``seed`` and ``compare``.
    sim_paths, refined_paths : sequence of paths
        Sim shards and their refined versions, in the same order (stamps pair one to one).
    real_path : path
        The real (target) stamp file.
    out_path : path
        compare.h5 to write (atomically).
    plots_dir : path, optional
        Directory for PNG plots and their .rst captions [default: ``plots/`` beside out_path].
    progress : bool
        Show tqdm progress bars [default: True].
    control_paths : sequence of paths, optional
        A noise-only control (e.g. the mock with only its noise effect on, or the sims with
        real-style noise): its classifier AUCs and W1 distances against real are reported next
        to the refined ones (``classifier/<test>/control_auc``, ``distances/w1_control``).

    Returns
    -------
    dict
        The result tree that was written to compare.h5.
    """
    from . import plots
    from .tables import classifier_tests, distance_tables, label_drift, spectra_tables

    config = RunConfig.of(config)
    p = CompareParams.from_config(config)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, p.seed_offset]))
    sim_paths, refined_paths = list(sim_paths), list(refined_paths)
    sets = {
        "sim": truncate(read_many(sim_paths), p.max_stamps),
        "refined": truncate(read_many(refined_paths), p.max_stamps),
        "real": truncate(read_stamps(real_path), p.max_stamps),
    }
    if control_paths:
        sets["control"] = truncate(read_many(list(control_paths)), p.max_stamps)
    _check_pairing(sets["sim"], sets["refined"], sim_paths, refined_paths)
    if sets["real"].images.shape[1:] != sets["sim"].images.shape[1:]:
        raise ContractError(f"{real_path}: stamp shape {sets['real'].images.shape[1:]} differs from "
                            f"the sims' {sets['sim'].images.shape[1:]}")
    for dom, s in sets.items():
        if s.images.shape[1:] != sets["sim"].images.shape[1:]:
            raise ContractError(f"{dom} set: stamp shape {s.images.shape[1:]} differs from the "
                                f"sims' {sets['sim'].images.shape[1:]}")
        if abs(s.pixel_scale - sets["sim"].pixel_scale) > 1e-9:
            raise ContractError(f"{dom} set: pixel_scale {s.pixel_scale} differs from the sims' "
                                f"{sets['sim'].pixel_scale} arcsec")
    logger.info("compare: %s stamps", ", ".join(f"{len(s)} {d}" for d, s in sets.items()))

    meas = {d: measure(s, p, progress, desc=d) for d, s in sets.items()}
    groups = {d: groups_of(s) for d, s in sets.items()}
    # morphology on a subsample: the same galaxies for sim and refined
    morph_idx = {}
    if p.morphology_n > 0:
        morph_idx["sim"] = morph_idx["refined"] = pick_groups(groups["sim"], p.morphology_n, rng)
        morph_idx["real"] = pick_groups(groups["real"], p.morphology_n, rng)
        for d in DOMAINS:
            idx = morph_idx[d]
            meas[d]["morph"] = morphology(
                sets[d].images[idx], meas[d]["scalars"]["noise_std"][idx],
                threshold_sigma=p.morph_threshold_sigma, n_pixels=p.morph_n_pixels,
                progress=progress, processes=p.morph_processes)
            meas[d]["morph_index"] = idx
    # real vs real floor: two disjoint halves, whole groups each
    half_b = dist.group_split(groups["real"], 0.5, rng)
    scale = float(np.nanmedian(meas["real"]["scalars"]["noise_std"]))
    if not (np.isfinite(scale) and scale > 0):
        scale = float(np.nanstd(sets["real"].images)) or 1.0
        logger.warning("real set has no usable noise pixels; pixel scale for asinh = %.3g", scale)

    result: dict = {"stats": {}}
    for d in sets:
        node = dict(meas[d]["scalars"])
        if "morph" in meas[d]:
            node.update(meas[d]["morph"])
            node["morph_index"] = meas[d]["morph_index"]
        node["power"] = meas[d]["power"]
        result["stats"][d] = node
    result["stats"]["real_half_b"] = half_b.astype(np.uint8)
    result["failures"] = _failure_counts(meas)
    result["spectra"], result["acf"], result["histogram"] = spectra_tables(
        sets, meas, half_b, scale, p, HIST_RANGE)
    result["distances"] = distance_tables(sets, meas, groups, half_b, scale, p, rng,
                                          PIXEL_SAMPLE)
    result["classifier"] = classifier_tests(sets, meas, groups, half_b, scale, p, rng, progress)
    result["calibration"] = _calibration(sets, meas, p, rng)
    result["labels"] = label_drift(meas["sim"], meas["refined"])

    inputs = {"control": [(str(x), file_sha256(x)) for x in control_paths or []],
              "sim": [(str(x), file_sha256(x)) for x in sim_paths],
              "refined": [(str(x), file_sha256(x)) for x in refined_paths],
              "real": [(str(real_path), file_sha256(real_path))]}
    attrs = {"config": config.to_dict(), "inputs": inputs, "versions": package_versions(),
             "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
             "n_sim": len(sets["sim"]), "n_refined": len(sets["refined"]),
             "n_real": len(sets["real"]), "morphology_n": int(len(morph_idx.get("sim", []))),
             "morphology_n_real": int(len(morph_idx.get("real", []))),
             "pixel_scale_asinh_counts": scale, "pairs": list(PAIRS)}
    write_compare_h5(out_path, result, attrs)
    for line in summary_lines(result):
        logger.info("%s", line)
    plots_dir = Path(plots_dir) if plots_dir is not None else Path(out_path).parent / "plots"
    plots.make_plots(result, sets, plots_dir, scale=scale, n_stamps=p.plot_stamps, rng=rng)
    return result


def _failure_counts(meas: dict) -> dict:
    """Per domain: stamps whose HSM moments, noise statistics or statmorph failed (flagged)."""
    from .stats import FLAG_HSM, FLAG_NOISE, FLAG_NONFINITE

    out = {}
    for d, m in meas.items():
        flags = m["scalars"]["flags"]
        out[d] = {"n": len(flags), "hsm": int((flags & FLAG_HSM > 0).sum()),
                  "noise": int((flags & FLAG_NOISE > 0).sum()),
                  "nonfinite": int((flags & FLAG_NONFINITE > 0).sum())}
        if "morph" in m:
            out[d]["morph"] = int((m["morph"]["morph_flag"] >= 2).sum())
            out[d]["morph_n"] = len(m["morph"]["morph_flag"])
        logger.info("%s: flagged stamps %s", d, out[d])
    return out


def _calibration(sets: dict, meas: dict, p: CompareParams, rng: np.random.Generator) -> dict:
    """REGAUSS m, c per domain with true shear; paired refined - sim; calibration transfer."""
    out: dict = {}
    grs = {}
    for d, s in sets.items():
        if not {"g1", "g2"} <= set(s.labels) or s.psf is None:
            out[d] = {"skipped": "no g1/g2 labels or no /psf in the file"}
            logger.info("calibration of %s skipped (no true shear labels or no /psf)", d)
            continue
        var = meas[d]["scalars"]["noise_std"] ** 2
        sh = cal.regauss_shapes(s.images, s.psf, var, s.mask)
        meas[d]["regauss"] = sh
        gr = cal.group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, s.labels)
        grs[d] = gr
        out[d] = cal.calibrate(gr, p.n_bootstrap, rng)
        out[d]["regauss_status"] = sh["status"]
        out[d]["eps1"], out[d]["eps2"] = sh["eps1"], sh["eps2"]
    if "sim" in grs and "refined" in grs:
        out["paired"] = cal.paired_difference(grs["sim"], grs["refined"], p.n_bootstrap, rng)
        if "real" in grs:
            out["transfer"] = cal.transfer(out["sim"], out["refined"], out["real"], out["paired"],
                                           p.bar_m)
        target_psf = sets["real"].psf
        if p.calibrate_with_target_psf and target_psf is not None:
            # a refiner may learn PSF features the sim PSF lacks: calibrate refined stamps with
            # the target's PSF too (the mean PSF image if the target has one per stamp)
            if target_psf.ndim == 3:
                target_psf = target_psf.mean(axis=0)
            s = sets["refined"]
            var = meas["refined"]["scalars"]["noise_std"] ** 2
            sh = cal.regauss_shapes(s.images, target_psf, var, s.mask)
            gr = cal.group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, s.labels)
            out["refined_target_psf"] = cal.calibrate(gr, p.n_bootstrap, rng)
            out["paired_target_psf"] = cal.paired_difference(grs["sim"], gr, p.n_bootstrap, rng)
            if "real" in grs:
                out["transfer_target_psf"] = cal.transfer(
                    out["sim"], out["refined_target_psf"], out["real"],
                    out["paired_target_psf"], p.bar_m)
    return out
