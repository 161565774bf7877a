"""R's own contribution, measured apart from the matching: the ``psf_matched`` set.

The psf_matched set is R's input: the sims through the model's PSF matching (with white noise
restored) and, with ``train.noise_match``, the target's noise; no R (``refinegan refine
--matching-only``, `refinegan.refiner.refine.refine`). It pairs stamp for stamp with sim and
refined. `psf_matched_tables` measures it as one more column beside theirs, and splits each gap
in two:

- what the matching did: ``gap_closed_matching = 1 - d(psf_matched, real) / d(sim, real)``;
- what R did on top: ``gap_closed_r = 1 - d(refined, real) / d(psf_matched, real)``, the share
  of the gap left after matching that R closed (AUCs as ``AUC - 0.5``);
- shear calibration (in `refinegan.compare.calibration.calibrate_sets`, where psf_matched is one
  of the paired sets on the sims' galaxies and shares their selection): ``psf_matched``'s m, c;
  ``paired_matching`` (psf_matched - sim) and ``paired_r_only`` (refined - psf_matched, R's own
  dm on the same galaxies, with errors);
- classifiers: each test runs on psf_matched vs real and, with the same splits, classifier seeds
  and bootstrap resamples, on refined vs real (`refinegan.compare.distances.paired_classifier_auc`):
  ``r_auc_change`` = AUC(refined) - AUC(psf_matched) with a paired error, R's own change of how
  well the target can be told apart in one run. compare's ``auc`` column for refined uses other
  splits (the main stream), so ``auc[1] - psf_matched_auc`` carries both sets' split noise
  (about 0.01: an identity R read +0.012 there, docs/benchmarks.md, session 14); an identity R
  reads exactly 0 +- 0 here.

`psf_match_record` carries the matching's own residual (max |K * psf_sim - psf_target| of the
target PSF's peak, computed when the refiner was trained and bounded there) from the refined
files' attributes (``psf_match_residual``, ``psf_match_residual_max``) to compare.h5
(``/psf_match``) and `psf_match_line` to the summary; compare reads it from the files, never
from the refiner stage.

The distances and classifier tests here draw from their own random stream (``compare_r_only``),
after the rest of compare, so giving the psf_matched set changes none of the other sets'
distances and AUCs; it can change their calibration, since a group that fails in psf_matched is
dropped from every paired set.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .classifiers import tests_vs_real
from .params import CompareParams
from .samples import Samples
from .tables import distances_to_real

__all__ = ["psf_matched_tables", "matching_and_r_lines", "psf_match_record", "psf_match_line",
           "DISTANCE_KEYS"]

DISTANCE_KEYS = ("energy", "energy_noise", "energy_morph", "power_spectrum", "acf")


def _gap(base, new) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(1.0 - np.asarray(new, float) / np.asarray(base, float))


def psf_matched_tables(data: Samples, result: Mapping, p: CompareParams,
                       rng: np.random.Generator) -> dict:
    """The psf_matched entries of compare.h5, to merge into ``result`` (compare's tree so far).

    Parameters
    ----------
    data : Samples
        With a ``psf_matched`` set (and its measurements) paired with the sims.
    result : mapping
        compare's ``distances`` and ``classifier`` trees (sim and refined columns).
    p : CompareParams
    rng : numpy.random.Generator
        Drawn in this order: distances, classifier tests.

    Returns
    -------
    dict
        ``distances``: ``{"psf_matched": ...}`` (`distances_to_real`, with ``gap_closed_matching_*``
        and ``gap_closed_r_*`` per distance and ``gap_closed_*_w1`` (S,)); ``classifier``: per
        test ``psf_matched_auc``, ``psf_matched_err``, ``psf_matched_seed_aucs``,
        ``gap_closed_matching``, ``gap_closed_r``, and the paired ``r_auc_change``,
        ``r_auc_change_err``, ``r_auc_change_seeds`` (seeds,), ``refined_auc_paired``,
        ``refined_err_paired`` (refined vs real on psf_matched's splits).
    """
    d = result["distances"]
    pm = distances_to_real(data, "psf_matched", p, rng)
    for key in DISTANCE_KEYS:
        if key in pm and key in d:
            pm[f"gap_closed_matching_{key}"] = _gap(d[key][0], pm[key])
            pm[f"gap_closed_r_{key}"] = _gap(pm[key], d[key][1])
    rows = [list(map(str, d["names"])).index(n) for n in pm["names"]]
    w1 = np.asarray(d["w1"])[rows]  # (S, 3) sim, refined, floor
    with np.errstate(invalid="ignore", divide="ignore"):
        pm["gap_closed_matching_w1"] = 1.0 - pm["w1"] / w1[:, 0]
        pm["gap_closed_r_w1"] = 1.0 - w1[:, 1] / pm["w1"]
    pm["definition"] = ("psf_matched vs real; gap_closed_matching = 1 - d(psf_matched, real) / "
                        "d(sim, real), gap_closed_r = 1 - d(refined, real) / d(psf_matched, real)")
    clf = {}
    for test, r in tests_vs_real(data, "psf_matched", p, rng, paired="refined").items():
        if test not in result.get("classifier", {}):
            continue
        auc = np.asarray(result["classifier"][test]["auc"])
        clf[test] = {"psf_matched_auc": r["auc"], "psf_matched_err": r["err"],
                     "psf_matched_seed_aucs": r["seed_aucs"], "psf_matched_n": r["n"],
                     "gap_closed_matching": _gap(auc[0] - 0.5, r["auc"] - 0.5),
                     "gap_closed_r": _gap(r["auc"] - 0.5, auc[1] - 0.5)}
        if "diff" in r:
            clf[test].update({"r_auc_change": r["diff"], "r_auc_change_err": r["diff_err"],
                              "r_auc_change_seeds": r["seed_diffs"],
                              "refined_auc_paired": r["paired_auc"],
                              "refined_err_paired": r["paired_err"]})
    return {"distances": {"psf_matched": pm}, "classifier": clf}


def _f(x, digits: int = 3) -> str:
    x = float(np.asarray(x, float))
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def matching_and_r_lines(tree: Mapping) -> list[str]:
    """Two sentences, what the matching did and what R did, from a compare tree; [] without a
    psf_matched set."""
    pm = tree.get("distances", {}).get("psf_matched")
    if not isinstance(pm, Mapping):
        return []
    clf, cal = tree.get("classifier", {}), tree.get("calibration", {})
    parts = {"matching": [], "r": []}
    for key, label in (("energy", "energy"), ("energy_noise", "noise"), ("energy_morph", "morphology")):
        if f"gap_closed_matching_{key}" in pm:
            parts["matching"].append(f"{label} {_f(pm[f'gap_closed_matching_{key}'], 2)}")
            parts["r"].append(f"{label} {_f(pm[f'gap_closed_r_{key}'], 2)}")
    text = {k: [f"gap closed ({', '.join(v)})"] if v else [] for k, v in parts.items()}
    for test in ("gb_all", "cnn_pixels"):
        c = clf.get(test, {})
        if "psf_matched_auc" in c:
            auc = np.asarray(c["auc"])
            text["matching"].append(f"{test} AUC {_f(auc[0])} -> {_f(c['psf_matched_auc'])}")
            text["r"].append(f"{test} AUC {_f(c['psf_matched_auc'])} -> {_f(auc[1])}")
            if "r_auc_change" in c:
                text["r"][-1] += (f" (paired, same splits: {float(c['r_auc_change']):+.3f} +- "
                                  f"{_f(c['r_auc_change_err'], 2)})")
    for key, who in (("paired_matching", "matching"), ("paired_r_only", "r")):
        if key in cal:
            q = cal[key]
            text[who].append("dm1 " + f"{_f(q['dm'][0])} +- {_f(q['dm_err'][0], 2)}, dm2 "
                             f"{_f(q['dm'][1])} +- {_f(q['dm_err'][1], 2)}")
    return [f"PSF matching did (sim -> psf_matched): {'; '.join(text['matching']) or 'n/a'}",
            f"R did (psf_matched -> refined, same galaxies): {'; '.join(text['r']) or 'n/a'}"]


def psf_match_record(refined_attrs: Mapping) -> dict:
    """``/psf_match`` of compare.h5 from the refined set's file attributes: ``residual`` (max
    |K * psf_sim - psf_target| as a fraction of the target PSF's peak) and ``bound`` (the largest
    training accepted), NaN when not recorded; ``status`` "recorded" or why not (no PSF matching,
    or a refined file from a model that predates the record)."""
    nan = float("nan")
    if "psf_match_residual" in refined_attrs:
        return {"residual": float(refined_attrs["psf_match_residual"]),
                "bound": float(refined_attrs.get("psf_match_residual_max", nan)),
                "status": "recorded"}
    why = ("the refined files' model predates the record (train it again to record it)"
           if "psf_match_kernel" in refined_attrs else
           "the refined set was not PSF-matched (train.psf_match off)")
    return {"residual": nan, "bound": nan, "status": f"not recorded: {why}"}


def psf_match_line(tree: Mapping) -> str:
    """"PSF matching residual: X of the target PSF's peak (bound B)", or "... not recorded (why)"
    (also for a compare.h5 written before ``/psf_match`` existed)."""
    rec = tree.get("psf_match")
    if not isinstance(rec, Mapping) or not np.isfinite(float(rec.get("residual", np.nan))):
        status = str(rec.get("status", "")) if isinstance(rec, Mapping) else ""
        why = status.split(": ", 1)[1] if ": " in status else "compare.h5 has no /psf_match"
        return f"PSF matching residual: not recorded ({why})"
    return (f"PSF matching residual: {_f(rec['residual'])} of the target PSF's peak (bound "
            f"{_f(rec.get('bound', np.nan))})")
