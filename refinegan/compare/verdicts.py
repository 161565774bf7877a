"""Verdicts of compare: which tests a run's sets are large enough for, and which classifiers failed.

Every test states the fewest distinct galaxies (galaxy groups, `refinegan.compare.measure.groups_of`:
``group_id``, ``cat_index`` or ``pair_id``; rotated, flipped or sheared copies of one galaxy are
one group) that **each set entering it** must hold (the ``MIN_GROUPS_*`` constants below). The
floor column compares the real set's two halves, so there each half must hold the minimum. Below
it, `apply_minimums` sets the test's numbers in compare.h5 to NaN, stores a ``verdict`` string
``"not measured: <reason>"`` beside them, and warns in the log; summary.html prints the reason and
never "yes".

A classifier two-sample test whose held-out AUC is far below 0.5 (`failed_classifier`) did not
measure a distance: worse than chance on held-out data means it overfit its training split
(too few galaxies, copies of one galaxy on both sides) or is broken. Its
verdict reads ``"failed: ..."``; its AUC is kept for diagnosis, but no gap closed and no headline
verdict is drawn from it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from . import distances as dist
from .measure import group_label
from .params import MORPH_STATS
from .samples import Samples

__all__ = ["MIN_GROUPS_DISTANCES", "MIN_GROUPS_CLASSIFIER", "MIN_GROUPS_CNN",
           "MIN_GROUPS_CALIBRATION", "AUC_FAILED_BELOW", "AUC_FAILED_SIGNIFICANT",
           "AUC_FAILED_NSIGMA", "MEASURED", "failed_classifier", "shortfall", "n_distinct",
           "apply_minimums", "target_attrs", "is_measured"]

logger = logging.getLogger(__name__)

# Fewest distinct galaxies per set for each test (the floor: per real half).
MIN_GROUPS_DISTANCES = 5  # W1 / KS per statistic, energy distances, power spectrum, ACF
MIN_GROUPS_CLASSIFIER = 10  # gradient boosting on statistics: 5 held-out galaxies a side (test_fraction 0.5)
MIN_GROUPS_CNN = 50  # the pixel CNN (~1,000 weights): on 16 stamps it memorised (held-out AUC 0)
MIN_GROUPS_CALIBRATION = 4  # REGAUSS m, c from group means: a bootstrap over 4 groups has 35 distinct resamples

# A held-out AUC is a failed classifier, not a distance, when it is below AUC_FAILED_BELOW
# (far below chance whatever its error), or below AUC_FAILED_SIGNIFICANT and more than
# AUC_FAILED_NSIGMA errors below 0.5 (significantly worse than chance by a margin that matters).
AUC_FAILED_BELOW = 0.3
AUC_FAILED_SIGNIFICANT = 0.45
AUC_FAILED_NSIGMA = 3.0

MEASURED = "measured"
_COLUMNS = ("sim_real", "refined_real", "real_real")


def failed_classifier(auc: float, err: float) -> bool:
    """Whether a held-out AUC (with its error) is far below 0.5: a failed classifier.

    True when ``auc < AUC_FAILED_BELOW``, or ``auc < AUC_FAILED_SIGNIFICANT`` and
    ``auc + AUC_FAILED_NSIGMA * err < 0.5``; False for a NaN AUC (not measured).
    """
    auc, err = float(auc), float(err)
    if not np.isfinite(auc):
        return False
    if auc < AUC_FAILED_BELOW:
        return True
    return bool(np.isfinite(err) and auc < AUC_FAILED_SIGNIFICANT
                and auc + AUC_FAILED_NSIGMA * err < 0.5)


def n_distinct(groups: np.ndarray) -> int:
    """Number of distinct galaxy groups in ``groups`` (N,)."""
    return int(len(np.unique(np.asarray(groups))))


def shortfall(counts: Mapping[str, int], minimum: int, test: str) -> str | None:
    """The reason a test is not measured (a set holds fewer than ``minimum`` galaxies), or None."""
    low = [f"{name} has {int(n)}" for name, n in counts.items() if int(n) < minimum]
    if not low:
        return None
    return (f"{test} needs at least {minimum} distinct galaxies per set; " + ", ".join(low))


def is_measured(verdict) -> bool:
    """Whether a stored verdict string says measured (a missing verdict, from an older
    compare.h5, counts as measured)."""
    return verdict is None or str(verdict) == MEASURED


def _not_measured(reason: str) -> str:
    return f"not measured: {reason}"


def _column_counts(groups: Mapping[str, np.ndarray], half_b: np.ndarray) -> list[dict[str, int]]:
    """Distinct galaxies of the two sets of each column (sim_real, refined_real, real_real)."""
    real = np.asarray(groups["real"])
    return [{"sim": n_distinct(groups["sim"]), "real": n_distinct(real)},
            {"refined": n_distinct(groups["refined"]), "real": n_distinct(real)},
            {"real half A": n_distinct(real[~half_b]), "real half B": n_distinct(real[half_b])}]


def _column_verdicts(counts: list[dict[str, int]], minimum: int, test: str) -> np.ndarray:
    out = []
    for c in counts:
        reason = shortfall(c, minimum, test)
        out.append(MEASURED if reason is None else _not_measured(reason))
    return np.array(out)


def _distances(d: dict, data: Samples) -> list[str]:
    """NaN the distance columns below MIN_GROUPS_DISTANCES; ``verdict`` (3,), ``verdict_morph``."""
    groups = {k: np.asarray(v) for k, v in data.groups.items()}
    full = _column_verdicts(_column_counts(groups, data.half_b), MIN_GROUPS_DISTANCES, "distances")
    verdicts = {"full": full}
    if data.has_morph:
        mg = {k: groups[k][data.meas[k].morph_index] for k in ("sim", "refined", "real")}
        hb = data.half_b[data.meas["real"].morph_index]
        verdicts["morph"] = _column_verdicts(_column_counts(mg, hb), MIN_GROUPS_DISTANCES,
                                             "distances (statmorph subsample)")
    names = [str(n) for n in d["names"]]
    for i, name in enumerate(names):
        v = verdicts["morph"] if name in MORPH_STATS else full
        for j in range(3):
            if not is_measured(v[j]):
                for key in ("w1", "w1_err", "ks", "ks_p"):
                    d[key] = np.asarray(d[key], float)
                    d[key][i, j] = np.nan
    for key in ("energy", "energy_noise", "energy_morph", "power_spectrum", "acf"):
        if key in d:
            v = verdicts["morph"] if key == "energy_morph" else full
            d[key] = np.where([is_measured(x) for x in v], np.asarray(d[key], float), np.nan)
            d[f"gap_closed_{key}"] = float(dist.gap_closed(d[key][0], d[key][1]))
    d["gap_closed_w1"] = dist.gap_closed(d["w1"][:, 0], d["w1"][:, 1])
    d["gap_closed_ks"] = dist.gap_closed(d["ks"][:, 0], d["ks"][:, 1])
    if "w1_control" in d:
        reason = shortfall({"control": n_distinct(groups["control"]),
                            "real": n_distinct(groups["real"])}, MIN_GROUPS_DISTANCES, "distances")
        d["control_verdict"] = MEASURED if reason is None else _not_measured(reason)
        if reason is not None:
            d["w1_control"] = np.full(len(names), np.nan)
            d["ks_control"] = np.full(len(names), np.nan)
    d["verdict"] = full
    if "morph" in verdicts:
        d["verdict_morph"] = verdicts["morph"]
    d["minimum_groups"] = MIN_GROUPS_DISTANCES
    if isinstance(d.get("psf_matched"), dict):
        _psf_matched_distances(d["psf_matched"], verdicts)
    msgs = [f"distances {c}: {v}" for c, v in zip(_COLUMNS, full, strict=True) if v != MEASURED]
    if "morph" in verdicts:
        msgs += [f"distances (statmorph) {c}: {v}" for c, v in
                 zip(_COLUMNS, verdicts["morph"], strict=True) if v != MEASURED]
    return msgs + ([f"distances control_real: {d['control_verdict']}"]
                   if d.get("control_verdict", MEASURED) != MEASURED else [])


def _psf_matched_distances(pm: dict, verdicts: dict) -> None:
    """The psf_matched column has the sims' galaxies, as refined: its distances (and the gaps
    split from them) are NaN where refined's are not measured; ``verdict``, ``verdict_morph``."""
    full = verdicts["full"][1]
    morph = verdicts["morph"][1] if "morph" in verdicts else full
    for i, name in enumerate(str(n) for n in pm["names"]):
        if not is_measured(morph if name in MORPH_STATS else full):
            for key in ("w1", "w1_err", "ks", "ks_p", "gap_closed_matching_w1", "gap_closed_r_w1"):
                if key in pm:
                    pm[key] = np.asarray(pm[key], float)
                    pm[key][i] = np.nan
    for key in ("energy", "energy_noise", "energy_morph", "power_spectrum", "acf"):
        v = morph if key == "energy_morph" else full
        if key in pm and not is_measured(v):
            for k in (key, f"gap_closed_matching_{key}", f"gap_closed_r_{key}"):
                if k in pm:
                    pm[k] = np.nan
    pm["verdict"], pm["verdict_morph"] = str(full), str(morph)


def _classifier(test: str, res: dict) -> list[str]:
    """NaN the AUC columns below the test's minimum, flag failed classifiers; ``verdict`` (3,)."""
    minimum = MIN_GROUPS_CNN if test.startswith("cnn") else MIN_GROUPS_CLASSIFIER
    auc = np.asarray(res["auc"], float).copy()
    err = np.asarray(res["err"], float).copy()
    seed_aucs = np.asarray(res["seed_aucs"], float).copy()
    ng = np.asarray(res["n_groups"])  # (3, 2)
    names = [("sim", "real"), ("refined", "real"), ("real half A", "real half B")]
    verdict = []
    for j in range(3):
        reason = shortfall(dict(zip(names[j], ng[j], strict=True)), minimum, test)
        if reason is not None:
            verdict.append(_not_measured(reason))
            auc[j] = err[j] = np.nan
            seed_aucs[j] = np.nan
        elif failed_classifier(auc[j], err[j]):
            verdict.append(f"failed: held-out AUC {auc[j]:.3f} +- {err[j]:.3f} far below 0.5 "
                           "(worse than chance on held-out data: overfit or broken); not a distance")
        else:
            verdict.append(MEASURED)
    res["auc"], res["err"], res["seed_aucs"] = auc, err, seed_aucs
    res["verdict"] = np.array(verdict)
    if "psf_matched_auc" in res and verdict[1] != MEASURED:  # the sims' galaxies, as refined
        for key in ("psf_matched_auc", "psf_matched_err", "gap_closed_matching", "gap_closed_r",
                    "r_auc_change", "r_auc_change_err", "refined_auc_paired",
                    "refined_err_paired"):
            if key in res:
                res[key] = np.nan
        for key in ("psf_matched_seed_aucs", "r_auc_change_seeds"):
            if key in res:
                res[key] = np.full(np.shape(res[key]), np.nan)
    res["minimum_groups"] = minimum
    ok = [v == MEASURED for v in verdict]
    with np.errstate(invalid="ignore", divide="ignore"):
        res["gap_closed"] = (float(1.0 - (auc[1] - 0.5) / (auc[0] - 0.5)) if ok[0] and ok[1]
                             else np.nan)
    msgs = [f"classifier {test} {c}: {v}" for c, v in zip(_COLUMNS, verdict, strict=True)
            if v != MEASURED]
    if "control_auc" in res:
        cng = np.asarray(res["control_n_groups"])
        reason = shortfall({"control": cng[0], "real": cng[1]}, minimum, test)
        if reason is not None:
            res["control_verdict"] = _not_measured(reason)
            res["control_auc"] = res["control_err"] = np.nan
        elif failed_classifier(res["control_auc"], res["control_err"]):
            res["control_verdict"] = (f"failed: held-out AUC {float(res['control_auc']):.3f} far "
                                      "below 0.5; not a distance")
        else:
            res["control_verdict"] = MEASURED
        if res["control_verdict"] != MEASURED:
            msgs.append(f"classifier {test} control_real: {res['control_verdict']}")
    return msgs


# kept below the minimum: counts, the bar, and the per-stamp shapes (measurements, not the test);
# every other float becomes NaN and every boolean (meets_bar ...) False
_CAL_KEPT = ("n_groups", "n_stamps_failed", "n_groups_dropped", "bar", "minimum_groups",
             "regauss_status", "eps1", "eps2")


def _nan_like(x) -> np.ndarray:
    return np.full(np.shape(x), np.nan)


def _calibration(cal: dict) -> list[str]:
    """NaN the calibrations (and paired differences) of fewer than MIN_GROUPS_CALIBRATION groups,
    and the transfers that read one; ``verdict`` strings."""
    msgs, low = [], set()
    for key, c in cal.items():
        if not isinstance(c, dict) or "n_groups" not in c:
            continue
        reason = shortfall({key: c["n_groups"]}, MIN_GROUPS_CALIBRATION, "calibration")
        c["verdict"] = MEASURED if reason is None else _not_measured(reason)
        c["minimum_groups"] = MIN_GROUPS_CALIBRATION
        if reason is not None:
            low.add(key)
            for name, v in list(c.items()):
                kind = np.asarray(v).dtype.kind
                if name in _CAL_KEPT or kind not in "fb":
                    continue
                c[name] = _nan_like(v) if kind == "f" else np.zeros(np.shape(v), bool)
            msgs.append(f"calibration {key}: {c['verdict']}")
    for key, needs in (("transfer", ("sim", "refined", "real", "paired")),
                       ("transfer_target_psf", ("sim", "refined_target_psf", "real",
                                                "paired_target_psf"))):
        t = cal.get(key)
        if not isinstance(t, dict):
            continue
        missing = [n for n in needs if n in low]
        if not missing:
            t["verdict"] = MEASURED
            continue
        t["verdict"] = _not_measured(f"it reads {', '.join(missing)}, below the calibration "
                                     f"minimum of {MIN_GROUPS_CALIBRATION} galaxy groups")
        for name, v in list(t.items()):
            if name.startswith(("abs_dm", "closer_by")):
                t[name] = _nan_like(v)
            elif name.startswith(("meets_bar", "resolved", "paired_meets_bar")):
                t[name] = np.zeros(np.shape(v), bool)
        msgs.append(f"calibration {key}: {t['verdict']}")
    return msgs


def apply_minimums(result: dict, data: Samples) -> list[str]:
    """Apply every test's minimum and the failed-classifier rule to compare's result tree.

    Parameters
    ----------
    result : dict
        compare's tree (``distances``, ``classifier``, ``calibration``), changed in place: values
        of tests below their minimum become NaN (``meets_bar`` False), and ``verdict`` strings
        (``"measured"``, ``"not measured: <reason>"`` or ``"failed: <reason>"``) and
        ``minimum_groups`` go beside them.
    data : Samples
        The sets' galaxy groups and the real half split.

    Returns
    -------
    list of str
        One line per test column not measured or failed; each is also logged as a warning.
    """
    msgs = []
    if "distances" in result:
        msgs += _distances(result["distances"], data)
    for test, res in result.get("classifier", {}).items():
        if isinstance(res, dict) and "n_groups" in res:
            msgs += _classifier(test, res)
    if "calibration" in result:
        msgs += _calibration(result["calibration"])
    for m in msgs:
        logger.warning("%s", m)
    return msgs


def target_attrs(data: Samples) -> dict:
    """compare.h5 attributes describing the target: its ``source`` attribute, the number of real
    stamps and of distinct galaxies, and the label the galaxies were grouped by."""
    real = data.sets["real"]
    label = group_label(real)
    return {"real_source": str(real.attrs.get("source", "unknown")),
            "n_real_groups": n_distinct(data.groups["real"]),
            "real_group_label": label or "none",
            "n_sim_groups": n_distinct(data.groups["sim"])}
