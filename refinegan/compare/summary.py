"""The key numbers of a run on one HTML page, for the Snakemake report (`refinegan summary`).

Reads ``compare.h5`` (docs/compare.md) and writes a self-contained HTML file: at the top the
target's source and its number of real stamps and distinct galaxies, and the PSF matching
residual training recorded (`refinegan.compare.r_only.psf_match_line`); the gap closed per
statistic next to its real-vs-real floor, the classifier AUCs (sim, refined, noise-only control,
floor), the shear calibration (m per domain, paired dm, calibration transfer vs the bar), and
each test's minimum with its verdict (`refinegan.compare.verdicts`): a test below its minimum
prints "not measured: <reason>", a failed classifier "failed classifier", never a "yes".
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import ContractError
from .calibration import BAR_M
from .r_only import DISTANCE_KEYS, matching_and_r_lines, psf_match_line
from .store import read_tree
from .verdicts import (
    AUC_FAILED_BELOW,
    AUC_FAILED_NSIGMA,
    AUC_FAILED_SIGNIFICANT,
    MEASURED,
    MIN_GROUPS_CALIBRATION,
    MIN_GROUPS_CLASSIFIER,
    MIN_GROUPS_CNN,
    MIN_GROUPS_DISTANCES,
    is_measured,
)

__all__ = ["write_summary", "summary_tables", "headline_rows"]

CALIBRATION_ROWS = ("sim", "refined", "real", "control", "refined_target_psf", "sim_reweighted",
                    "refined_reweighted")


def _fmt(x, err=None, digits=3) -> str:
    x = np.asarray(x, dtype=float)
    if not np.isfinite(x):
        return "n/a"
    text = f"{x:.{digits}g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    if err is not None and np.isfinite(err):
        text += f" ± {float(err):.2g}"
    return text


def _verdicts(node: dict, key: str = "verdict", n: int = 3) -> list[str]:
    """The stored verdict strings of a test (``n`` columns); "measured" where none is stored."""
    v = node.get(key)
    if v is None:
        return [MEASURED] * n
    return [str(x) for x in np.atleast_1d(v)]


def _first_problem(*verdicts: str) -> str | None:
    """The first verdict that is not "measured" (it says why), or None."""
    return next((str(v) for v in verdicts if not is_measured(v)), None)


def _met(ok: bool, *verdicts: str) -> str:
    """"yes" / "no", or the reason it was not measured (never "yes" then)."""
    problem = _first_problem(*verdicts)
    if problem is not None:
        return problem if problem.startswith("not measured") else f"not measured: classifier {problem}"
    return "yes" if ok else "no"


def bar_verdict(value: float, err: float, bar: float) -> str:
    """Is |value| within the bar, told apart from its error? "yes" only when |value| + 2 err <
    bar, "no" when |value| - 2 err > bar; "not resolved" otherwise, and whenever the error
    itself is above the bar (then nothing can be claimed either way)."""
    value, err = abs(float(value)), float(err)
    if not (np.isfinite(value) and np.isfinite(err)):
        return "not measured"
    if err > bar:
        return f"not resolved (error {err:.2g} > bar {bar:g})"
    if value + 2 * err < bar:
        return "yes"
    if value - 2 * err > bar:
        return "no"
    return f"not resolved (|dm| {value:.2g} +- {err:.2g} straddles the bar {bar:g})"


def _closer_not_resolved(gap: float, err: float, gap_err: float = float("nan")) -> str:
    """The verdict on "refined closer to the target than the sims" when closer_by is within 2
    errors of 0, with what would resolve it: the most refined can close is the sims' own gap to
    the target, so (2 err / gap)^2 times the stamps (errors going as 1/sqrt(N)) would tell a
    perfect refiner from none at 2 errors. A lower bound: a refiner that closes half the gap
    needs 4 times that. Where the stamps already suffice, the refiner closed less than 2 errors
    of the gap, and the verdict says so; where the gap itself is within 2 of its errors
    (``gap_err``) of 0, that the sims already read the target's m (nothing measurable to close)."""
    gap, err, gap_err = abs(float(gap)), float(err), float(gap_err)
    if not (np.isfinite(gap) and np.isfinite(err)) or gap == 0 or err <= 0:
        return "not resolved"
    more = (2 * err / gap) ** 2
    if more <= 1:
        return f"not resolved: closer by less than 2 errors ({2 * err:.2g}) of the sims' gap of {gap:.2g}"
    already = (f"the sims read the target's m within 2 errors ({gap:.2g} +- {gap_err:.2g}); "
               if np.isfinite(gap_err) and gap < 2 * gap_err else "")
    return (f"not resolved: {already}at least {more:.3g}x the stamps (sim.n, real.n) to resolve "
            f"closing the sims' gap of {gap:.2g}")


def _calibration_headline(cal: dict) -> list[list[str]]:
    """The calibration rows: the paired transfer (refined vs the twin, same galaxies) first, then
    the unpaired transfer, then R's own paired change; each "within the bar" by `bar_verdict`."""
    rows = []
    bar = float(cal.get("transfer", cal.get("transfer_paired", {})).get("bar", BAR_M))
    tp = cal.get("transfer_paired")
    if isinstance(tp, dict) and "dm" in tp:
        v = str(tp.get("verdict", MEASURED))
        for k in (0, 1):
            dm, err = float(tp["dm"][k]), float(tp["dm_err"][k])
            if not np.isfinite(dm) and is_measured(v):
                continue
            rows.append([f"|m{k + 1} refined - m{k + 1} twin| (paired, the sims' galaxies) "
                         "within the bar", _fmt(abs(dm), err), f"<= {bar:g}",
                         v if not is_measured(v) else bar_verdict(dm, err, bar)])
    t = cal.get("transfer")
    if t is not None:
        tv = str(t.get("verdict", MEASURED))
        for k in (0, 1):
            a, b = float(t["abs_dm_refined_real"][k]), float(t["abs_dm_sim_real"][k])
            if not (np.isfinite(a) and np.isfinite(b)) and is_measured(tv):
                continue
            ea = float(t["abs_dm_refined_real_err"][k])
            eb = float(t["abs_dm_sim_real_err"][k])
            if "closer_by_refined" in t:  # paired bootstrap: the sims' and refined noise cancel
                by, e_by = float(t["closer_by_refined"][k]), float(t["closer_by_refined_err"][k])
                value = f"{_fmt(a, ea)} vs {_fmt(b, eb)}; closer by {_fmt(by, e_by)} (paired)"
            else:
                by, e_by = b - a, float(np.hypot(ea, eb))
                value = f"{_fmt(a, ea)} vs {_fmt(b, eb)}"
            closer = (_closer_not_resolved(b, e_by, eb) if abs(by) < 2 * e_by
                      else _met(by > 0, tv))
            rows.append([f"|m{k + 1} refined - m{k + 1} real| < |m{k + 1} sim - m{k + 1} real|",
                         value, "smaller",
                         closer if is_measured(tv) else _met(a < b, tv)])
            rows.append([f"|m{k + 1} refined - m{k + 1} real| within the bar (unpaired)",
                         _fmt(a, ea), f"<= {float(t['bar']):g}",
                         bar_verdict(a, ea, float(t["bar"])) if is_measured(tv) else _met(False, tv)])
    p = cal.get("paired")
    if isinstance(p, dict) and "dm" in p:
        for k in (0, 1):
            dm, err = float(p["dm"][k]), float(p["dm_err"][k])
            if np.isfinite(dm):
                rows.append([f"m{k + 1} refined - m{k + 1} sim (paired: what refining did to the "
                             "shear response)", _fmt(dm, err), "reported", ""])
    return rows


def headline_rows(tree: dict) -> list[list[str]]:
    """(question, value, goal, met) rows: the gap closed per family, the classifier AUCs against
    sim and the noise-only control, and the calibration transfer. A row whose test is below its
    minimum, or whose classifier failed, says so in "met"."""
    rows = []
    dist, clf, cal = tree["distances"], tree.get("classifier", {}), tree.get("calibration", {})
    v_full, v_morph = _verdicts(dist), _verdicts(dist, "verdict_morph")
    for key, label, goal, ok, v in (("energy_noise", "noise statistics gap closed (energy distance)",
                                     ">= 0.8", lambda g: g >= 0.8, v_full),
                                    ("energy_morph", "morphology gap closed (energy distance)", "> 0",
                                     lambda g: g > 0, v_morph)):
        g = dist.get(f"gap_closed_{key}")
        if g is None:
            continue
        g = float(g)
        if np.isfinite(g) or _first_problem(v[0], v[1]):
            rows.append([label, _fmt(g, digits=2), goal, _met(np.isfinite(g) and ok(g), v[0], v[1])])
    for test in ("gb_all", "cnn_pixels"):
        if test not in clf:
            continue
        res = clf[test]
        auc, err = np.asarray(res["auc"]), np.asarray(res["err"])
        v = _verdicts(res)
        rows.append([f"{test} AUC refined vs real < sim vs real", f"{_fmt(auc[1], err[1])} vs "
                     f"{_fmt(auc[0], err[0])}", "lower", _met(auc[1] < auc[0], v[1], v[0])])
        if "control_auc" in res:
            c = float(res["control_auc"])
            rows.append([f"{test} AUC refined vs real < noise-only control vs real",
                         f"{_fmt(auc[1], err[1])} vs {_fmt(c, res.get('control_err'))}", "lower",
                         _met(auc[1] < c, v[1], str(res.get("control_verdict", MEASURED)))])
    rows += _calibration_headline(cal)
    return rows


def _cell(x, err, verdict: str, digits: int = 3) -> str:
    """A table cell: the value, "not measured", or "failed classifier (AUC ...)"."""
    if str(verdict).startswith("not measured"):
        return "not measured"
    if str(verdict).startswith("failed"):
        return f"failed classifier (AUC {_fmt(x, err, digits)})"
    return _fmt(x, err, digits)


def _minimum_rows(tree: dict) -> list[list[str]]:
    """(test, minimum, sim vs real, refined vs real, real vs real) verdict rows."""
    dist, rows = tree["distances"], []
    rows.append(["distances", f"{MIN_GROUPS_DISTANCES} galaxies per set", *_verdicts(dist)])
    if "verdict_morph" in dist:
        rows.append(["distances (statmorph subsample)", f"{MIN_GROUPS_DISTANCES} galaxies per set",
                     *_verdicts(dist, "verdict_morph")])
    for test, res in tree.get("classifier", {}).items():
        if isinstance(res, dict):
            minimum = MIN_GROUPS_CNN if test.startswith("cnn") else MIN_GROUPS_CLASSIFIER
            rows.append([f"classifier {test}", f"{minimum} galaxies per set", *_verdicts(res)])
    cal = tree.get("calibration", {})
    for domain, c in cal.items():
        if isinstance(c, dict) and "verdict" in c:
            rows.append([f"calibration {domain}", f"{MIN_GROUPS_CALIBRATION} galaxy groups",
                         str(c["verdict"]), "", ""])
    return rows


def _target_html(tree: dict) -> str:
    """The target line at the top: its source, real stamps and distinct galaxies."""
    if "n_real" not in tree:
        return ""
    source = html.escape(str(tree.get("real_source", "unknown")))
    groups = tree.get("n_real_groups")
    label = html.escape(str(tree.get("real_group_label", "")))
    text = (f"<p><b>Target:</b> {source}<br><b>Real stamps:</b> {int(tree['n_real'])}"
            + (f" of <b>{int(groups)}</b> distinct galaxies "
               + (f"(grouped by label {label})" if label != "none" else
                  "(no group label: each stamp counted as its own galaxy)")
               if groups is not None else "") + "</p>")
    problems = [r for r in _minimum_rows(tree) if any(not is_measured(v) for v in r[2:] if v)]
    if problems:
        text += ("<p><b>Warning:</b> " + str(len(problems)) + " test(s) not measured or failed "
                 "on this target; see the last table.</p>")
    return text


def summary_tables(tree: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) tables of the key numbers of a compare result tree."""
    tables = []
    dist = tree["distances"]
    head = headline_rows(tree)
    if head:
        tables.append(("Headline: is refined closer to the real set than sim? (the default run's "
                       "goals, docs/benchmarks.md)", ["question", "value", "goal", "met"], head))
    names = [str(n) for n in dist["names"]]
    w1 = np.asarray(dist["w1"])
    gap = np.asarray(dist["gap_closed_w1"])
    v_full, v_morph = _verdicts(dist), _verdicts(dist, "verdict_morph")
    rows = []
    for i, n in enumerate(names):
        v = v_morph if n.startswith("morph_") else v_full
        rows.append([n, *(_cell(w1[i, j], None, v[j]) for j in range(3)),
                     _cell(gap[i], None, _first_problem(v[0], v[1]) or MEASURED, 2)])
    for key in ("energy", "energy_noise", "energy_morph", "power_spectrum", "acf"):
        if key not in dist:
            continue
        d = np.asarray(dist[key])
        v = v_morph if key == "energy_morph" else v_full
        rows.append([key, *(_cell(d[j], None, v[j]) for j in range(3)),
                     _cell(dist[f"gap_closed_{key}"], None, _first_problem(v[0], v[1]) or MEASURED, 2)])
    tables.append(("Distances to the real set (W1 per statistic; gap closed = 1 - d(refined, real) "
                   "/ d(sim, real))", ["statistic", "sim-real", "refined-real", "floor real-real",
                                       "gap closed"], rows))
    rows = []
    for test, res in tree.get("classifier", {}).items():
        auc, err = np.asarray(res["auc"]), np.asarray(res["err"])
        v = _verdicts(res)
        control = _cell(res.get("control_auc", np.nan), res.get("control_err"),
                        str(res.get("control_verdict", MEASURED)))
        rows.append([test, _cell(auc[0], err[0], v[0]), _cell(auc[1], err[1], v[1]), control,
                     _cell(auc[2], err[2], v[2]),
                     _cell(res.get("gap_closed", np.nan), None,
                           _first_problem(v[0], v[1]) or MEASURED, 2)])
    tables.append(("Classifier two-sample tests (held-out AUC; 0.5 = indistinguishable)",
                   ["test", "sim vs real", "refined vs real", "noise-only control vs real",
                    "real vs real", "gap closed"], rows))
    cal = tree.get("calibration", {})
    rows = []
    for domain in CALIBRATION_ROWS:
        if domain in cal and "m" in cal[domain]:
            c = cal[domain]
            frac = c.get("group_failure_fraction")
            rows.append([domain] + [_fmt(c["m"][k], c["m_err"][k]) for k in (0, 1)]
                        + [_fmt(c["c"][k], c["c_err"][k]) for k in (0, 1)] + [str(c["n_groups"])]
                        + ["" if frac is None else f"{100 * float(frac):.1f} %",
                           str(c.get("selection", "own")).replace("common to", "common:")])
    if "paired" in cal:
        p = cal["paired"]
        rows.append(["paired refined - sim (dm, dc)"] + [_fmt(p["dm"][k], p["dm_err"][k]) for k in (0, 1)]
                    + [_fmt(p["dc"][k], p["dc_err"][k]) for k in (0, 1)] + [str(p["n_groups"])]
                    + ["", "common"])
    tables.append(("Shear calibration, HSM REGAUSS with each file's PSF (eps = (1 + m) g + c); "
                   "paired sets on the groups measured in all of them, reweighted = to the "
                   "target's (size, S/N)",
                   ["set", "m1", "m2", "c1", "c2", "galaxy groups", "groups left out",
                    "selection"], rows))
    if "transfer" in cal:
        t = cal["transfer"]
        rows = [[f"component {k + 1}",
                 _fmt(t["abs_dm_sim_real"][k], t["abs_dm_sim_real_err"][k]),
                 _fmt(t["abs_dm_refined_real"][k], t["abs_dm_refined_real_err"][k]),
                 str(bool(t["meets_bar"][k])), _fmt(t["abs_dm_paired"][k]),
                 str(bool(t["paired_meets_bar"][k]))] for k in (0, 1)]
        tables.append((f"Calibration transfer (bar {float(t['bar']):g}; sim and refined each on "
                       f"the galaxies it measured, as the target is; the paired sets' common "
                       f"selection: *_common_selection in compare.h5)",
                       ["", "|m_sim - m_real|", "|m_refined - m_real|", "refined meets bar",
                        "|dm| paired", "|dm| meets bar"], rows))
    rows = r_only_rows(tree)
    if rows:
        tables.append(("What PSF matching did, and what R did: " + " ".join(matching_and_r_lines(tree)),
                       ["quantity", "sim", "psf_matched (R's input)", "refined",
                        "gap closed by matching", "gap closed by R (of what matching left)"], rows))
    tables.append((f"Test minimums and verdicts (each set entering a test, or each real half for "
                   f"the floor, must hold the minimum of distinct galaxies; a held-out AUC below "
                   f"{AUC_FAILED_BELOW:g}, or below {AUC_FAILED_SIGNIFICANT:g} and "
                   f"{AUC_FAILED_NSIGMA:g} errors below 0.5, is a failed classifier)",
                   ["test", "minimum", "sim vs real", "refined vs real", "real vs real (floor)"],
                   _minimum_rows(tree)))
    return tables


def r_only_rows(tree: dict) -> list[list[str]]:
    """Rows (quantity, sim, psf_matched, refined, matching's gap closed, R's): distances to the
    real set, classifier AUCs and m; [] without a psf_matched set (`refinegan.compare.r_only`)."""
    dist, clf, cal = tree["distances"], tree.get("classifier", {}), tree.get("calibration", {})
    pm = dist.get("psf_matched")
    if not isinstance(pm, dict):
        return []
    rows = []
    for key in DISTANCE_KEYS:
        if key in pm and key in dist:
            d = np.asarray(dist[key])
            rows.append([key, _fmt(d[0]), _fmt(pm[key]), _fmt(d[1]),
                         _fmt(pm[f"gap_closed_matching_{key}"], digits=2),
                         _fmt(pm[f"gap_closed_r_{key}"], digits=2)])
    for test, c in clf.items():
        if "psf_matched_auc" in c:
            auc, err = np.asarray(c["auc"]), np.asarray(c["err"])
            rows.append([f"{test} AUC", _fmt(auc[0], err[0]),
                         _fmt(c["psf_matched_auc"], c["psf_matched_err"]), _fmt(auc[1], err[1]),
                         _fmt(c["gap_closed_matching"], digits=2), _fmt(c["gap_closed_r"], digits=2)])
            if "r_auc_change" in c:  # the same splits for both: R's change with a paired error
                change = _fmt(c["r_auc_change"], c["r_auc_change_err"])
                rows.append([f"{test} AUC, paired (on psf_matched splits)", "",
                             _fmt(c["psf_matched_auc"], c["psf_matched_err"]),
                             _fmt(c["refined_auc_paired"], c["refined_err_paired"]), "",
                             "AUC change " + (change if change == "n/a" or change.startswith("-")
                                              else "+" + change)])
    if all(k in cal and "m" in cal[k] for k in ("sim", "psf_matched", "refined")):
        for k in (0, 1):
            steps = [_fmt(q["dm"][k], q["dm_err"][k]) if q is not None else "n/a"
                     for q in (cal.get("paired_matching"), cal.get("paired_r_only"))]
            rows.append([f"m{k + 1} (paired dm of each step)"]
                        + [_fmt(cal[n]["m"][k], cal[n]["m_err"][k]) for n in ("sim", "psf_matched", "refined")]
                        + steps)
    return rows


def write_summary(compare_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Write the HTML summary of ``compare_path`` to ``out_path`` (atomically)."""
    compare_path, out_path = Path(compare_path), Path(out_path)
    try:
        with h5py.File(compare_path, "r") as f:
            tree = read_tree(f)
    except OSError as err:
        raise ContractError(f"{compare_path}: cannot read compare.h5 ({err})") from None
    if "distances" not in tree:
        raise ContractError(f"{compare_path}: no /distances group; is this a compare.h5?")
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>refinegan summary</title>",
             "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;"
             "margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}</style></head><body>",
             f"<h2>refinegan: key numbers of {html.escape(compare_path.name)}</h2>",
             _target_html(tree), f"<p>{html.escape(psf_match_line(tree))}</p>"]
    for title, header, rows in summary_tables(tree):
        parts.append(f"<h3>{html.escape(title)}</h3><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    with atomic_path(out_path) as tmp:
        tmp.write_text("\n".join(parts))
    return out_path
