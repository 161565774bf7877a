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
from ..io import StampSet, file_sha256, package_versions, read_many
from ..seeds import stream_sequence
from ..units import same_units
from . import distances as dist
from .calibration import calibrate_sets, set_shapes
from .classifiers import classifier_tests
from .measure import Measurement, groups_of, measure, pick_groups, truncate
from .morphology import morphology
from .params import PAIRS, CompareParams
from .r_only import psf_match_record, psf_matched_tables
from .samples import Samples, asinh_scale
from .stats import FLAG_HSM, FLAG_NOISE, FLAG_NONFINITE
from .store import summary_lines, write_compare_h5
from .stream import stream_shape_sets
from .tables import distance_tables, label_drift, spectra_tables
from .twin import load_twin, twin_shape_set
from .verdicts import apply_minimums, target_attrs

__all__ = ["compare"]

logger = logging.getLogger(__name__)

Paths = Sequence[str | os.PathLike]


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


def _load_sets(sim_paths: Paths, refined_paths: Paths, real_path, control_paths: Paths,
               max_stamps: int | None, psf_matched_paths: Paths = ()) -> dict[str, StampSet]:
    """Read every set (shards concatenated), each cut to ``max_stamps`` (whole groups)."""
    sets = {
        "sim": truncate(read_many(sim_paths, max_stamps), max_stamps),
        "refined": truncate(read_many(refined_paths, max_stamps), max_stamps),
        "real": truncate(read_many([real_path], max_stamps), max_stamps),
    }
    if control_paths:
        sets["control"] = truncate(read_many(control_paths, max_stamps), max_stamps)
    if psf_matched_paths:
        sets["psf_matched"] = truncate(read_many(psf_matched_paths, max_stamps), max_stamps)
    return sets


def _check_psf_matched(sets: dict[str, StampSet], sim_paths: Paths, pm_paths: Paths) -> None:
    """The psf_matched set pairs one to one with sim, is R's input (``refine --matching-only``)
    and was matched by the model that refined the sims."""
    pm, ref = sets["psf_matched"], sets["refined"]
    _check_pairing(sets["sim"], pm, sim_paths, pm_paths)
    if int(pm.attrs.get("matching_only", 0)) != 1:
        raise ContractError(f"{pm_paths[0]}: not a psf_matched file (attribute matching_only is "
                            f"{pm.attrs.get('matching_only', 'missing')!r}, expected 1); write it "
                            f"with refinegan refine --matching-only")
    if pm.attrs.get("model_sha256") != ref.attrs.get("model_sha256"):
        raise ContractError(f"{pm_paths[0]}: matched by model sha256 {pm.attrs.get('model_sha256')!r}, "
                            f"but the refined set was refined by {ref.attrs.get('model_sha256')!r}; "
                            f"R's own contribution needs R's input of the same model")


def _check_sets(sets: dict[str, StampSet], sim_paths: Paths, refined_paths: Paths,
                real_path) -> None:
    """Refined pairs one to one with sim; every set has the sims' stamp shape and pixel scale."""
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


def _check_units(sets: dict[str, StampSet], paths: dict[str, list]) -> None:
    """Every set's ``/images`` in the sims' unit (`refinegan.units.same_units`): flux and noise
    distances across units would measure the units, not the stamps."""
    ref = sets["sim"].units
    for dom, s in sets.items():
        if same_units(s.units, ref):
            continue
        cfg = s.attrs.get("config")
        source = cfg.get("real", {}).get("source") if isinstance(cfg, dict) else None
        key = (f"real.{source}.flux_scale" if source in ("fits", "hdf5")
               else "real.fits.flux_scale or real.hdf5.flux_scale")
        raise ContractError(
            f"{paths[dom][0]} ({dom}): /images are in {s.units!r}, but the sims "
            f"({paths['sim'][0]}) are in {ref!r}; compare cannot convert one into the other. "
            f"Set {key} to the factor that turns {s.units!r} into the sims' counts and run "
            "prepare-real again")


def _with_morphology(sets: dict[str, StampSet], meas: dict[str, Measurement],
                     groups: dict[str, np.ndarray], p: CompareParams, rng: np.random.Generator,
                     progress: bool) -> dict[str, Measurement]:
    """statmorph on a subsample of whole groups: the same galaxies for sim and refined.

    Draws ``rng`` twice (the sim picks, then the real picks) when ``p.morphology_n > 0``.
    """
    if p.morphology_n <= 0:
        return meas
    index = {"sim": pick_groups(groups["sim"], p.morphology_n, rng)}
    index["refined"] = index["sim"]
    index["real"] = pick_groups(groups["real"], p.morphology_n, rng)
    if "psf_matched" in sets:  # paired with the sims: their galaxies
        index["psf_matched"] = index["sim"]
    out = dict(meas)
    for d in index:
        idx = index[d]
        morph = morphology(sets[d].images[idx], meas[d].scalars["noise_std"][idx],
                           threshold_sigma=p.morph_threshold_sigma, n_pixels=p.morph_n_pixels,
                           progress=progress, processes=p.morph_processes)
        out[d] = meas[d].with_morphology(morph, idx)
    return out


def compare(
    config: Mapping,
    sim_paths: Paths,
    refined_paths: Paths,
    real_path: str | os.PathLike,
    out_path: str | os.PathLike,
    plots_dir: str | os.PathLike | None = None,
    progress: bool = True,
    control_paths: Paths | None = None,
    twin_path: str | os.PathLike | None = None,
    psf_matched_paths: Paths | None = None,
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
    twin_path : path, optional
        The paired twin target (`refinegan.target.twin`: the target drawn on the sims' own
        galaxies): its m and the paired m_refined - m_twin, m_twin - m_sim
        (``calibration/twin``, ``calibration/transfer_paired``, ``calibration/twin_sim_paired``;
        `refinegan.compare.twin`) [default: None, no twin].
    psf_matched_paths : sequence of paths, optional
        R's input (``refinegan refine --matching-only``), in the sim shards' order: its
        statistics, distances, AUCs and m beside sim's and refined's, and R's own paired change
        ``calibration/paired_r_only`` (`refinegan.compare.r_only`). Without it R's own
        contribution is not measured, and nothing else changes.

    Returns
    -------
    dict
        The result tree that was written to compare.h5.
    """
    from . import plots

    config = RunConfig.of(config)
    p = CompareParams.from_config(config)
    # one generator for the whole stage, drawn in the order of the steps below
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, p.seed_offset]))
    sim_paths, refined_paths = list(sim_paths), list(refined_paths)
    control_paths = list(control_paths or [])
    pm_paths = list(psf_matched_paths or [])
    sets = _load_sets(sim_paths, refined_paths, real_path, control_paths, p.full_stamps, pm_paths)
    _check_sets(sets, sim_paths, refined_paths, real_path)
    if pm_paths:
        _check_psf_matched(sets, sim_paths, pm_paths)
    _check_units(sets, {"sim": sim_paths, "refined": refined_paths, "real": [real_path],
                        "control": control_paths, "psf_matched": pm_paths})
    twin = load_twin(twin_path, sets["sim"], p.full_stamps) if twin_path is not None else None
    logger.info("compare: %s stamps", ", ".join(f"{len(s)} {d}" for d, s in sets.items()))

    meas = {d: measure(s, p, progress, desc=d) for d, s in sets.items()}
    groups = {d: groups_of(s) for d, s in sets.items()}
    meas = _with_morphology(sets, meas, groups, p, rng, progress)
    # real vs real floor: two disjoint halves, whole groups each
    half_b = dist.group_split(groups["real"], 0.5, rng)
    data = Samples(sets, meas, groups, half_b, asinh_scale(meas["real"], sets["real"]))

    result: dict = {"stats": _stats_tree(data), "failures": _failure_counts(meas)}
    result["spectra"], result["acf"], result["histogram"] = spectra_tables(data, p)
    result["distances"] = distance_tables(data, p, rng)
    result["classifier"] = classifier_tests(data, p, rng)
    if p.mode == "calibration":  # REGAUSS on every stamp of every file, at flat memory
        files = {"sim": sim_paths, "refined": refined_paths, "real": [real_path]}
        files.update({"control": control_paths} if control_paths else {})
        files.update({"psf_matched": pm_paths} if pm_paths else {})
        files.update({"twin": [twin_path]} if twin is not None else {})
        shape_sets = stream_shape_sets(files, p, progress)
    else:
        shape_sets = set_shapes(data, p)
        if twin is not None:
            shape_sets[0]["twin"] = twin_shape_set(twin, p)
    calibration = calibrate_sets(
        data, p, rng, shape_sets,
        rng_closer=np.random.default_rng(stream_sequence(config.seed, "compare_closer")))
    result["calibration"] = calibration.tables
    n_drift = len(sets["sim"])  # the shapes of the stamps measured (all of them in full mode)
    result["labels"] = label_drift(
        meas["sim"], meas["refined"],
        *({k: v[:n_drift] for k, v in calibration.shapes[d].items()} if d in calibration.shapes
          else None for d in ("sim", "refined")))
    if pm_paths:  # its own stream: the other sets' distances and AUCs are those without it
        rng_pm = np.random.default_rng(stream_sequence(config.seed, "compare_r_only"))
        for key, tree in psf_matched_tables(data, result, p, rng_pm).items():
            for name, node in tree.items():
                result[key].setdefault(name, {}).update(node)
    # tests below their minimum number of galaxies: NaN with a reason; failed classifiers flagged
    apply_minimums(result, data)
    result["psf_match"] = psf_match_record(sets["refined"].attrs)  # recorded at training

    inputs = {"control": control_paths, "sim": sim_paths, "refined": refined_paths,
              "real": [real_path]}
    if pm_paths:
        inputs["psf_matched"] = pm_paths
    if twin_path is not None:
        inputs["twin"] = [twin_path]
    attrs = _attrs(config, data, inputs)
    if twin is not None:
        attrs["n_twin"] = len(twin)
    write_compare_h5(out_path, result, attrs)
    for line in summary_lines(result):
        logger.info("%s", line)
    plots_dir = Path(plots_dir) if plots_dir is not None else Path(out_path).parent / "plots"
    plots.make_plots(result, sets, plots_dir, scale=data.scale, n_stamps=p.plot_stamps, rng=rng)
    return result


def _stats_tree(data: Samples) -> dict:
    """The ``stats`` tree: per set its scalars, statmorph (with ``morph_index``), power and
    ``group`` (each stamp's galaxy group: copies of one galaxy, and the +g / -g twins that share a
    noise field, are not independent, so errors of means cluster on it); ``real_half_b``
    (N_real,) uint8."""
    out = {}
    for d, m in data.meas.items():
        node = dict(m.scalars)
        node["group"] = np.asarray(data.groups[d]).astype(np.int64)
        if m.has_morph:
            node.update(m.morph)
            node["morph_index"] = m.morph_index
        node["power"] = m.power
        out[d] = node
    out["real_half_b"] = data.half_b.astype(np.uint8)
    return out


def _failure_counts(meas: dict[str, Measurement]) -> dict:
    """Per domain: stamps whose HSM moments, noise statistics or statmorph failed (flagged)."""
    out = {}
    for d, m in meas.items():
        flags = m.scalars["flags"]
        out[d] = {"n": len(flags), "hsm": int((flags & FLAG_HSM > 0).sum()),
                  "noise": int((flags & FLAG_NOISE > 0).sum()),
                  "nonfinite": int((flags & FLAG_NONFINITE > 0).sum())}
        if m.has_morph:
            out[d]["morph"] = int((m.morph["morph_flag"] >= 2).sum())
            out[d]["morph_n"] = len(m.morph["morph_flag"])
        logger.info("%s: flagged stamps %s", d, out[d])
    return out


def _attrs(config: RunConfig, data: Samples, inputs: dict[str, list]) -> dict:
    """compare.h5's attributes: config, input files with their sha256, versions and counts."""
    sim, real = data.meas["sim"], data.meas["real"]
    return {"config": config.to_dict(),
            "inputs": {k: [(str(x), file_sha256(x)) for x in v] for k, v in inputs.items()},
            "versions": package_versions(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "n_sim": len(data.sets["sim"]), "n_refined": len(data.sets["refined"]),
            "n_real": len(data.sets["real"]),
            "morphology_n": int(len(sim.morph_index)) if sim.has_morph else 0,
            "morphology_n_real": int(len(real.morph_index)) if real.has_morph else 0,
            "pixel_scale_asinh_counts": data.scale, "pairs": list(PAIRS), **target_attrs(data)}
