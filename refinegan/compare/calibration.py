"""Shear calibration (m, c) from +/-g, 90-degree-rotated pairs with HSM REGAUSS.

Estimator: `galsim.hsm.EstimateShear(..., shear_est="REGAUSS")` with the file's ``/psf``; the
PSF-corrected distortion e = (a^2-b^2)/(a^2+b^2) is turned into the reduced-shear-type
ellipticity eps = e / (1 + sqrt(1 - |e|^2)), whose mean over an isotropic population is g.

Model: eps_hat = (1 + m) g + c per component. For each galaxy group (``pair_id``: its twins at
rot90 in (0, 1) and shear_sign in (+1, -1)) let eps_+ and eps_- be the mean over rotations of the
+g and -g twins, and g_+, g_- the applied shears. Then

    m = sum_groups(eps_+ - eps_-) / sum_groups(g_+ - g_-) - 1
    c = mean_groups((eps_+ + eps_-) / 2) - (1 + m) mean_groups((g_+ + g_-) / 2)

Rotated twins cancel the intrinsic shape, +/-g twins the noise-and-shape response to first order.
m is NaN for a component whose applied shear is zero. A group with any failed stamp is left out
of the fit (and counted); errors are the std over bootstrap resamples of groups. Paired
differences (sim vs refined) resample the same groups for both, so shared shape noise cancels.

`calibrate_sets` is compare's calibration step: m, c per domain, the paired refined - sim
difference and the calibration transfer, returned with the REGAUSS shapes it measured
(`Calibration`) for the label drift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import galsim
import numpy as np

from ..io import StampSet
from .measure import Measurement
from .params import CompareParams
from .samples import Samples

__all__ = [
    "Calibration",
    "calibrate_sets",
    "regauss_shapes",
    "Groups",
    "group_means",
    "fit_mc",
    "calibrate",
    "paired_difference",
    "transfer",
    "r_only_calibration",
    "BAR_M",
]

logger = logging.getLogger(__name__)

BAR_M = 2e-3  # weak-lensing requirement on |m| (e.g. LSST DESC SRD, Stage IV surveys)


def regauss_shapes(
    images: np.ndarray,
    psf: np.ndarray,
    noise_var: np.ndarray | float = 0.0,
    mask: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """REGAUSS PSF-corrected shapes of each stamp.

    Parameters
    ----------
    images : ndarray (N, H, W), counts
    psf : ndarray (h, w) or (N, h, w)
        PSF image(s) at the stamp pixel scale (the file's ``/psf``).
    noise_var : float or ndarray (N,)
        Sky noise variance per pixel, counts^2 (REGAUSS uses it for its resolution cut).
    mask : ndarray (N, H, W), optional
        Non-zero = bad pixel.

    Returns
    -------
    dict of (N,) arrays: ``eps1``, ``eps2`` (reduced-shear-type ellipticity), ``resolution``
    (REGAUSS R2) and ``status`` (0 = success; GalSim's correction_status otherwise, -1 for |e|>=1).
    """
    n = len(images)
    noise_var = np.broadcast_to(np.nan_to_num(np.asarray(noise_var, float)), (n,))
    psf = np.asarray(psf, dtype=np.float64)
    out = {k: np.full(n, np.nan) for k in ("eps1", "eps2", "resolution")}
    status = np.zeros(n, np.int16)
    psf_img = galsim.Image(np.ascontiguousarray(psf)) if psf.ndim == 2 else None
    for i in range(n):
        x = np.array(images[i], dtype=np.float64)
        bad = ~np.isfinite(x)
        if mask is not None:
            bad |= np.asarray(mask[i]) != 0
        x[bad] = 0.0  # non-finite pixels are bad pixels
        gal = galsim.Image(x)
        p = psf_img if psf_img is not None else galsim.Image(np.ascontiguousarray(psf[i]))
        badpix = galsim.Image(bad.astype(np.int32)) if bad.any() else None
        res = galsim.hsm.EstimateShear(gal, p, badpix=badpix, sky_var=float(noise_var[i]),
                                       shear_est="REGAUSS", strict=False)
        if res.correction_status != 0:
            status[i] = res.correction_status
            continue
        e1, e2 = res.corrected_e1, res.corrected_e2
        e2sq = e1 * e1 + e2 * e2
        if not (np.isfinite(e2sq) and e2sq < 1.0):
            status[i] = -1
            continue
        f = 1.0 / (1.0 + np.sqrt(1.0 - e2sq))  # distortion -> reduced-shear ellipticity
        out["eps1"][i], out["eps2"][i] = e1 * f, e2 * f
        out["resolution"][i] = res.resolution_factor
    out["status"] = status
    n_fail = int((status != 0).sum())
    if n_fail:
        logger.info("REGAUSS failed on %d of %d stamps", n_fail, n)
    return out


@dataclass
class Groups:
    """Per-group +/-g means. Arrays (G, 2): one row per group, one column per component.

    ``d_hat = eps_+ - eps_-``, ``d = g_+ - g_-``, ``s_hat = (eps_+ + eps_-)/2``,
    ``s = (g_+ + g_-)/2``. Without +/-g twins, ``d_hat`` and ``d`` are zero.
    """

    pair_id: np.ndarray  # (G,)
    d_hat: np.ndarray
    d: np.ndarray
    s_hat: np.ndarray
    s: np.ndarray
    n_stamps_failed: int
    n_groups_dropped: int
    has_sign_pairs: bool

    def __len__(self) -> int:
        return len(self.pair_id)

    def take(self, idx: np.ndarray) -> Groups:
        return Groups(self.pair_id[idx], self.d_hat[idx], self.d[idx], self.s_hat[idx],
                      self.s[idx], self.n_stamps_failed, self.n_groups_dropped,
                      self.has_sign_pairs)


def group_means(eps1, eps2, ok, labels: dict) -> Groups:
    """Collapse stamps into galaxy groups (see module docstring).

    ``labels`` needs ``g1``, ``g2``; ``pair_id`` (default: each stamp its own group) and
    ``shear_sign`` (default: all +1) are used when present.
    """
    n = len(eps1)
    pair = np.asarray(labels["pair_id"]) if "pair_id" in labels else np.arange(n)
    sign = np.asarray(labels["shear_sign"]) if "shear_sign" in labels else np.ones(n)
    uniq, inv = np.unique(pair, return_inverse=True)
    g = len(uniq)
    size = np.bincount(inv, minlength=g)
    good = np.bincount(inv, weights=np.asarray(ok, float), minlength=g)
    keep = good == size
    est = np.stack([np.nan_to_num(eps1), np.nan_to_num(eps2)], axis=1)  # (N, 2)
    tru = np.stack([np.asarray(labels["g1"], float), np.asarray(labels["g2"], float)], axis=1)
    plus, minus = sign > 0, sign < 0
    n_plus = np.bincount(inv, weights=plus, minlength=g)
    n_minus = np.bincount(inv, weights=minus, minlength=g)
    has_sign = bool((n_minus > 0).any())
    keep &= (n_plus > 0) & ((n_minus > 0) if has_sign else True)

    def gmean(values: np.ndarray, sel: np.ndarray, count: np.ndarray) -> np.ndarray:
        cols = [np.bincount(inv, weights=values[:, j] * sel, minlength=g) for j in range(2)]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.stack(cols, axis=1) / count[:, None]

    ep, gp = gmean(est, plus, n_plus), gmean(tru, plus, n_plus)
    if has_sign:
        em, gm = gmean(est, minus, n_minus), gmean(tru, minus, n_minus)
        d_hat, d, s_hat, s = ep - em, gp - gm, (ep + em) / 2, (gp + gm) / 2
    else:
        d_hat, d, s_hat, s = np.zeros_like(ep), np.zeros_like(gp), ep, gp
    return Groups(uniq[keep], d_hat[keep], d[keep], s_hat[keep], s[keep],
                  int(n - np.sum(ok)), int((~keep).sum()), has_sign)


def fit_mc(gr: Groups) -> tuple[np.ndarray, np.ndarray]:
    """(m, c), each (2,), from a `Groups` (m NaN where the applied shear difference is 0)."""
    if len(gr) == 0:
        return np.full(2, np.nan), np.full(2, np.nan)
    dsum = gr.d.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(np.abs(dsum) > 1e-12, gr.d_hat.sum(axis=0) / dsum - 1.0, np.nan)
    c = gr.s_hat.mean(axis=0) - np.where(np.isfinite(m), 1.0 + m, 1.0) * gr.s.mean(axis=0)
    return m, c


def _boot_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(n_boot, n))


def calibrate(gr: Groups, n_boot: int, rng: np.random.Generator) -> dict:
    """m, c (2,) with bootstrap errors over groups, and the bootstrap samples (n_boot, 2)."""
    m, c = fit_mc(gr)
    boots = [fit_mc(gr.take(idx)) for idx in _boot_indices(len(gr), n_boot, rng)]
    mb = np.array([b[0] for b in boots]).reshape(-1, 2)
    cb = np.array([b[1] for b in boots]).reshape(-1, 2)
    return {"m": m, "c": c, "m_err": _std(mb), "c_err": _std(cb), "m_boot": mb, "c_boot": cb,
            "n_groups": len(gr), "n_stamps_failed": gr.n_stamps_failed,
            "n_groups_dropped": gr.n_groups_dropped}


def _std(x: np.ndarray) -> np.ndarray:
    """Std (ddof=1) over bootstrap samples per column; NaN where fewer than 2 are finite."""
    out = np.full(x.shape[1:], np.nan)
    for j in range(x.shape[1]):
        v = x[:, j][np.isfinite(x[:, j])]
        if v.size > 1:
            out[j] = v.std(ddof=1)
    return out


def paired_difference(a: Groups, b: Groups, n_boot: int, rng: np.random.Generator) -> dict:
    """dm = m_b - m_a and dc = c_b - c_a on the groups both measured, same bootstrap draws.

    With +/-g twins this is also the shear-commutation check: dm is how much refining the +g and
    -g twins moved the measured response (eps_+ - eps_-) / (g_+ - g_-) of the same galaxies.
    """
    common, ia, ib = np.intersect1d(a.pair_id, b.pair_id, return_indices=True)
    a, b = a.take(ia), b.take(ib)
    ma, ca = fit_mc(a)
    mb, cb = fit_mc(b)
    dms, dcs = [], []
    for idx in _boot_indices(len(common), n_boot, rng):
        m1, c1 = fit_mc(a.take(idx))
        m2, c2 = fit_mc(b.take(idx))
        dms.append(m2 - m1)
        dcs.append(c2 - c1)
    dms, dcs = np.array(dms).reshape(-1, 2), np.array(dcs).reshape(-1, 2)
    # per-galaxy response shift: a refiner that undoes shear on some galaxies and exaggerates it
    # on others can leave dm ~ 0 with a wide spread here
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(np.abs(a.d) > 1e-12, (b.d_hat - a.d_hat) / a.d, np.nan)  # (G, 2)
    n_ok = np.isfinite(shift).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift_mean = np.where(n_ok > 0, np.nansum(shift, axis=0) / np.maximum(n_ok, 1), np.nan)
        shift_sd = np.array([np.std(shift[np.isfinite(shift[:, j]), j], ddof=1)
                             if n_ok[j] > 1 else np.nan for j in range(2)])
        shift_p95 = np.array([np.percentile(np.abs(shift[np.isfinite(shift[:, j]), j]), 95)
                              if n_ok[j] > 0 else np.nan for j in range(2)])
    return {"dm": mb - ma, "dc": cb - ca, "dm_err": _std(dms), "dc_err": _std(dcs),
            "n_groups": len(common), "response_shift_mean": shift_mean,
            "response_shift_err": shift_sd / np.sqrt(np.maximum(n_ok, 1)),
            "response_shift_p95_abs": shift_p95}


def transfer(sim: dict, refined: dict, real: dict, paired: dict, bar: float = BAR_M) -> dict:
    """Calibration transfer: |m_refined - m_real| next to |m_sim - m_real|, per component.

    ``sim``, ``refined``, ``real`` are `calibrate` results; sim/refined bootstrap samples were
    drawn independently of real's, so errors add in quadrature. ``meets_bar`` is |diff| < bar;
    ``resolved`` adds that the error is small enough to tell (|diff| + 2 err < bar).
    """
    out = {}
    for name, cal in (("sim", sim), ("refined", refined)):
        diff = cal["m"] - real["m"]
        err = np.hypot(cal["m_err"], real["m_err"])
        out[f"abs_dm_{name}_real"] = np.abs(diff)
        out[f"abs_dm_{name}_real_err"] = err
    d = out["abs_dm_refined_real"]
    e = out["abs_dm_refined_real_err"]
    out["meets_bar"] = d < bar
    out["resolved"] = d + 2 * e < bar
    out["abs_dm_paired"] = np.abs(paired["dm"])
    out["paired_meets_bar"] = np.abs(paired["dm"]) < bar
    out["bar"] = bar
    return out


@dataclass(frozen=True)
class Calibration:
    """The result of compare's calibration step.

    Attributes
    ----------
    tables : dict
        The ``calibration`` tree of compare.h5: per domain a `calibrate` result with
        ``regauss_status``, ``eps1``, ``eps2`` (N,) (or ``skipped``), ``paired``, ``transfer``
        and their ``*_target_psf`` versions where they apply.
    shapes : dict of str -> dict of str -> ndarray (N,)
        `regauss_shapes` of each calibrated domain with its own file's PSF.
    """

    tables: dict
    shapes: dict[str, dict[str, np.ndarray]]


def _shapes_and_groups(s: StampSet, psf: np.ndarray, m: Measurement) -> tuple[dict, Groups]:
    """REGAUSS shapes of a set with ``psf`` (its measured noise variance) and their groups."""
    sh = regauss_shapes(s.images, psf, m.scalars["noise_std"] ** 2, s.mask)
    return sh, group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, s.labels)


def _target_psf_calibration(data: Samples, target_psf: np.ndarray, grs: dict[str, Groups],
                            tables: dict, p: CompareParams, rng: np.random.Generator) -> dict:
    """Refined stamps calibrated with the target's PSF (its mean image if one per stamp),
    paired against the sims' groups ``grs["sim"]``; ``tables`` holds the per-set results."""
    if target_psf.ndim == 3:
        target_psf = target_psf.mean(axis=0)
    _, gr = _shapes_and_groups(data.sets["refined"], target_psf, data.meas["refined"])
    out = {"refined_target_psf": calibrate(gr, p.n_bootstrap, rng),
           "paired_target_psf": paired_difference(grs["sim"], gr, p.n_bootstrap, rng)}
    if "real" in grs:
        out["transfer_target_psf"] = transfer(tables["sim"], out["refined_target_psf"],
                                              tables["real"], out["paired_target_psf"], p.bar_m)
    return out


def calibrate_sets(data: Samples, p: CompareParams, rng: np.random.Generator) -> Calibration:
    """REGAUSS m, c of every set with true shear; paired refined - sim; calibration transfer.

    Parameters
    ----------
    data : Samples
        The sets (a set is calibrated when it has ``g1``, ``g2`` labels and a ``/psf``) and
        their measurements (``noise_std``, counts, for REGAUSS's noise variance).
    p : CompareParams
        ``n_bootstrap``, ``bar_m`` and ``calibrate_with_target_psf``.
    rng : numpy.random.Generator
        Drawn in this order: each set's bootstrap (set order), the paired difference, then the
        target-PSF calibration and its paired difference.

    Returns
    -------
    Calibration
        The ``calibration`` tables and the REGAUSS shapes per calibrated set.
    """
    out: dict = {}
    grs: dict[str, Groups] = {}
    shapes: dict[str, dict[str, np.ndarray]] = {}
    for d, s in data.sets.items():
        if d == "psf_matched":  # its own stream, after everything else (`r_only_calibration`)
            continue
        missing = [f"label {g}" for g in ("g1", "g2") if g not in s.labels]
        missing += ["/psf"] if s.psf is None else []
        if missing:
            out[d] = {"skipped": f"no {' and no '.join(missing)} in the file"}
            logger.info("calibration of %s skipped: it has no %s (REGAUSS m needs the true shear "
                        "and the PSF)", d, " and no ".join(missing))
            continue
        shapes[d], grs[d] = _shapes_and_groups(s, s.psf, data.meas[d])
        out[d] = calibrate(grs[d], p.n_bootstrap, rng)
        out[d]["regauss_status"] = shapes[d]["status"]
        out[d]["eps1"], out[d]["eps2"] = shapes[d]["eps1"], shapes[d]["eps2"]
    if "sim" in grs and "refined" in grs:
        out["paired"] = paired_difference(grs["sim"], grs["refined"], p.n_bootstrap, rng)
        if "real" in grs:
            out["transfer"] = transfer(out["sim"], out["refined"], out["real"], out["paired"],
                                       p.bar_m)
        target_psf = data.sets["real"].psf
        if p.calibrate_with_target_psf and target_psf is not None:
            # a refiner may learn PSF features the sim PSF lacks: calibrate refined stamps with
            # the target's PSF too
            out.update(_target_psf_calibration(data, target_psf, grs, out, p, rng))
    return Calibration(out, shapes)


def r_only_calibration(data: Samples, shapes: dict[str, dict[str, np.ndarray]], p: CompareParams,
                       rng: np.random.Generator) -> dict:
    """What the matching did to m, and what R did: the ``psf_matched`` set's m, c (REGAUSS with
    its own /psf, the matched PSF) and two paired differences on the same galaxy groups.

    ``paired_matching``: psf_matched - sim; ``paired_r_only``: refined - psf_matched, R's own
    change of m (refine's input and output, stamp for stamp). ``shapes`` are
    `Calibration.shapes` (the sim and refined REGAUSS shapes already measured). ``rng`` is drawn
    in this order: psf_matched's bootstrap, then the two paired differences. A part whose sets
    were not calibrated (no true shear or /psf) is left out; ``psf_matched`` then says why.
    """
    s = data.sets["psf_matched"]
    if s.psf is None or any(g not in s.labels for g in ("g1", "g2")):
        return {"psf_matched": {"skipped": "no g1 / g2 labels or no /psf in the psf_matched file"}}
    sh, gr = _shapes_and_groups(s, s.psf, data.meas["psf_matched"])
    out = {"psf_matched": calibrate(gr, p.n_bootstrap, rng)}
    out["psf_matched"]["regauss_status"] = sh["status"]
    grs = {d: group_means(v["eps1"], v["eps2"], v["status"] == 0, data.sets[d].labels)
           for d, v in shapes.items() if d in ("sim", "refined")}
    if "sim" in grs:
        out["paired_matching"] = paired_difference(grs["sim"], gr, p.n_bootstrap, rng)
    if "refined" in grs:
        out["paired_r_only"] = paired_difference(gr, grs["refined"], p.n_bootstrap, rng)
    return out
