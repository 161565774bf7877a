"""The default pipeline on every panel target (config/targets/*.yaml, issue 15): one table of how
close the refined stamps come to each target, against that target's noise-only control.

For each target the whole workflow runs (``snakemake --cores N --configfile config/config.yaml
config/targets/<t>.yaml <overrides>``, results in ``results/<name>_<tag>/``), then its
compare.h5 is read:

- noise: the median sky noise sigma of refined and target stamps and their mean lag-1
  correlations (x, y), as ratios refined / target - 1 (the bound: within 1 %);
- AUCs refined vs target (gradient boosting on all statistics, the pixel CNN) with their errors
  over classifier seeds, beside the noise-only control's (the target's own noise on the sims'
  galaxies) and the real-vs-real floor;
- the morphology gap closed (energy distance) and |m - m_target| for refined and sim with errors,
  and R's own paired dm (refined vs psf_matched).

Each run is its own Snakemake call, so an interrupted bench resumes where it stopped.

    python bench/panel.py [--cores 2] [--set train.steps=300] [--tag panel] [--targets a b]
    python bench/panel.py --targets my_target.yaml                # a target outside the panel
    python bench/panel.py --tag panel --reread --json rows.json   # rows again, no runs
    python bench/panel.py --r-gain rows.json more_rows.json       # R - physics alone, paired
    python bench/panel.py --over-seeds a.json b.json ...          # bounds met over runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def _overlay(sets: list[str], name: str) -> dict:
    """A config dict from KEY=VALUE strings (YAML values), nested on the dots, and the run name."""
    out: dict = {"name": name}
    for item in sets:
        key, _, value = item.partition("=")
        node = out
        *head, last = key.split(".")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = yaml.safe_load(value)
    return out


def _cluster_sem(x: np.ndarray, groups: np.ndarray | None) -> float:
    """Standard error of mean(x) with stamps of one galaxy group correlated (cluster-robust):
    sqrt(sum over groups of (sum of x - mean)^2) / N, times sqrt(G / (G - 1)); without groups,
    the plain standard error."""
    ok = np.isfinite(x)
    if groups is None:
        return float(stats.sem(x[ok]))
    x, g = x[ok], np.asarray(groups)[ok]
    _, inv = np.unique(g, return_inverse=True)
    sums = np.bincount(inv, weights=x - x.mean())
    n_g = len(sums)
    return float(np.sqrt((sums**2).sum() * n_g / max(n_g - 1, 1)) / len(x))


def _mean_diff_err(f: h5py.File, name: str, key: str) -> float:
    """Standard error of mean(stat of ``name``) - mean(stat of the target), the two sets' errors
    in quadrature, each clustered on galaxy groups (`_cluster_sem`; compare.h5's
    ``stats/<set>/group``): the +g / -g twins of one orientation share their noise field, so
    4,096 sims hold 2,048 noise realisations and a coadd's lag-1 (scatter 0.067 from stamp to
    stamp) has a mean good to 0.0015, not the 0.0010 of independent stamps."""
    def one(s):
        g = f[f"stats/{s}/group"][()] if "group" in f[f"stats/{s}"] else None
        return _cluster_sem(f[f"stats/{s}/{key}"][()], g)

    return float(np.hypot(one(name), one("real")))


def _closer(f: h5py.File) -> dict:
    """compare's target comparison with each set on its own selection (`refinegan.compare.
    calibration.closer_than_sims`, ``transfer``): ``closer_by_<set>`` (|m_sim - m_target| -
    |m_set - m_target|, paired bootstrap error) for refined and psf_matched, and ``dm_<set>``,
    ``dm_<set>_err`` = |m_set - m_target| with the two errors in quadrature, for sim, refined
    and psf_matched. A compare.h5 written before compare compared own selections (session 16)
    gets them here from its REGAUSS shapes and its input files' labels: closer_by with the draws
    compare makes now, the |dm| errors from a fresh bootstrap of the same size."""
    t = f["calibration/transfer"]
    if "closer_by_refined_common_selection" in t:
        out = {k: t[k][()] for k in t if k.startswith("closer_by") and not k.endswith("selection")}
        out["dm_sim"], out["dm_sim_err"] = t["abs_dm_sim_real"][()], t["abs_dm_sim_real_err"][()]
        out["dm_refined"] = t["abs_dm_refined_real"][()]
        out["dm_refined_err"] = t["abs_dm_refined_real_err"][()]
        m_r, e_r = f["calibration/real/m"][()], f["calibration/real/m_err"][()]
        pm = f["calibration/psf_matched"]
        out["dm_psf_matched"] = np.abs(pm["m_own_selection"][()] - m_r)
        out["dm_psf_matched_err"] = np.hypot(pm["m_err_own_selection"][()], e_r)
        return out
    from refinegan.compare.calibration import calibrate, closer_than_sims, group_means
    from refinegan.compare.params import CompareParams
    from refinegan.io import open_stamps
    from refinegan.seeds import stream_sequence

    inputs, config = json.loads(f.attrs["inputs"]), json.loads(f.attrs["config"])
    n_boot = CompareParams.from_config(config).n_bootstrap
    grs = {}
    for name in ("sim", "refined", "psf_matched", "real"):
        cal = f.get(f"calibration/{name}")
        if cal is None or "eps1" not in cal:
            continue
        parts = []
        for path, _sha in inputs[name]:
            sf = open_stamps(ROOT / path)
            parts.append(sf.labels())
        labels = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        grs[name] = group_means(cal["eps1"][()], cal["eps2"][()], cal["regauss_status"][()] == 0,
                                labels)
    rng = np.random.default_rng(stream_sequence(config["seed"], "compare_closer"))
    out = closer_than_sims(grs, ("refined", "psf_matched"), n_boot, rng)
    boot = np.random.default_rng(int(config["seed"]))
    cals = {n: calibrate(g, n_boot, boot) for n, g in grs.items()}
    for n in ("sim", "refined", "psf_matched"):
        out[f"dm_{n}"] = np.abs(cals[n]["m"] - cals["real"]["m"])
        out[f"dm_{n}_err"] = np.hypot(cals[n]["m_err"], cals["real"]["m_err"])
    return out


def _row(path: Path, refined: str = "refined") -> dict:
    """The panel's numbers from one compare.h5, for the refined set or (``psf_matched``) R's input,
    the sims re-observed by physics alone."""
    if refined == "psf_matched":
        return _physics_row(path)
    with h5py.File(path, "r") as f:
        def med(s, k):
            return float(np.nanmedian(f[f"stats/{s}/{k}"][()]))

        def mean(s, k):
            return float(np.nanmean(f[f"stats/{s}/{k}"][()]))

        row = {
            "sigma_ratio": med("refined", "noise_std") / med("real", "noise_std") - 1,
            "sigma_sim_ratio": med("sim", "noise_std") / med("real", "noise_std") - 1,
            "lag1_ratio": [mean("refined", k) / mean("real", k) - 1 for k in ("acf_10", "acf_01")],
            "lag1_real": [mean("real", k) for k in ("acf_10", "acf_01")],
            "lag1_err": [_mean_diff_err(f, "refined", k) for k in ("acf_10", "acf_01")],
            "gap_morph": float(f["distances/gap_closed_energy_morph"][()]),
            "gap_noise": float(f["distances/gap_closed_energy_noise"][()]),
        }
        for clf in ("gb_all", "cnn_pixels"):
            g = f[f"classifier/{clf}"]
            row[clf] = {"auc": g["auc"][()].tolist(), "err": g["err"][()].tolist(),
                        "control": float(g["control_auc"][()]) if "control_auc" in g else float("nan"),
                        "control_err": float(g["control_err"][()]) if "control_err" in g else float("nan")}
            if "r_auc_change" in g:  # R's own AUC change on psf_matched's splits, paired
                row[clf]["r_change"] = float(g["r_auc_change"][()])
                row[clf]["r_change_err"] = float(g["r_auc_change_err"][()])
        closer = _closer(f)
        for k in ("dm_refined", "dm_refined_err", "dm_sim", "dm_sim_err"):
            row[k] = np.asarray(closer[k]).tolist()
        r = f["calibration/paired_r_only"]
        row["dm_r_only"] = r["dm"][()].tolist()
        row["dm_r_only_err"] = r["dm_err"][()].tolist()
        row["m_real"] = f["calibration/real/m"][()].tolist()
        row["closer_by"] = closer["closer_by_refined"].tolist()
        row["closer_by_err"] = closer["closer_by_refined_err"].tolist()
        row["lag1_r_only"], row["lag1_r_only_err"] = _r_only_lag1(f)
    return row


def _r_only_lag1(f: h5py.File) -> tuple[list[float], list[float]]:
    """R's own change of the lag-1 correlations x, y: mean(refined - psf_matched) over the same
    stamps (paired: the noise draw cancels), with its error clustered on galaxy groups."""
    means, errs = [], []
    for k in ("acf_10", "acf_01"):
        d = f[f"stats/refined/{k}"][()] - f[f"stats/psf_matched/{k}"][()]
        g = f["stats/refined/group"][()] if "group" in f["stats/refined"] else None
        means.append(float(np.nanmean(d)))
        errs.append(_cluster_sem(d, g))
    return means, errs


def _physics_row(path: Path) -> dict:
    """`_row` for the psf_matched set (the matching without R): its AUCs are compare's
    ``psf_matched_auc``; its |m - m_target| error the two sets' errors in quadrature (unpaired)."""
    with h5py.File(path, "r") as f:
        def med(s, k):
            return float(np.nanmedian(f[f"stats/{s}/{k}"][()]))

        def mean(s, k):
            return float(np.nanmean(f[f"stats/{s}/{k}"][()]))

        closer = _closer(f)
        row = {
            "sigma_ratio": med("psf_matched", "noise_std") / med("real", "noise_std") - 1,
            "lag1_ratio": [mean("psf_matched", k) / mean("real", k) - 1 for k in ("acf_10", "acf_01")],
            "lag1_real": [mean("real", k) for k in ("acf_10", "acf_01")],
            "lag1_err": [_mean_diff_err(f, "psf_matched", k) for k in ("acf_10", "acf_01")],
            "gap_morph": float(f["distances/psf_matched/gap_closed_matching_energy_morph"][()]),
            "gap_noise": float(f["distances/psf_matched/gap_closed_matching_energy_noise"][()]),
            "dm_refined": np.asarray(closer["dm_psf_matched"]).tolist(),
            "dm_refined_err": np.asarray(closer["dm_psf_matched_err"]).tolist(),
            "dm_sim": np.asarray(closer["dm_sim"]).tolist(), "dm_sim_err": np.asarray(closer["dm_sim_err"]).tolist(),
            "dm_r_only": [0.0, 0.0], "dm_r_only_err": [0.0, 0.0],
            "lag1_r_only": [0.0, 0.0], "lag1_r_only_err": [0.0, 0.0],
        }
        row["closer_by"] = closer["closer_by_psf_matched"].tolist()
        row["closer_by_err"] = closer["closer_by_psf_matched_err"].tolist()
        for clf in ("gb_all", "cnn_pixels"):
            g = f[f"classifier/{clf}"]
            auc, err = g["auc"][()].tolist(), g["err"][()].tolist()
            auc[1], err[1] = float(g["psf_matched_auc"][()]), float(g["psf_matched_err"][()])
            row[clf] = {"auc": auc, "err": err, "control": float(g["control_auc"][()]),
                        "control_err": float(g["control_err"][()])}
    return row


def _line(name: str, r: dict) -> str:
    def auc(c):
        a = r[c]
        return (f"{a['auc'][1]:.3f} +- {a['err'][1]:.3f} ({a['control']:.3f} +- {a['control_err']:.3f}; "
                f"{a['auc'][2]:.3f})")

    if "closer_by" in r:  # paired bootstrap (compare's closer_by)
        better = [r["closer_by"][i] > r["closer_by_err"][i] for i in (0, 1)]
        closer = (f"{'/'.join('yes' if b else 'no' for b in better)} ({r['closer_by'][0]:+.3f} / "
                  f"{r['closer_by'][1]:+.3f} +- {r['closer_by_err'][0]:.3f} / {r['closer_by_err'][1]:.3f})")
    else:  # rows of older --json files: the two errors in quadrature
        better = [r["dm_sim"][i] - r["dm_refined"][i] > np.hypot(r["dm_sim_err"][i], r["dm_refined_err"][i])
                  for i in (0, 1)]
        closer = f"{'/'.join('yes' if b else 'no' for b in better)} (quadrature)"
    lag_t = r["lag1_real"]
    lag_d = [(1 + q) * t - t for q, t in zip(r["lag1_ratio"], lag_t, strict=True)]
    lag_e = r.get("lag1_err", [float("nan")] * 2)
    lag_r = r.get("lag1_r_only", [float("nan")] * 2)
    lag_re = r.get("lag1_r_only_err", [float("nan")] * 2)
    return (f"| {name} | {100 * r['sigma_ratio']:+.1f} % | {lag_t[0]:.3f} / {lag_t[1]:.3f} "
            f"({lag_d[0]:+.4f} / {lag_d[1]:+.4f} +- {lag_e[0]:.4f}) | {auc('gb_all')} | {auc('cnn_pixels')} | "
            f"{r['gap_noise']:.2f} / {r['gap_morph']:.2f} | "
            f"{r['dm_refined'][0]:.3f} / {r['dm_refined'][1]:.3f} +- {r['dm_refined_err'][0]:.3f} | "
            f"{r['dm_sim'][0]:.3f} / {r['dm_sim'][1]:.3f} | {closer} | "
            f"{r['dm_r_only'][0]:+.4f} / {r['dm_r_only'][1]:+.4f} +- {r['dm_r_only_err'][0]:.4f} | "
            f"{lag_r[0]:+.4f} / {lag_r[1]:+.4f} +- {lag_re[0]:.4f} |")


HEADER = ("| target | refined sigma vs target | target lag-1 x / y (refined - target) | AUC gradient boosting "
          "(control; floor) | AUC CNN (control; floor) | gap closed noise / morphology | "
          "\\|m_refined - m_target\\| 1 / 2 | \\|m_sim - m_target\\| | refined closer by > error "
          "(closer by 1 / 2 +- paired error) | "
          "R's own paired dm | R's own lag-1 change x / y |\n|---|---|---|---|---|---|---|---|---|---|---|")


def r_gain(files: list[Path]) -> str:
    """What R adds over its own input: for every refined row of the ``--json`` files, its AUC
    (gradient boosting on all statistics, pixel CNN) minus its physics-only row's (same run, same
    target and control; negative = R made the stamps harder to tell from the target), one line per
    run, then mean +- sem over runs and how many are above zero. The two AUCs come from splits
    drawn apart, so each difference carries both sets' split noise (~0.01); rows of compare.h5
    files with compare's paired test (``r_auc_change``: the same splits, classifier seeds and
    bootstrap for both) add that one-run number with its paired error, and its mean over runs
    weighted by those errors."""
    out = ["| file | target | AUC GB refined - physics only | AUC CNN refined - physics only | "
           "paired GB (same splits) | paired CNN (same splits) |", "|---|---|---|---|---|---|"]
    diffs: dict[str, list[float]] = {"gb_all": [], "cnn_pixels": []}
    paired: dict[str, list[tuple[float, float]]] = {"gb_all": [], "cnn_pixels": []}
    for f in files:
        rows = json.loads(Path(f).read_text())
        for t, row in rows.items():
            phys = rows.get(f"{t} (physics only)")
            if t.endswith("(physics only)") or phys is None:
                continue
            d = {k: row[k]["auc"][1] - phys[k]["auc"][1] for k in diffs}
            cells = []
            for k, v in d.items():
                diffs[k].append(v)
                if "r_change" in row[k]:
                    paired[k].append((row[k]["r_change"], row[k]["r_change_err"]))
                    cells.append(f"{row[k]['r_change']:+.4f} +- {row[k]['r_change_err']:.4f}")
                else:
                    cells.append("n/a")
            out.append(f"| {Path(f).name} | {t} | {d['gb_all']:+.3f} | {d['cnn_pixels']:+.3f} | "
                       f"{cells[0]} | {cells[1]} |")
    for k, v in diffs.items():
        x = np.asarray(v)
        if len(x) > 1:
            out.append(f"{k}: mean {x.mean():+.4f} +- {x.std(ddof=1) / np.sqrt(len(x)):.4f} over {len(x)} "
                       f"runs, {(x > 0).sum()} above zero, median {np.median(x):+.4f}")
    for k, v in paired.items():
        if v:
            x, e = np.asarray(v).T
            ok = np.isfinite(x) & np.isfinite(e) & (e > 0)
            if ok.any():
                w = 1 / e[ok] ** 2
                out.append(f"{k} paired: weighted mean {np.sum(w * x[ok]) / w.sum():+.4f} +- "
                           f"{1 / np.sqrt(w.sum()):.4f} over {ok.sum()} runs, "
                           f"{(x[ok] > 2 * e[ok]).sum()} above zero by > 2 errors, "
                           f"{(x[ok] < -2 * e[ok]).sum()} below"
                           + (f"; {(e == 0).sum()} runs at exactly 0 +- 0 (an identity R, e.g. "
                              "after the harm check) left out" if (e == 0).any() else ""))
    return "\n".join(out)


def bounds(r: dict) -> dict[str, bool | None]:
    """Issue 15's bounds on one row, each True / False, or None where it cannot be judged.

    - ``sigma``: refined noise sigma within 1 % of the target's;
    - ``lag1``: each lag-1 correlation within 1 % of the target's, or not resolved from that
      (|refined - target| < 1 % of the target's + 2 errors; on a white target 2 errors);
    - ``gb``, ``cnn``: the AUC below the noise-only control's by more than the two errors (in
      quadrature), or within 2 errors of the real-vs-real floor, the AUC's and the floor's in
      quadrature: the floor is measured too (nothing left to tell apart);
    - ``closer``: |m_refined - m_target| smaller than |m_sim - m_target| by more than its paired
      error, both components; None where the sims are already within 2 errors of the target in
      both (nothing to close at this size).
    """
    out: dict[str, bool | None] = {"sigma": abs(r["sigma_ratio"]) < 0.01}
    lag_t = np.asarray(r["lag1_real"])
    lag_d = np.asarray(r["lag1_ratio"]) * lag_t
    out["lag1"] = bool(np.all(np.abs(lag_d) < 0.01 * np.abs(lag_t) + 2 * np.asarray(r["lag1_err"])))
    for key, clf in (("gb", "gb_all"), ("cnn", "cnn_pixels")):
        a = r[clf]
        auc, err, floor, floor_err = a["auc"][1], a["err"][1], a["auc"][2], a["err"][2]
        below = a["control"] - auc > np.hypot(err, a["control_err"])
        out[key] = bool(below or abs(auc - floor) < 2 * np.hypot(err, floor_err))
    if "closer_by" in r:
        nothing = all(r["dm_sim"][i] < 2 * r["dm_sim_err"][i] for i in (0, 1))
        out["closer"] = None if nothing else all(r["closer_by"][i] > r["closer_by_err"][i]
                                                 for i in (0, 1))
    return out


def over_seeds(files: list[Path]) -> str:
    """One line per panel row name over the runs in ``files`` (``--json`` files, e.g. one per
    target and seed): runs, how many met each bound (`bounds`), and the mean +- sem over runs of
    the AUCs, their controls and closer_by."""
    by: dict[str, list[dict]] = {}
    seen: dict[str, dict[str, Path]] = {}
    for f in files:
        for t, row in json.loads(Path(f).read_text()).items():
            key = json.dumps(row, sort_keys=True)
            if key in seen.setdefault(t, {}):
                raise SystemExit(f"{f}: row {t!r} is the same run as in {seen[t][key]}; "
                                 "give each run (target and seed) once")
            seen[t][key] = Path(f)
            by.setdefault(t, []).append(row)

    def ms(x, sign: str = "") -> str:
        x = np.asarray(x, float)
        sem = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
        return f"{x.mean():{sign}.3f} +- {sem:.3f}"

    out = ["| target | runs | sigma / lag-1 / GB / CNN / closer met (runs) | AUC GB (control) | "
           "AUC CNN (control) | closer by 1 / 2 (paired error, mean) | \\|m_sim - m_target\\| 1 / 2 (error, mean) |",
           "|---|---|---|---|---|---|---|"]
    for t in sorted(by, key=lambda k: (k.replace(" (physics only)", ""), k)):
        rows = by[t]
        b = [bounds(r) for r in rows]

        def met(k: str, b: list[dict] = b) -> str:
            v = [x.get(k) for x in b]
            if all(x is None for x in v):
                return "n/a"
            return f"{sum(bool(x) for x in v)}/{sum(x is not None for x in v)}"

        closer = [r for r in rows if "closer_by" in r]

        def both(key: str, sign: str = "", rows: list[dict] = closer) -> str:
            """Components 1 / 2 of ``key`` over the runs, then its mean error (``key``_err)."""
            return (f"{ms([r[key][0] for r in rows], sign)} / {ms([r[key][1] for r in rows], sign)} "
                    f"({np.mean([r[key + '_err'] for r in rows]):.3f})")

        cl = " | " if not closer else f"{both('closer_by', '+')} | {both('dm_sim')}"
        out.append(f"| {t} | {len(rows)} | {' / '.join(met(k) for k in ('sigma', 'lag1', 'gb', 'cnn', 'closer'))} | "
                   f"{ms([r['gb_all']['auc'][1] for r in rows])} ({ms([r['gb_all']['control'] for r in rows])}) | "
                   f"{ms([r['cnn_pixels']['auc'][1] for r in rows])} ({ms([r['cnn_pixels']['control'] for r in rows])}) | "
                   f"{cl} |")
    return "\n".join(out)


def target_files(names: list[str] | None, panel: Path = ROOT / "config" / "targets") -> dict:
    """Row name -> target overlay file (None: the default run's own mock). ``names`` are panel
    targets (``panel/<name>.yaml``), 'default', or paths of .yaml files outside the panel (a user's
    own target; its stem names the row); None = the whole panel and the default."""
    known: dict[str, Path | None] = {p.stem: p for p in sorted(panel.glob("*.yaml"))}
    known["default"] = None
    if not names:
        return known
    out = {}
    for t in names:
        if t in known:
            out[t] = known[t]
        elif t.endswith((".yaml", ".yml")) and Path(t).is_file():
            out[Path(t).stem] = Path(t).resolve()
        else:
            raise SystemExit(f"--targets {t}: not a panel target ({', '.join(known)}) "
                             "nor a target .yaml file")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run (YAML value), e.g. train.steps=300")
    ap.add_argument("--tag", default="panel", help="suffix of each run's name")
    ap.add_argument("--targets", nargs="*", help="target names (config/targets/<name>.yaml) "
                    "[default: all]; 'default' is the default run's own mock; a path to a .yaml file "
                    "is a target outside the panel (its `real:` over the default config)")
    ap.add_argument("--json", type=Path, help="write the rows here too")
    ap.add_argument("--table", type=Path, help="only print the table of rows written by --json")
    ap.add_argument("--reread", action="store_true", help="no runs: rows from the compare.h5 files "
                    "already in results/<name>_<tag>/ (after a change to what a row holds)")
    ap.add_argument("--r-gain", nargs="+", type=Path, metavar="ROWS_JSON",
                    help="only print what R adds over the physics alone, paired, over the runs "
                    "in these --json files (mean +- sem)")
    ap.add_argument("--over-seeds", nargs="+", type=Path, metavar="ROWS_JSON",
                    help="only print, per target, how many runs in these --json files met each "
                    "bound and the AUCs and closer_by as mean +- sem over runs")
    args = ap.parse_args()
    if args.over_seeds:
        print(over_seeds(args.over_seeds))
        return
    if args.r_gain:
        print(r_gain(args.r_gain))
        return
    if args.table:
        print(HEADER)
        for t, row in json.loads(args.table.read_text()).items():
            print(_line(t, row))
        return
    paths = target_files(args.targets)
    names = list(paths)
    rows = {}
    print(HEADER)
    for t in names:
        target = paths[t]
        base = (yaml.safe_load(target.read_text()).get("name") or f"panel_{t}") if target else "default"
        name = f"{base}_{args.tag}"
        overlay = ROOT / "results" / f"{name}.overlay.yaml"
        overlay.parent.mkdir(parents=True, exist_ok=True)
        overlay.write_text(yaml.safe_dump(_overlay(args.set, name)))
        files = [str(ROOT / "config" / "config.yaml"), *([str(target)] if target else []), str(overlay)]
        t0 = time.perf_counter()
        if not args.reread:  # the rules call `refinegan`: this Python's scripts first on PATH
            env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")])}
            subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(args.cores), "--quiet",
                            "--configfile", *files], cwd=ROOT, check=True, env=env)
        rows[t] = _row(ROOT / "results" / name / "compare.h5")
        if not args.reread:
            rows[t]["wall_s"] = time.perf_counter() - t0
        rows[f"{t} (physics only)"] = _row(ROOT / "results" / name / "compare.h5", "psf_matched")
        print(_line(t, rows[t]), flush=True)
        print(_line(f"{t} (physics only)", rows[f"{t} (physics only)"]), flush=True)
        if args.json:  # after every run: an interrupted bench keeps what it measured
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
