"""The tables compare.h5 holds: spectra and histograms, distances with gap closed and floor, and
label drift. Each function returns a dict that `refinegan.compare.store.write_tree` stores.

Every distance table has three columns, `refinegan.compare.params.PAIRS` (see
`refinegan.compare.samples.triples`). The floor compares sets half the size of the real set, so
its sampling noise is somewhat larger than that of the other columns: read it as "how far two
sets of one distribution of this size land", not as an exact zero point.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from scipy import stats as sps

from . import distances as dist
from .measure import Measurement
from .params import HIST_RANGE, MORPH_STATS, NOISE_STATS, PIXEL_SAMPLE, SCALAR_STATS, CompareParams
from .samples import Samples, triples
from .stats import radial_bins

__all__ = ["spectra_tables", "distance_tables", "distances_to_real", "label_drift", "W1_BOOTSTRAP"]

logger = logging.getLogger(__name__)

W1_BOOTSTRAP = 50  # resamples of galaxy groups for the W1 errors (cost ~ 50 W1 evaluations)
_SPECTRA_DOMAINS = ("sim", "refined", "real", "control", "psf_matched")
_DOMAINS = ("sim", "refined", "real")


def spectra_tables(data: Samples, p: CompareParams) -> tuple[dict, dict, dict]:
    """Mean noise power spectra, mean noise autocorrelation and pixel histograms per domain.

    Parameters
    ----------
    data : Samples
        The sets and their measurements (a control set too, when given).
    p : CompareParams
        Power-spectrum bins, ACF lags, histogram bins and the chunk size.

    Returns
    -------
    spectra : dict
        ``k`` (K,) cycles per pixel; per domain ``mean``, ``err`` (K,) counts^2 and ``n``.
    acf : dict
        ``lags`` (2L+1,); per domain the mean ACF (2L+1, 2L+1) of the stamps with a finite one.
    hist : dict
        ``edges`` (B+1,) of asinh(pixel / scale); per domain the counts (B,), int64.
    """
    size = data.sets["sim"].images.shape[1:]
    _, k = radial_bins(size, p.power_spectrum_bins)
    spectra = {"k": k, "k_units": "cycles per pixel", "units": "counts^2"}
    acf = {"lags": np.arange(-p.acf_max_lag, p.acf_max_lag + 1)}
    edges = np.linspace(*HIST_RANGE, p.histogram_bins + 1)
    hist = {"edges": edges, "scale_counts": data.scale,
            "definition": "counts of asinh(pixel / scale_counts); outliers in the end bins"}
    for d in [d for d in _SPECTRA_DOMAINS if d in data.meas]:
        pw = data.meas[d].power
        good = np.isfinite(pw).all(axis=1)
        spectra[d] = {"mean": pw[good].mean(axis=0) if good.any() else np.full(len(k), np.nan),
                      "err": (pw[good].std(axis=0, ddof=1) / np.sqrt(good.sum()))
                      if good.sum() > 1 else np.full(len(k), np.nan),
                      "n": int(good.sum())}
        acf[d] = _mean_acf(data.meas[d].acf)
        hist[d] = _histogram(data.sets[d].images, data.scale, edges, p.chunk_stamps)
    return spectra, acf, hist


def _histogram(images, scale: float, edges: np.ndarray, chunk: int) -> np.ndarray:
    """Counts of asinh(pixel / scale) in ``edges`` (outliers clipped into the end bins)."""
    out = np.zeros(len(edges) - 1, np.int64)
    for start in range(0, len(images), chunk):
        x = np.arcsinh(np.asarray(images[start:start + chunk], np.float64) / scale)
        out += np.histogram(np.clip(x[np.isfinite(x)], *HIST_RANGE), bins=edges)[0]
    return out


def _mean_power(pw):
    good = np.isfinite(pw).all(axis=1)
    return pw[good].mean(axis=0) if good.any() else np.full(pw.shape[1], np.nan)


def _mean_acf(a):
    good = np.isfinite(a).all(axis=(1, 2))
    return a[good].mean(axis=0) if good.any() else np.full(a.shape[1:], np.nan)


def _finite_or_nan(v: np.ndarray) -> np.ndarray:
    return np.where(np.isinf(v), np.nan, v)


def _boot_sets(groups: np.ndarray, n_boot: int, rng) -> list[np.ndarray]:
    """Index arrays of ``n_boot`` bootstrap resamples of whole groups."""
    if len(groups) == 0:
        return [np.zeros(0, np.int64)] * n_boot
    uniq, inv = np.unique(groups, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    counts = np.bincount(inv)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    members = [order[a : a + c] for a, c in zip(starts, counts, strict=True)]
    return [np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
            for _ in range(n_boot)]


def _w1(a, b) -> float:
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return float(sps.wasserstein_distance(a, b)) if len(a) > 1 and len(b) > 1 else np.nan


def _w1_err(a, b, boots_a, boots_b) -> float:
    vals = np.array([_w1(a[ia], b[ib]) for ia, ib in zip(boots_a, boots_b, strict=True)])
    vals = vals[np.isfinite(vals)]
    return float(vals.std(ddof=1)) if len(vals) > 1 else np.nan


def _boots(data: Samples, rows_of, rng) -> list[list[np.ndarray]]:
    """Bootstrap index sets of (sim, real, real half A, real half B) on the rows ``rows_of(d)``."""
    g = {d: data.groups[d][rows_of(d)] for d in ("sim", "real")}
    hb = data.half_b[rows_of("real")]
    return [_boot_sets(x, W1_BOOTSTRAP, rng) for x in (g["sim"], g["real"], g["real"][~hb],
                                                         g["real"][hb])]


def _statistic_rows(data: Samples, names: list[str], rng) -> tuple[list, list]:
    """W1 / KS rows (S, 3, 4) and group-bootstrap W1 errors (S, 3) of each statistic."""
    meas = data.meas
    boot_full = _boots(data, lambda d: slice(None), rng)
    boot_morph = _boots(data, lambda d: meas[d].morph_index, rng) if data.has_morph else None
    rows, errs = [], []
    for name in names:
        trip = triples(*(_finite_or_nan(meas[d].values(name)) for d in _DOMAINS),
                       data.real_half(name))
        rows.append([dist.w1_ks(a, b) for a, b in trip])
        bs, br, bra, brb = boot_full if name in meas["sim"].scalars else boot_morph
        errs.append([_w1_err(*trip[0], bs, br), _w1_err(*trip[1], bs, br),
                     _w1_err(*trip[2], bra, brb)])
    return rows, errs


def _pixel_row(data: Samples, rng) -> list:
    """W1 / KS of asinh(pixel / scale) on a random sample of pixels; refined at the sim's pixels."""
    pix = {}
    for d in _DOMAINS:
        imgs = data.sets[d].images
        if d != "refined":  # refined uses the sim's pixels: the same pixels, paired
            flat = rng.integers(0, imgs.size, min(PIXEL_SAMPLE, imgs.size))
        pix[d] = np.arcsinh(imgs.reshape(-1)[flat] / data.scale)
        pix[d + "_stamp"] = flat // (imgs.shape[1] * imgs.shape[2])
    hb = data.half_b[pix["real_stamp"]]
    return [dist.w1_ks(a, b) for a, b in
            ((pix["sim"], pix["real"]), (pix["refined"], pix["real"]),
             (pix["real"][~hb], pix["real"][hb]))]


def _energy_rows(data: Samples, p: CompareParams, rng) -> dict[str, np.ndarray]:
    """Energy distances (3,) of all scalar statistics, the noise family and the statmorph family,
    each standardised by the real set's std."""
    families = {"energy": (SCALAR_STATS, data.half_b), "energy_noise": (NOISE_STATS, data.half_b)}
    if data.has_morph:
        families["energy_morph"] = (MORPH_STATS, data.half_b[data.meas["real"].morph_index])
    out = {}
    for key, (fam, hb) in families.items():
        fe = {d: np.stack([_finite_or_nan(data.meas[d].values(n)) for n in fam], axis=1)
              for d in _DOMAINS}
        sd = np.nanstd(fe["real"], axis=0)
        out[key] = np.array([dist.energy(a, b, sd, p.energy_n, rng) for a, b in
                             triples(fe["sim"], fe["refined"], fe["real"], hb)])
    return out


def _spectrum_distances(data: Samples, p: CompareParams) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum: rms log10 ratio of mean spectra; ACF: rms difference at lags != 0 (3,)."""
    pw = {d: data.meas[d].power for d in _DOMAINS}
    ac = {d: data.meas[d].acf for d in _DOMAINS}
    lag0 = np.zeros(ac["real"].shape[1:], bool)
    lag0[p.acf_max_lag, p.acf_max_lag] = True
    ps, af = [], []
    for (a, b), (c, e) in zip(triples(pw["sim"], pw["refined"], pw["real"], data.half_b),
                              triples(ac["sim"], ac["refined"], ac["real"], data.half_b),
                              strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            ps.append(float(np.sqrt(np.mean(np.log10(_mean_power(a) / _mean_power(b)) ** 2))))
        af.append(float(np.sqrt(np.mean((_mean_acf(c) - _mean_acf(e))[~lag0] ** 2))))
    return np.array(ps), np.array(af)


_DEFINITIONS = {
    "power_spectrum_definition": "rms over k of log10(mean P_A(k) / mean P_B(k))",
    "acf_definition": "rms over lags != 0 of mean rho_A - mean rho_B",
    "energy_definition": "energy distance of the scalar statistics / real std",
    "energy_noise_definition": "energy distance of the noise statistics / real std",
    "energy_morph_definition": "energy distance of the statmorph statistics / real std",
}


def distance_tables(data: Samples, p: CompareParams, rng: np.random.Generator) -> dict:
    """Two-sample distances of sim, refined and the real floor to the real set, and gap closed.

    Parameters
    ----------
    data : Samples
        Sets, measurements, groups, the real half split and the asinh pixel scale.
    p : CompareParams
        ``energy_n`` (rows per set in the energy distance) and ``acf_max_lag``.
    rng : numpy.random.Generator
        Drawn in this order: W1 bootstrap groups (all stamps, then the statmorph subsample),
        the pixel sample (sim, real), then the energy subsamples.

    Returns
    -------
    dict
        ``names`` (S,), ``pairs`` (3,), ``w1``, ``w1_err``, ``ks``, ``ks_p``, ``n_excluded``
        (S, 3) in each statistic's units; ``w1_control``, ``ks_control`` (S,) with a control;
        ``energy*``, ``power_spectrum``, ``acf`` (3,); ``gap_closed_*`` and definitions.
    """
    names = list(SCALAR_STATS) + [m for m in MORPH_STATS if data.has_morph]
    rows, errs = _statistic_rows(data, names, rng)
    rows.append(_pixel_row(data, rng))
    names.append("pixels_asinh")
    errs.append([np.nan] * 3)  # pixels: no per-group errors
    arr = np.array(rows, dtype=float)  # (S, 3, 4): w1, ks, ks_p, n_excluded
    out = {"names": np.array(names), "pairs": np.array(["sim_real", "refined_real", "real_real"]),
           "w1": arr[..., 0], "w1_err": np.array(errs, dtype=float),
           "ks": arr[..., 1], "ks_p": arr[..., 2],
           "n_excluded": arr[..., 3].astype(np.int64)}
    if data.has_control:  # noise-only control vs real, scalar statistics only
        ctrl, real = data.meas["control"], data.meas["real"]
        ctrl = np.array([dist.w1_ks(ctrl.values(n), real.values(n)) if n in ctrl.scalars
                         else (np.nan,) * 4 for n in names], dtype=float)
        out["w1_control"], out["ks_control"] = ctrl[:, 0], ctrl[:, 1]
    out["gap_closed_w1"] = dist.gap_closed(out["w1"][:, 0], out["w1"][:, 1])
    out["gap_closed_ks"] = dist.gap_closed(out["ks"][:, 0], out["ks"][:, 1])
    # multivariate energy distance: all scalar statistics, then one family at a time (noise
    # statistics on all stamps, statmorph on its subsample), one number per family for "how
    # much of the noise / morphology gap closed"
    out.update(_energy_rows(data, p, rng))
    out["power_spectrum"], out["acf"] = _spectrum_distances(data, p)
    out.update(_DEFINITIONS)
    for key in ("energy", "energy_noise", "energy_morph", "power_spectrum", "acf"):
        if key in out:
            out[f"gap_closed_{key}"] = float(dist.gap_closed(out[key][0], out[key][1]))
    return out


def distances_to_real(data: Samples, d: str, p: CompareParams, rng: np.random.Generator) -> dict:
    """The distances of one more set ``d`` (e.g. ``psf_matched``) to the real set, as
    `distance_tables` gives them for sim and refined: a column beside theirs.

    ``d``'s statmorph statistics are those of its ``morph_index`` rows (the sims' subsample for a
    set paired with the sims). ``rng`` is drawn in this order: W1 bootstrap groups (all stamps,
    then the statmorph subsample), then the energy subsamples. The pixel-value row is left out (in
    `distance_tables` it pairs refined with the sims' pixels).

    Returns
    -------
    dict
        ``names`` (S,), ``w1``, ``w1_err``, ``ks``, ``ks_p`` (S,); ``energy``, ``energy_noise``,
        ``energy_morph`` (with statmorph), ``power_spectrum``, ``acf`` (floats).
    """
    meas, real = data.meas, data.meas["real"]
    names = list(SCALAR_STATS) + [m for m in MORPH_STATS if data.has_morph]
    groups = {"d": data.groups[d], "real": data.groups["real"]}
    boots = {"full": [_boot_sets(groups[k], W1_BOOTSTRAP, rng) for k in ("d", "real")]}
    if data.has_morph:
        boots["morph"] = [_boot_sets(groups[k][meas[x].morph_index], W1_BOOTSTRAP, rng)
                          for k, x in (("d", d), ("real", "real"))]
    w1, w1_err, ks, ks_p = [], [], [], []
    for name in names:
        a, b = (_finite_or_nan(meas[x].values(name)) for x in (d, "real"))
        r = dist.w1_ks(a, b)
        w1.append(r[0])
        ks.append(r[1])
        ks_p.append(r[2])
        w1_err.append(_w1_err(a, b, *boots["full" if name in real.scalars else "morph"]))
    out = {"names": np.array(names), "w1": np.array(w1), "w1_err": np.array(w1_err),
           "ks": np.array(ks), "ks_p": np.array(ks_p)}
    families = {"energy": SCALAR_STATS, "energy_noise": NOISE_STATS}
    if data.has_morph:
        families["energy_morph"] = MORPH_STATS
    for key, fam in families.items():
        fa, fr = (np.stack([_finite_or_nan(meas[x].values(n)) for n in fam], axis=1)
                  for x in (d, "real"))
        out[key] = float(dist.energy(fa, fr, np.nanstd(fr, axis=0), p.energy_n, rng))
    lag0 = np.zeros(real.acf.shape[1:], bool)
    lag0[p.acf_max_lag, p.acf_max_lag] = True
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = _mean_power(meas[d].power) / _mean_power(real.power)
        out["power_spectrum"] = float(np.sqrt(np.mean(np.log10(ratio) ** 2)))
    out["acf"] = float(np.sqrt(np.mean((_mean_acf(meas[d].acf) - _mean_acf(real.acf))[~lag0] ** 2)))
    return out


def _drift_summary(x: np.ndarray) -> dict:
    good = np.isfinite(x)
    v = x[good]
    if v.size == 0:
        return {"median_abs": np.nan, "p95_abs": np.nan, "mean": np.nan, "std": np.nan,
                "n": 0, "n_failed": int((~good).sum())}
    return {"median_abs": float(np.median(np.abs(v))), "p95_abs": float(np.percentile(np.abs(v), 95)),
            "mean": float(v.mean()), "std": float(v.std()), "n": int(v.size),
            "n_failed": int((~good).sum())}


def label_drift(
    sim: Measurement,
    refined: Measurement,
    regauss_sim: Mapping[str, np.ndarray] | None = None,
    regauss_refined: Mapping[str, np.ndarray] | None = None,
) -> dict:
    """Per-stamp refined - sim drift of flux, shape, size and centroid.

    Parameters
    ----------
    sim, refined : Measurement
        The paired sets' measurements (N stamps each, stamp i of one is stamp i of the other).
    regauss_sim, regauss_refined : mapping, optional
        REGAUSS shapes (``eps1``, ``eps2`` (N,)) of each set with its file's PSF
        (`refinegan.compare.calibration.Calibration.shapes`); the REGAUSS drift is reported
        only when both are given [default: None].

    Returns
    -------
    dict
        Per quantity: ``median_abs``, ``p95_abs``, ``mean``, ``std`` of the finite drifts,
        ``n`` and ``n_failed``; and a ``definition``.
    """
    a, b = sim.scalars, refined.scalars
    with np.errstate(invalid="ignore", divide="ignore"):
        drift = {
            "flux_rel": b["hsm_flux"] / a["hsm_flux"] - 1.0,
            "flux_sum_rel": (b["flux"] - a["flux"]) / a["hsm_flux"],
            "e1": b["hsm_g1"] - a["hsm_g1"],
            "e2": b["hsm_g2"] - a["hsm_g2"],
            "size_rel": b["hsm_sigma"] / a["hsm_sigma"] - 1.0,
            "hlr_rel": b["hlr_pix"] / a["hlr_pix"] - 1.0,
            "centroid_pix": np.hypot(b["hsm_dx"] - a["hsm_dx"], b["hsm_dy"] - a["hsm_dy"]),
        }
        if regauss_sim is not None and regauss_refined is not None:
            drift["eps1_regauss"] = regauss_refined["eps1"] - regauss_sim["eps1"]
            drift["eps2_regauss"] = regauss_refined["eps2"] - regauss_sim["eps2"]
    out = {k: _drift_summary(np.asarray(v, float)) for k, v in drift.items()}
    out["definition"] = ("refined minus sim per stamp; flux_rel, size_rel, hlr_rel relative (HSM "
                         "adaptive flux and sigma, aperture half-light radius); e1, e2 HSM observed shape; centroid in pixels")
    return out
