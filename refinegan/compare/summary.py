"""The key numbers of a run on one HTML page, for the Snakemake report (`refinegan summary`).

Reads ``compare.h5`` (docs/compare.md) and writes a self-contained HTML file: the gap closed per
statistic next to its real-vs-real floor, the classifier AUCs (sim, refined, noise-only control,
floor), and the shear calibration (m per domain, paired dm, calibration transfer vs the bar).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import ContractError
from .r_only import DISTANCE_KEYS, matching_and_r_lines
from .store import read_tree

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


def headline_rows(tree: dict) -> list[list[str]]:
    """(question, value, goal, met) rows: the gap closed per family, the classifier AUCs against
    sim and the noise-only control, and the calibration transfer."""
    rows = []
    dist, clf, cal = tree["distances"], tree.get("classifier", {}), tree.get("calibration", {})

    def yes(ok):
        return "yes" if ok else "no"

    for key, label, goal, ok in (("energy_noise", "noise statistics gap closed (energy distance)",
                                  ">= 0.8", lambda g: g >= 0.8),
                                 ("energy_morph", "morphology gap closed (energy distance)", "> 0",
                                  lambda g: g > 0)):
        g = dist.get(f"gap_closed_{key}")
        if g is not None and np.isfinite(g):
            rows.append([label, _fmt(g, digits=2), goal, yes(ok(float(g)))])
    for test in ("gb_all", "cnn_pixels"):
        if test not in clf:
            continue
        auc, err = np.asarray(clf[test]["auc"]), np.asarray(clf[test]["err"])
        rows.append([f"{test} AUC refined vs real < sim vs real", f"{_fmt(auc[1], err[1])} vs "
                     f"{_fmt(auc[0], err[0])}", "lower", yes(auc[1] < auc[0])])
        if "control_auc" in clf[test]:
            c = float(clf[test]["control_auc"])
            rows.append([f"{test} AUC refined vs real < noise-only control vs real",
                         f"{_fmt(auc[1], err[1])} vs {_fmt(c, clf[test].get('control_err'))}", "lower",
                         yes(auc[1] < c)])
    t = cal.get("transfer")
    if t is not None:
        for k in (0, 1):
            a, b = float(t["abs_dm_refined_real"][k]), float(t["abs_dm_sim_real"][k])
            if not (np.isfinite(a) and np.isfinite(b)):
                continue
            rows.append([f"|m{k + 1} refined - m{k + 1} real| < |m{k + 1} sim - m{k + 1} real|",
                         f"{_fmt(a, t['abs_dm_refined_real_err'][k])} vs "
                         f"{_fmt(b, t['abs_dm_sim_real_err'][k])}", "smaller", yes(a < b)])
            rows.append([f"|m{k + 1} refined - m{k + 1} real| within the bar", _fmt(a),
                         f"<= {float(t['bar']):g}", yes(bool(t["meets_bar"][k]))])
    return rows


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
    rows = [[n, _fmt(w1[i, 0]), _fmt(w1[i, 1]), _fmt(w1[i, 2]), _fmt(gap[i], digits=2)]
            for i, n in enumerate(names)]
    for key in ("energy", "energy_noise", "energy_morph", "power_spectrum", "acf"):
        if key not in dist:
            continue
        d = np.asarray(dist[key])
        rows.append([key, _fmt(d[0]), _fmt(d[1]), _fmt(d[2]), _fmt(dist[f"gap_closed_{key}"], digits=2)])
    tables.append(("Distances to the real set (W1 per statistic; gap closed = 1 - d(refined, real) "
                   "/ d(sim, real))", ["statistic", "sim-real", "refined-real", "floor real-real",
                                       "gap closed"], rows))
    rows = []
    for test, res in tree.get("classifier", {}).items():
        auc, err = np.asarray(res["auc"]), np.asarray(res["err"])
        control = _fmt(res.get("control_auc", np.nan), res.get("control_err"))
        rows.append([test, _fmt(auc[0], err[0]), _fmt(auc[1], err[1]), control,
                     _fmt(auc[2], err[2]), _fmt(res.get("gap_closed", np.nan), digits=2)])
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
        tables.append((f"Calibration transfer (bar {float(t['bar']):g})",
                       ["", "|m_sim - m_real|", "|m_refined - m_real|", "refined meets bar",
                        "|dm| paired", "|dm| meets bar"], rows))
    rows = r_only_rows(tree)
    if rows:
        tables.append(("What PSF matching did, and what R did: " + " ".join(matching_and_r_lines(tree)),
                       ["quantity", "sim", "psf_matched (R's input)", "refined",
                        "gap closed by matching", "gap closed by R (of what matching left)"], rows))
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
             f"<h2>refinegan: key numbers of {html.escape(compare_path.name)}</h2>"]
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
