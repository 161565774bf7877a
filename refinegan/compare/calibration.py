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
from dataclasses import dataclass, replace

import galsim
import numpy as np

from .params import CompareParams
from .reweight import N_BINS, cell_weights, group_covariates
from .samples import Samples

__all__ = [
    "Calibration",
    "ShapeSet",
    "calibrate_sets",
    "set_shapes",
    "why_not_calibrated",
    "target_psf_of",
    "TARGET_PSF",
    "regauss_shapes",
    "Groups",
    "group_means",
    "fit_mc",
    "calibrate",
    "paired_difference",
    "calibrate_reweighted",
    "transfer",
    "BAR_M",
]

logger = logging.getLogger(__name__)

CLUSTER_LABEL = "cat_index"  # the catalog galaxy a target's group was drawn from (cosmos)
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
    (REGAUSS R2), ``sigma`` (adaptive-moment size of the observed image, pixels), ``snr``
    (adaptive-moment S/N, ``amp / (sqrt(noise_var) sqrt(4 pi) sigma)``: the matched-filter S/N of
    a Gaussian galaxy; NaN without a noise variance) and ``status`` (0 = success; GalSim's
    correction_status otherwise, -1 for |e|>=1).
    """
    n = len(images)
    noise_var = np.broadcast_to(np.nan_to_num(np.asarray(noise_var, float)), (n,))
    psf = np.asarray(psf, dtype=np.float64)
    out = {k: np.full(n, np.nan) for k in ("eps1", "eps2", "resolution", "sigma", "snr")}
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
        sig = res.moments_sigma
        out["sigma"][i] = sig
        if noise_var[i] > 0 and sig > 0:
            out["snr"][i] = res.moments_amp / (np.sqrt(noise_var[i] * 4 * np.pi) * sig)
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
    weight: np.ndarray | None = None  # (G,) per-group weights of a reweighted fit, else None
    n_stamps: int = 0  # stamps in the set, failed ones included
    cluster: np.ndarray | None = None  # (G,) the galaxy behind each group, when groups repeat one

    def __len__(self) -> int:
        return len(self.pair_id)

    def take(self, idx: np.ndarray) -> Groups:
        return Groups(self.pair_id[idx], self.d_hat[idx], self.d[idx], self.s_hat[idx],
                      self.s[idx], self.n_stamps_failed, self.n_groups_dropped,
                      self.has_sign_pairs, None if self.weight is None else self.weight[idx],
                      self.n_stamps, None if self.cluster is None else self.cluster[idx])

    def select(self, pair_ids: np.ndarray) -> Groups:
        """The groups whose ``pair_id`` is in ``pair_ids``; the others count as dropped."""
        keep = np.isin(self.pair_id, pair_ids)
        out = self.take(np.flatnonzero(keep))
        return replace(out, n_groups_dropped=self.n_groups_dropped + int((~keep).sum()))

    def weighted(self, weight: np.ndarray) -> Groups:
        """A copy whose fits weight group g by ``weight[g]``."""
        return replace(self, weight=np.asarray(weight, float))

    @property
    def failure_fraction(self) -> float:
        """Fraction of the set's galaxy groups left out of the fit (any failure or selection)."""
        total = len(self) + self.n_groups_dropped
        return self.n_groups_dropped / total if total else float("nan")


def group_means(eps1, eps2, ok, labels: dict) -> Groups:
    """Collapse stamps into galaxy groups (see module docstring).

    ``labels`` needs ``g1``, ``g2``; ``pair_id`` (default: each stamp its own group) and
    ``shear_sign`` (default: all +1) are used when present. With ``cat_index`` (a target that
    draws each catalog galaxy in many groups, e.g. ``real.source: cosmos``) the groups of one
    galaxy form a cluster, and the bootstrap resamples galaxies, not groups (`CLUSTER_LABEL`).
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
    cluster = None
    if CLUSTER_LABEL in labels:
        first = np.zeros(g, np.int64)
        first[inv[::-1]] = np.arange(n)[::-1]  # each group's first stamp
        cluster = np.asarray(labels[CLUSTER_LABEL])[first][keep]
    return Groups(uniq[keep], d_hat[keep], d[keep], s_hat[keep], s[keep],
                  int(n - np.sum(ok)), int((~keep).sum()), has_sign, n_stamps=n, cluster=cluster)


def fit_mc(gr: Groups) -> tuple[np.ndarray, np.ndarray]:
    """(m, c), each (2,), from a `Groups` (m NaN where the applied shear difference is 0).

    With ``gr.weight`` each group's sums carry its weight:
    m = sum_g w (eps_+ - eps_-) / sum_g w (g_+ - g_-) - 1, c from weighted means.
    """
    if len(gr) == 0:
        return np.full(2, np.nan), np.full(2, np.nan)
    w = np.ones(len(gr)) if gr.weight is None else gr.weight
    if not w.sum() > 0:
        return np.full(2, np.nan), np.full(2, np.nan)
    dsum = w @ gr.d
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(np.abs(dsum) > 1e-12, (w @ gr.d_hat) / dsum - 1.0, np.nan)
    c = (w @ gr.s_hat) / w.sum() - np.where(np.isfinite(m), 1.0 + m, 1.0) * (w @ gr.s) / w.sum()
    return m, c


def _boot_indices(gr: Groups, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap draws of group indices: groups with replacement, or, when the groups carry
    clusters (one catalog galaxy in many groups), whole clusters with replacement (a cluster
    bootstrap: repeated draws of a galaxy are not independent samples of the population)."""
    n = len(gr)
    if gr.cluster is None:
        return list(rng.integers(0, n, size=(n_boot, n)))
    uniq, inv = np.unique(gr.cluster, return_inverse=True)
    members = [np.flatnonzero(inv == k) for k in range(len(uniq))]
    draws = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    return [np.concatenate([members[k] for k in row]) for row in draws]


def calibrate(gr: Groups, n_boot: int, rng: np.random.Generator) -> dict:
    """m, c (2,) with bootstrap errors over groups, and the bootstrap samples (n_boot, 2)."""
    m, c = fit_mc(gr)
    boots = [fit_mc(gr.take(idx)) for idx in _boot_indices(gr, n_boot, rng)]
    mb = np.array([b[0] for b in boots]).reshape(-1, 2)
    cb = np.array([b[1] for b in boots]).reshape(-1, 2)
    return {"m": m, "c": c, "m_err": _std(mb), "c_err": _std(cb), "m_boot": mb, "c_boot": cb,
            "n_groups": len(gr), "n_stamps_failed": gr.n_stamps_failed,
            "n_groups_dropped": gr.n_groups_dropped}


def calibrate_reweighted(gr: Groups, x_source: np.ndarray, x_target: np.ndarray, n_boot: int,
                         rng: np.random.Generator, n_bins: int = N_BINS) -> dict:
    """`calibrate` of ``gr`` with the weights that give it the target's covariates.

    ``x_source`` (G, k) are the covariates of ``gr``'s groups (`group_covariates` on
    ``gr.pair_id``), ``x_target`` (T, k) the target's. Adds ``uncovered_fraction``,
    ``n_bins`` and ``effective_n_groups`` = (sum w)^2 / sum w^2 to the result.
    """
    w, uncovered = cell_weights(x_source, x_target, n_bins)
    out = calibrate(gr.weighted(w), n_boot, rng)
    out["uncovered_fraction"] = uncovered
    out["n_bins"] = n_bins
    out["effective_n_groups"] = float(w.sum() ** 2 / np.sum(w ** 2)) if np.any(w) else 0.0
    return out


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
    for idx in _boot_indices(a, n_boot, rng):
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


def transfer(sim: dict, refined: dict, real: dict, paired: dict, bar: float = BAR_M,
             refined_reweighted: dict | None = None) -> dict:
    """Calibration transfer: |m_refined - m_real| next to |m_sim - m_real|, per component.

    ``sim``, ``refined``, ``real`` are `calibrate` results; sim/refined bootstrap samples were
    drawn independently of real's, so errors add in quadrature. ``meets_bar`` is |diff| < bar;
    ``resolved`` adds that the error is small enough to tell (|diff| + 2 err < bar). With
    ``refined_reweighted`` (refined reweighted to the target's size and S/N) its distance too.
    The sets' group failure fractions stand beside them: sim / refined and real are not paired,
    so their selections differ (``selection_shift`` of the paired sets says by how much m moves
    with the selection).
    """
    out = {}
    pairs = [("sim", sim), ("refined", refined)]
    if refined_reweighted is not None:
        pairs.append(("refined_reweighted", refined_reweighted))
    for name, cal in (("sim", sim), ("refined", refined), ("real", real)):
        if "group_failure_fraction" in cal:
            out[f"group_failure_fraction_{name}"] = cal["group_failure_fraction"]
    for name, cal in pairs:
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


def closer_than_sims(grs: dict[str, Groups], names: tuple[str, ...], n_boot: int,
                     rng: np.random.Generator) -> dict:
    """How much closer to the target's m each set of ``names`` is than the sims, with its error.

    closer_by = |m_sim - m_real| - |m_set - m_real| per component (> 0: the set is closer). The
    sets in ``names`` are the sims' galaxies re-observed (``refined``, ``psf_matched``), each on
    the groups it kept (its own selection, as the target's m is on the target's) or all on the
    paired sets' common selection; one bootstrap draw of galaxies serves the sims and all of
    them (each set fits the drawn galaxies it kept, so their shape and pixel noise partly
    cancel), and an independent draw the target; the error is the bootstrap std of closer_by.
    Errors of |m_sim - m_real| and |m_set - m_real| added in quadrature (`transfer`) overstate
    it: when both sets lie on one side of the target, closer_by is m_sim - m_set and the
    target's error drops out.

    Returns ``closer_by_<name>`` and ``closer_by_<name>_err`` (2,) per name, and
    ``closer_n_groups`` (the galaxies drawn: those kept by the sims or any set of ``names``).
    """
    sim, real = grs["sim"], grs["real"]
    names = tuple(n for n in names if n in grs)
    paired = [sim, *(grs[n] for n in names)]
    aligned = all(np.array_equal(g.pair_id, sim.pair_id) for g in paired)
    if sim.cluster is not None and not aligned:
        raise ValueError("closer_than_sims: sims whose groups repeat a catalog galaxy need the "
                         "paired sets on one selection")
    universe = sim.pair_id if aligned else np.unique(np.concatenate([g.pair_id for g in paired]))
    # whether each set kept each galaxy of the universe, and where (read only where kept)
    kept = [np.isin(universe, g.pair_id) for g in paired]
    pos = [np.searchsorted(g.pair_id, universe) for g in paired]

    def closer(idx_u: np.ndarray | None, idx_r: np.ndarray | None) -> np.ndarray:
        def m_of(j: int) -> np.ndarray:
            g = paired[j]
            if idx_u is None:
                return fit_mc(g)[0]
            return fit_mc(g.take(pos[j][idx_u][kept[j][idx_u]]))[0]

        m_t = fit_mc(real if idx_r is None else real.take(idx_r))[0]
        m_s = m_of(0)
        return np.array([np.abs(m_s - m_t) - np.abs(m_of(j) - m_t) for j in range(1, len(paired))])

    point = closer(None, None).reshape(len(names), 2)
    draws_u = (_boot_indices(sim, n_boot, rng) if aligned
               else list(rng.integers(0, len(universe), size=(n_boot, len(universe)))))
    boots = np.array([closer(i_u, i_r) for i_u, i_r in
                      zip(draws_u, _boot_indices(real, n_boot, rng), strict=True)]
                     ).reshape(n_boot, len(names), 2)
    out: dict = {"closer_n_groups": len(universe)}
    for j, n in enumerate(names):
        out[f"closer_by_{n}"] = point[j]
        out[f"closer_by_{n}_err"] = _std(boots[:, j])
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


@dataclass(frozen=True)
class ShapeSet:
    """One set's REGAUSS shapes (`regauss_shapes`, (N,) each) and its labels (at least ``g1``,
    ``g2``; ``pair_id``, ``shear_sign`` when present): all that calibration needs of it."""

    shapes: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


TARGET_PSF = "refined_target_psf"  # the refined stamps' shapes with the target's PSF


def why_not_calibrated(label_names, psf: np.ndarray | None) -> str | None:
    """Why a set with labels ``label_names`` and ``psf`` cannot be calibrated (no true shear or
    no PSF), or None if it can."""
    missing = [f"label {g}" for g in ("g1", "g2") if g not in label_names]
    missing += ["/psf"] if psf is None else []
    return f"no {' and no '.join(missing)} in the file" if missing else None


def target_psf_of(real_psf: np.ndarray | None) -> np.ndarray | None:
    """The PSF refined stamps are also calibrated with: the target's (its mean if per stamp)."""
    if real_psf is None:
        return None
    return real_psf.mean(axis=0) if real_psf.ndim == 3 else real_psf


def set_shapes(data: Samples, p: CompareParams) -> tuple[dict[str, ShapeSet], dict[str, str]]:
    """REGAUSS shapes of every calibratable set of ``data`` with its own ``/psf`` and its
    measured noise variance, plus `TARGET_PSF` (refined with the target's PSF) where
    ``p.calibrate_with_target_psf``; and the reason each other set is skipped."""
    out, skipped = {}, {}
    for d, s in data.sets.items():
        why = why_not_calibrated(s.labels, s.psf)
        if why:
            skipped[d] = why
            continue
        var = data.meas[d].scalars["noise_std"] ** 2
        out[d] = ShapeSet(regauss_shapes(s.images, s.psf, var, s.mask), s.labels)
    tpsf = target_psf_of(data.sets["real"].psf) if "real" in data.sets else None
    if p.calibrate_with_target_psf and tpsf is not None and {"sim", "refined"} <= set(out):
        s = data.sets["refined"]
        var = data.meas["refined"].scalars["noise_std"] ** 2
        out[TARGET_PSF] = ShapeSet(regauss_shapes(s.images, tpsf, var, s.mask), s.labels)
    return out, skipped


def _groups_of(ss: ShapeSet) -> Groups:
    sh = ss.shapes
    return group_means(sh["eps1"], sh["eps2"], sh["status"] == 0, ss.labels)


def _target_psf_calibration(gr: Groups, grs: dict[str, Groups], tables: dict, p: CompareParams,
                            rng: np.random.Generator, common: np.ndarray | None = None) -> dict:
    """Refined stamps calibrated with the target's PSF (groups ``gr``), paired against the
    sims' groups ``grs["sim"]``; ``tables`` holds the per-set results. With ``common`` (the
    paired sets' selection) only those groups are used."""
    if common is not None:
        gr = gr.select(common)
    out = {"refined_target_psf": calibrate(gr, p.n_bootstrap, rng),
           "paired_target_psf": paired_difference(grs["sim"], gr, p.n_bootstrap, rng)}
    if "real" in grs:
        out["transfer_target_psf"] = transfer(tables["sim"], out["refined_target_psf"],
                                              tables["real"], out["paired_target_psf"], p.bar_m)
    return out


PAIRED_SETS = ("sim", "refined", "psf_matched", "twin")  # the sims' galaxies: one selection


def _common_selection(grs: dict[str, Groups], out: dict, p: CompareParams,
                      rng: np.random.Generator) -> np.ndarray | None:
    """Refit the paired sets on the groups measured in all of them (issue: consistent selection).

    A group that fails in any paired set is dropped from every one, so their m differ only by
    the pixels, never by which galaxies were kept. Each paired set's table gets ``m`` on the
    common selection, ``m_own_selection`` (its own successes only) and ``selection_shift`` =
    ``m - m_own_selection``: how much the selection alone moves m.
    """
    names = [d for d in PAIRED_SETS if d in grs]
    if len(names) < 2:
        return None
    common = grs[names[0]].pair_id
    for d in names[1:]:
        common = np.intersect1d(common, grs[d].pair_id)
    for d in names:
        m_own = out[d]["m"]
        grs[d] = grs[d].select(common)
        keep = {k: out[d][k] for k in ("regauss_status", "eps1", "eps2")}
        out[d] = calibrate(grs[d], p.n_bootstrap, rng)
        out[d].update(keep)
        out[d]["m_own_selection"] = m_own
        out[d]["selection_shift"] = out[d]["m"] - m_own
        out[d]["selection"] = "common to " + ", ".join(names)
    return common


def _reweighted(grs: dict[str, Groups], sets: dict[str, ShapeSet], p: CompareParams,
                rng: np.random.Generator) -> dict:
    """sim and refined m reweighted to the target's (size, S/N) distribution
    (`refinegan.compare.reweight`)."""
    def cov(d: str) -> np.ndarray:
        return group_covariates(grs[d].pair_id, sets[d].labels, sets[d].shapes)

    x_real = cov("real")
    return {f"{d}_reweighted": calibrate_reweighted(grs[d], cov(d), x_real, p.n_bootstrap, rng)
            for d in ("sim", "refined") if d in grs}


def _paired_extras(grs: dict[str, Groups], out: dict, p: CompareParams,
                   rng: np.random.Generator) -> dict:
    """The paired differences of the optional sets drawn on the sims' galaxies (dm = m_b - m_a,
    same groups and bootstrap draws for both).

    - ``psf_matched`` (R's input, `refinegan.compare.r_only`): ``paired_matching`` =
      psf_matched - sim (what the matching did), ``paired_r_only`` = refined - psf_matched (what
      R did);
    - ``twin`` (the target on the sims' galaxies, `refinegan.compare.twin`):
      ``transfer_paired`` = refined - twin and ``twin_sim_paired`` = twin - sim, each with
      ``dm_err_unpaired`` (the two sets' errors in quadrature, for scale), ``meets_bar`` and
      ``bar``.
    """
    res: dict = {}
    pairs = []
    if "psf_matched" in grs:
        pairs += [("paired_matching", "sim", "psf_matched"), ("paired_r_only", "psf_matched",
                                                                "refined")]
    if "twin" in grs:
        pairs += [("transfer_paired", "twin", "refined"), ("twin_sim_paired", "sim", "twin")]
    for key, a, b in pairs:
        if a not in grs or b not in grs:
            continue
        r = paired_difference(grs[a], grs[b], p.n_bootstrap, rng)
        if "twin" in (a, b):
            r["dm_err_unpaired"] = np.hypot(out[a]["m_err"], out[b]["m_err"])
            r["meets_bar"] = np.abs(r["dm"]) < p.bar_m
            r["bar"] = p.bar_m
            logger.info("calibration %s: dm=%s +- %s (unpaired error %s, %d groups)", key,
                        r["dm"], r["dm_err"], r["dm_err_unpaired"], r["n_groups"])
        res[key] = r
    return res


COMMON = "_common_selection"  # suffix of the transfer keys with the paired sets' common selection


def _transfer_both_selections(own: dict, out: dict, own_grs: dict[str, Groups],
                              grs: dict[str, Groups], p: CompareParams,
                              rng: np.random.Generator) -> dict:
    """`transfer` and `closer_than_sims` against the target, with sim, refined and psf_matched
    each on the groups it kept itself (the main keys), and again on the paired sets' common
    selection (keys ending in `COMMON`).

    The target's m is on its own selection: the galaxies its REGAUSS measured. A calibration
    uses the refined sims the same way, so the sets compared with it keep their own selections
    too; the common selection (a group failing in any paired set dropped from all) keeps only
    the galaxies that survive the noisiest of them, a cut the target never had. On a target
    where a fifth of the stamps fail (`heldout_a`: 19 %, the sims 4 %) that cut moves the sims'
    m by -0.03 and the twin's by +0.03 (docs/benchmarks.md, session 16).
    """
    t = transfer(own["sim"], own["refined"], out["real"], out["paired"], p.bar_m,
                 out.get("refined_reweighted"))
    t.update(closer_than_sims(own_grs, ("refined", "psf_matched"), p.n_bootstrap, rng))
    tc = transfer(out["sim"], out["refined"], out["real"], out["paired"], p.bar_m)
    tc.update(closer_than_sims(grs, ("refined", "psf_matched"), p.n_bootstrap, rng))
    for k, v in tc.items():
        if k.startswith(("abs_dm_sim", "abs_dm_refined_real", "closer_by", "meets_bar", "resolved")):
            t[k + COMMON] = v
    t["selection"] = "each set its own"
    return t


def calibrate_sets(data: Samples, p: CompareParams, rng: np.random.Generator,
                   shape_sets: tuple[dict[str, ShapeSet], dict[str, str]] | None = None,
                   rng_closer: np.random.Generator | None = None) -> Calibration:
    """REGAUSS m, c of every set with true shear; paired refined - sim; calibration transfer.

    Parameters
    ----------
    data : Samples
        The sets (a set is calibrated when it has ``g1``, ``g2`` labels and a ``/psf``) and
        their measurements (``noise_std``, counts, for REGAUSS's noise variance).
    p : CompareParams
        ``n_bootstrap``, ``bar_m`` and ``calibrate_with_target_psf``.
    rng : numpy.random.Generator
        Drawn in this order: each set's bootstrap (set order), the paired sets' bootstrap on
        their common selection (`PAIRED_SETS` order), the reweighted sim and refined, the
        paired difference, then the target-PSF calibration and its paired difference.
    shape_sets : (dict of ShapeSet, dict of str), optional
        Shapes measured elsewhere (compare's calibration mode streams every stamp through
        REGAUSS, `refinegan.compare.stream`) and the skipped sets' reasons [default:
        `set_shapes` of ``data``].
    rng_closer : numpy.random.Generator, optional
        The bootstrap of `closer_than_sims` (its own stream, so the draws above do not depend on
        it) [default: a child spawned from ``rng``, which draws nothing from ``rng``].

    Returns
    -------
    Calibration
        The ``calibration`` tables and the REGAUSS shapes per calibrated set.
    """
    sets, skipped = shape_sets if shape_sets is not None else set_shapes(data, p)
    out: dict = {}
    grs: dict[str, Groups] = {}
    for d in [*sets, *skipped]:
        if d == TARGET_PSF:
            continue
        if d in skipped:
            out[d] = {"skipped": skipped[d]}
            logger.info("calibration of %s skipped: %s (REGAUSS m needs the true shear and the "
                        "PSF)", d, skipped[d])
            continue
        grs[d] = _groups_of(sets[d])
        out[d] = calibrate(grs[d], p.n_bootstrap, rng)
        sh = sets[d].shapes
        out[d]["regauss_status"] = sh["status"]
        out[d]["eps1"], out[d]["eps2"] = sh["eps1"], sh["eps2"]
    own_grs, own = dict(grs), {d: out[d] for d in grs}  # each set on the groups it kept
    for d, gr in own_grs.items():
        own[d]["group_failure_fraction"] = gr.failure_fraction
    common = _common_selection(grs, out, p, rng)
    for d, gr in grs.items():
        out[d]["group_failure_fraction"] = gr.failure_fraction
        out[d]["stamp_failure_fraction"] = gr.n_stamps_failed / max(gr.n_stamps, 1)
        if own[d] is not out[d]:  # a paired set refitted on the common selection
            out[d]["m_err_own_selection"] = own[d]["m_err"]
            out[d]["group_failure_fraction_own_selection"] = own[d]["group_failure_fraction"]
    if "real" in grs:
        out.update(_reweighted(own_grs, sets, p, rng))  # beside the target: own selections
    if "sim" in grs and "refined" in grs:
        out["paired"] = paired_difference(grs["sim"], grs["refined"], p.n_bootstrap, rng)
    out.update(_paired_extras(grs, out, p, rng))
    if "sim" in grs and "refined" in grs:
        if "real" in grs:
            out["transfer"] = _transfer_both_selections(
                own, out, own_grs, grs, p, rng_closer if rng_closer is not None else rng.spawn(1)[0])
        if TARGET_PSF in sets:
            # a refiner may learn PSF features the sim PSF lacks: calibrate refined stamps with
            # the target's PSF too
            out.update(_target_psf_calibration(_groups_of(sets[TARGET_PSF]), grs, out, p, rng,
                                               common))
    shapes = {d: ss.shapes for d, ss in sets.items() if d != TARGET_PSF}
    return Calibration(out, shapes)
