"""Writing compare.h5 and the printed summary table (layout: docs/compare.md).

The result of `refinegan.compare.compare.compare` is a nested dict; `write_tree` stores it as HDF5: a dict
becomes a group, an array or number a dataset, a string an attribute of its parent group. Written
atomically (``F.tmp`` then `os.replace`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from .r_only import matching_and_r_lines, psf_match_line

__all__ = ["write_tree", "write_compare_h5", "read_tree", "summary_lines"]

logger = logging.getLogger(__name__)

COMPARE_SCHEMA_VERSION = 1

# ``units`` attribute of each dataset, by dataset name; anything else is dimensionless ("").
UNITS = {
    "flux": "counts", "hsm_flux": "counts", "noise_mean": "counts", "noise_std": "counts",
    "hsm_sigma": "pixels", "hlr_pix": "pixels", "hsm_dx": "pixels", "hsm_dy": "pixels", "morph_r50": "pixels",
    "centroid_pix": "pixels", "power": "counts^2", "mean": "", "err": "", "k": "cycles/pixel",
    "lags": "pixels", "edges": "asinh(pixel / scale_counts)", "scale_counts": "counts",
    "w1": "units of each statistic (see names)", "w1_control": "units of each statistic",
    "morph_index": "row in the domain's stamps", "group": "galaxy group label", "n": "count", "n_groups": "count",
    "residual": "fraction of the target PSF's peak", "bound": "fraction of the target PSF's peak",
}


def write_tree(group: h5py.Group, tree: Mapping) -> None:
    """Store a nested dict under ``group`` (see module docstring)."""
    for key, value in tree.items():
        key = str(key)
        if isinstance(value, Mapping):
            write_tree(group.create_group(key), value)
        elif isinstance(value, str):
            group.attrs[key] = value
        elif value is None:
            group.attrs[key] = "none"
        else:
            arr = np.asarray(value)
            if arr.dtype.kind == "U":
                arr = arr.astype("S")
            ds = group.create_dataset(key, data=arr)
            units = UNITS.get(key, "")
            if key == "mean" and group.parent.name == "/spectra":
                units = "counts^2"
            ds.attrs["units"] = units


def read_tree(group: h5py.Group) -> dict:
    """Inverse of `write_tree` (byte strings decoded)."""
    out: dict = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in group.attrs.items()}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = read_tree(item)
        else:
            value = item[()]
            if isinstance(value, np.ndarray) and value.dtype.kind == "S":
                value = value.astype(str)
            out[key] = value
    return out


def write_compare_h5(path: str | os.PathLike, result: Mapping, attrs: Mapping) -> Path:
    """Write ``result`` to ``path`` atomically with file attributes ``attrs`` (JSON for dicts)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["compare_schema_version"] = COMPARE_SCHEMA_VERSION
        for key, value in attrs.items():
            f.attrs[key] = (json.dumps(value, sort_keys=True, default=str)
                            if isinstance(value, Mapping | list | tuple) else value)
        write_tree(f, result)
    logger.info("wrote %s", path)
    return path


def _fmt(x: float, width: int = 9) -> str:
    if x is None or not np.isfinite(x):
        return "nan".rjust(width)
    return (" " + (f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}")).rjust(width)


def summary_lines(result: Mapping) -> list[str]:
    """The summary table: distances with gap closed and floor, classifier AUCs, calibration."""
    d = result["distances"]
    lines = ["statistic            W1 sim   W1 ref  W1 floor  gap(W1)   KS sim   KS ref KS floor"]
    for i, name in enumerate(d["names"]):
        w1, ks = d["w1"][i], d["ks"][i]
        lines.append(f"{str(name):<16}" + "".join(_fmt(v) for v in (*w1, d["gap_closed_w1"][i]))
                     + "".join(_fmt(v) for v in ks))
    for key in ("energy", "power_spectrum", "acf"):
        v = d[key]
        lines.append(f"{key:<16}" + "".join(_fmt(x) for x in v)
                     + _fmt(d[f"gap_closed_{key}"]))
    lines.append("classifier AUC      sim-real     refined-real     real-real   gap closed")
    for key, c in result.get("classifier", {}).items():
        cells = [f"{a:.3f}+-{e:.3f}".rjust(14) for a, e in zip(c["auc"], c["err"], strict=True)]
        lines.append(f"{key:<16}" + "".join(cells) + _fmt(c["gap_closed"]))
    drift = result.get("labels", {})
    cells = [f"{k} {_fmt(v['median_abs']).strip()}/{_fmt(v['p95_abs']).strip()}"
             for k, v in drift.items() if isinstance(v, Mapping)]
    if cells:
        lines.append("label drift refined-sim, median/95th pct of |drift|: " + ", ".join(cells))
    cal = result.get("calibration", {})
    for dom in ("sim", "refined", "real", "control", "refined_target_psf", "refined_reweighted",
                "psf_matched", "twin"):
        if dom in cal and "m" in cal[dom]:
            c = cal[dom]
            lines.append(
                f"calibration {dom:<8} m1={_fmt(c['m'][0]).strip()}+-{_fmt(c['m_err'][0]).strip()}"
                f" m2={_fmt(c['m'][1]).strip()}+-{_fmt(c['m_err'][1]).strip()}"
                f" c1={_fmt(c['c'][0]).strip()}+-{_fmt(c['c_err'][0]).strip()}"
                f" c2={_fmt(c['c'][1]).strip()}+-{_fmt(c['c_err'][1]).strip()}"
                f" ({c['n_groups']} groups, {c['n_stamps_failed']} stamps failed"
                + (f", {100 * float(c['group_failure_fraction']):.1f} % of groups left out"
                   if "group_failure_fraction" in c else "") + ")"
            )
    for key, label in (("paired", "refined-sim"), ("paired_r_only", "refined-psf_matched")):
        if key in cal:
            p = cal[key]
            lines.append(f"paired {label}  dm={p['dm']} +- {p['dm_err']}  dc={p['dc']} +- {p['dc_err']}")
    for key, label in (("transfer_paired", "refined-twin"), ("twin_sim_paired", "twin-sim")):
        if key in cal:
            t = cal[key]
            lines.append(f"paired {label} dm={t['dm']} +- {t['dm_err']} (unpaired error "
                         f"{t['dm_err_unpaired']}); meets {t['bar']:g}: {t['meets_bar']}")
    for key, label in (("transfer", "sim PSF"), ("transfer_target_psf", "target PSF")):
        if key in cal:
            t = cal[key]
            lines.append(
                f"calibration transfer ({label}) |m_ref-m_real|={t['abs_dm_refined_real']} +- "
                f"{t['abs_dm_refined_real_err']} vs |m_sim-m_real|={t['abs_dm_sim_real']} +- "
                f"{t['abs_dm_sim_real_err']}; meets {t['bar']:g}: {t['meets_bar']}"
            )
            if "closer_by_refined" in t:
                lines.append(f"  refined closer to the target's m than the sims by "
                             f"{t['closer_by_refined']} +- {t['closer_by_refined_err']} (paired)")
    return lines + [psf_match_line(result)] + matching_and_r_lines(result)
