"""The tables compare.h5 holds: spectra, distances with gap closed and floor, classifier tests,
label drift. Each function returns a dict that `refinegan.compare.store.write_tree` stores.

Every distance table has three columns, `refinegan.compare.params.PAIRS`: (sim, real),
(refined, real) and the floor (real half A, real half B: disjoint halves of whole galaxy groups).
The floor compares sets half the size of the real set, so its sampling noise is somewhat larger
than that of the other columns: read it as "how far two sets of one distribution of this size
land", not as an exact zero point.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import stats as sps

from . import distances as dist
from .classifiers import CNNParams
from .measure import pick_groups
from .params import MORPH_STATS, NOISE_STATS, SCALAR_STATS
from .stats import radial_bins

__all__ = ["spectra_tables", "distance_tables", "classifier_tests", "label_drift"]

logger = logging.getLogger(__name__)


def _split_real(x: np.ndarray, half_b: np.ndarray):
    return x[~half_b], x[half_b]


def _triples(a_sim, a_ref, a_real, half_b_real):
    """The three (A, B) pairs of every table: sim-real, refined-real, real A - real B."""
    ra, rb = _split_real(a_real, half_b_real)
    return ((a_sim, a_real), (a_ref, a_real), (ra, rb))


def spectra_tables(sets, meas, half_b, scale, p, hist_range):
    """Mean noise power spectra, mean noise autocorrelation, pixel histograms."""
    size = sets["sim"].images.shape[1:]
    _, k = radial_bins(size, p.power_spectrum_bins)
    spectra = {"k": k, "k_units": "cycles per pixel", "units": "counts^2"}
    acf = {"lags": np.arange(-p.acf_max_lag, p.acf_max_lag + 1)}
    edges = np.linspace(*hist_range, p.histogram_bins + 1)
    hist = {"edges": edges, "scale_counts": scale,
            "definition": "counts of asinh(pixel / scale_counts); outliers in the end bins"}
    for d in [d for d in ("sim", "refined", "real", "control") if d in meas]:
        pw = meas[d]["power"]
        good = np.isfinite(pw).all(axis=1)
        spectra[d] = {"mean": pw[good].mean(axis=0) if good.any() else np.full(len(k), np.nan),
                      "err": (pw[good].std(axis=0, ddof=1) / np.sqrt(good.sum()))
                      if good.sum() > 1 else np.full(len(k), np.nan),
                      "n": int(good.sum())}
        a = meas[d]["acf"]
        ga = np.isfinite(a).all(axis=(1, 2))
        acf[d] = a[ga].mean(axis=0) if ga.any() else np.full(a.shape[1:], np.nan)
        hist[d] = np.zeros(len(edges) - 1, np.int64)
        for start in range(0, len(sets[d].images), p.chunk_stamps):
            x = np.arcsinh(np.asarray(sets[d].images[start:start + p.chunk_stamps],
                                      np.float64) / scale)
            hist[d] += np.histogram(np.clip(x[np.isfinite(x)], *hist_range), bins=edges)[0]
    return spectra, acf, hist


def _values(meas, d, name):
    if name in meas[d]["scalars"]:
        return np.asarray(meas[d]["scalars"][name], float)
    return np.asarray(meas[d]["morph"][name], float)


def _real_half(meas, name, half_b):
    """half_b restricted to the stamps that ``name`` was measured on."""
    if name in meas["real"]["scalars"]:
        return half_b
    return half_b[meas["real"]["morph_index"]]


def _mean_power(pw):
    good = np.isfinite(pw).all(axis=1)
    return pw[good].mean(axis=0) if good.any() else np.full(pw.shape[1], np.nan)


def _mean_acf(a):
    good = np.isfinite(a).all(axis=(1, 2))
    return a[good].mean(axis=0) if good.any() else np.full(a.shape[1:], np.nan)


W1_BOOTSTRAP = 50  # resamples of galaxy groups for the W1 errors (cost ~ 50 W1 evaluations)


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


def distance_tables(sets, meas, groups, half_b, scale, p, rng, pixel_sample):
    """W1 (with group-bootstrap errors) / KS per statistic, energy distance, power-spectrum and
    ACF distances, gap closed."""
    names = list(SCALAR_STATS) + [m for m in MORPH_STATS if "morph" in meas["sim"]]

    def boots(rows_of):  # bootstrap index sets of (sim, real, real half A, real half B)
        g = {d: groups[d][rows_of(d)] for d in ("sim", "real")}
        hb = half_b[rows_of("real")]
        return [_boot_sets(x, W1_BOOTSTRAP, rng) for x in (g["sim"], g["real"], g["real"][~hb],
                                                             g["real"][hb])]

    boot_full = boots(lambda d: slice(None))
    boot_morph = (boots(lambda d: meas[d]["morph_index"]) if "morph" in meas["sim"] else None)
    rows, errs = [], []
    for name in names:
        trip = _triples(*(np.where(np.isinf(v), np.nan, v) for v in
                          (_values(meas, d, name) for d in ("sim", "refined", "real"))),
                        _real_half(meas, name, half_b))
        rows.append([dist.w1_ks(a, b) for a, b in trip])
        bs, br, bra, brb = boot_full if name in meas["sim"]["scalars"] else boot_morph
        errs.append([_w1_err(*trip[0], bs, br), _w1_err(*trip[1], bs, br),
                     _w1_err(*trip[2], bra, brb)])
    # pixel values in asinh(x / scale), a random sample of pixels of each set
    pix = {}
    for d in ("sim", "refined", "real"):
        imgs = sets[d].images
        if d != "refined":  # refined uses the sim's pixels: the same pixels, paired
            flat = rng.integers(0, imgs.size, min(pixel_sample, imgs.size))
        pix[d] = np.arcsinh(imgs.reshape(-1)[flat] / scale)
        pix[d + "_stamp"] = flat // (imgs.shape[1] * imgs.shape[2])
    hb = half_b[pix["real_stamp"]]
    rows.append([dist.w1_ks(a, b) for a, b in
                 ((pix["sim"], pix["real"]), (pix["refined"], pix["real"]),
                  (pix["real"][~hb], pix["real"][hb]))])
    names.append("pixels_asinh")
    errs.append([np.nan] * 3)  # pixels: no per-group errors
    arr = np.array(rows, dtype=float)  # (S, 3, 4): w1, ks, ks_p, n_excluded
    if "control" in meas:  # noise-only control vs real, scalar statistics only
        ctrl = [dist.w1_ks(_values(meas, "control", n), _values(meas, "real", n))
                if n in meas["control"]["scalars"] else (np.nan,) * 4 for n in names]
    out = {"names": np.array(names), "pairs": np.array(["sim_real", "refined_real", "real_real"]),
           "w1": arr[..., 0], "w1_err": np.array(errs, dtype=float),
           "ks": arr[..., 1], "ks_p": arr[..., 2],
           "n_excluded": arr[..., 3].astype(np.int64)}
    if "control" in meas:
        ctrl = np.array(ctrl, dtype=float)
        out["w1_control"], out["ks_control"] = ctrl[:, 0], ctrl[:, 1]
    out["gap_closed_w1"] = dist.gap_closed(out["w1"][:, 0], out["w1"][:, 1])
    out["gap_closed_ks"] = dist.gap_closed(out["ks"][:, 0], out["ks"][:, 1])
    # multivariate energy distance, standardised by the real set: all scalar statistics, then
    # one family at a time (noise statistics on all stamps, statmorph on its subsample), one
    # number per family for "how much of the noise / morphology gap closed"
    families = {"energy": (SCALAR_STATS, half_b), "energy_noise": (NOISE_STATS, half_b)}
    if "morph" in meas["sim"]:
        families["energy_morph"] = (MORPH_STATS, half_b[meas["real"]["morph_index"]])
    for key, (fam, hb) in families.items():
        fe = {d: np.stack([np.where(np.isinf(_values(meas, d, n)), np.nan, _values(meas, d, n))
                           for n in fam], axis=1) for d in ("sim", "refined", "real")}
        sd = np.nanstd(fe["real"], axis=0)
        out[key] = np.array([dist.energy(a, b, sd, p.energy_n, rng) for a, b in
                             _triples(fe["sim"], fe["refined"], fe["real"], hb)])
    # noise power spectrum: rms of log10 ratio of mean spectra; ACF: rms difference, lags != 0
    pw = {d: meas[d]["power"] for d in ("sim", "refined", "real")}
    ac = {d: meas[d]["acf"] for d in ("sim", "refined", "real")}
    lag0 = np.zeros(ac["real"].shape[1:], bool)
    lag0[p.acf_max_lag, p.acf_max_lag] = True
    ps, af = [], []
    for (a, b), (c, e) in zip(_triples(pw["sim"], pw["refined"], pw["real"], half_b),
                              _triples(ac["sim"], ac["refined"], ac["real"], half_b), strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            ps.append(float(np.sqrt(np.mean(np.log10(_mean_power(a) / _mean_power(b)) ** 2))))
        af.append(float(np.sqrt(np.mean((_mean_acf(c) - _mean_acf(e))[~lag0] ** 2))))
    out["power_spectrum"], out["acf"] = np.array(ps), np.array(af)
    out["power_spectrum_definition"] = "rms over k of log10(mean P_A(k) / mean P_B(k))"
    out["acf_definition"] = "rms over lags != 0 of mean rho_A - mean rho_B"
    out["energy_definition"] = "energy distance of the scalar statistics / real std"
    out["energy_noise_definition"] = "energy distance of the noise statistics / real std"
    out["energy_morph_definition"] = "energy distance of the statmorph statistics / real std"
    for key in ("energy", "energy_noise", "energy_morph", "power_spectrum", "acf"):
        if key not in out:
            continue
        out[f"gap_closed_{key}"] = float(dist.gap_closed(out[key][0], out[key][1]))
    return out


def _auc_triple(xs, gs, half_b_real, fit_predict, seeds, p, rng):
    """AUCs of the three PAIRS; with a control set in ``xs``, also control vs real."""
    res = []
    for (xa, xb), (ga, gb) in zip(_triples(xs["sim"], xs["refined"], xs["real"], half_b_real),
                                  _triples(gs["sim"], gs["refined"], gs["real"], half_b_real),
                                  strict=True):
        res.append(dist.classifier_auc(xa, xb, ga, gb, fit_predict=fit_predict, seeds=seeds,
                                       test_fraction=p.test_fraction, n_boot=p.n_bootstrap,
                                       rng=rng))
    auc = np.array([r.auc for r in res])
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = float(1.0 - (auc[1] - 0.5) / (auc[0] - 0.5))
    out = {"auc": auc, "err": np.array([r.err for r in res]),
           "seed_aucs": np.stack([r.seed_aucs for r in res]),
           "n": np.array([[r.n_a, r.n_b] for r in res]), "gap_closed": gap}
    if "control" in xs:
        r = dist.classifier_auc(xs["control"], xs["real"], gs["control"], gs["real"],
                                fit_predict=fit_predict, seeds=seeds,
                                test_fraction=p.test_fraction, n_boot=p.n_bootstrap, rng=rng)
        out["control_auc"], out["control_err"] = r.auc, r.err
    return out


def classifier_tests(sets, meas, groups, half_b, scale, p, rng, progress=False):
    """Gradient boosting on all / noise-only / morphology-only statistics; a CNN on pixels."""
    doms = ("sim", "refined", "real")

    def matrix(d, names, with_power):
        cols = [_values(meas, d, n) for n in names]
        x = np.stack(cols, axis=1)
        if with_power:
            var = meas[d]["scalars"]["noise_std"][:, None] ** 2
            with np.errstate(invalid="ignore", divide="ignore"):
                x = np.concatenate([x, meas[d]["power"] / var], axis=1)
        return np.where(np.isfinite(x), x, np.nan)

    def gb(xtr, ytr, xte, seed):
        return dist.gb_fit_predict(xtr, ytr, xte, seed, max_iter=p.gb_max_iter,
                                   threads=p.threads)

    out = {}
    cdoms = doms + (("control",) if "control" in meas else ())
    for key, names, power in (("gb_all", SCALAR_STATS, True), ("gb_noise", NOISE_STATS, True)):
        xs = {d: matrix(d, names, power) for d in cdoms}
        out[key] = _auc_triple(xs, groups, half_b, gb, p.gb_seeds, p, rng)
        logger.info("classifier %s: AUC %s", key, np.round(out[key]["auc"], 3))
    if "morph" in meas["sim"]:
        xs = {d: np.where(np.isfinite(m := np.stack([_values(meas, d, n) for n in MORPH_STATS], 1)),
                          m, np.nan) for d in doms}
        gs = {d: groups[d][meas[d]["morph_index"]] for d in doms}
        out["gb_morph"] = _auc_triple(xs, gs, half_b[meas["real"]["morph_index"]], gb,
                                      p.gb_seeds, p, rng)
    if p.cnn_seeds > 0:
        cnn = CNNParams(scale, channels=p.cnn_channels, epochs=p.cnn_epochs, threads=p.threads)
        idx = {"sim": pick_groups(groups["sim"], p.cnn_max_stamps, rng)}
        idx["refined"] = idx["sim"]
        idx["real"] = pick_groups(groups["real"], p.cnn_max_stamps, rng)
        if "control" in meas:
            idx["control"] = pick_groups(groups["control"], p.cnn_max_stamps, rng)
        xs = {d: np.asarray(sets[d].images[idx[d]]) for d in idx}
        gs = {d: groups[d][idx[d]] for d in idx}
        out["cnn_pixels"] = _auc_triple(xs, gs, half_b[idx["real"]], cnn.fit_predict,
                                        p.cnn_seeds, p, rng)
        logger.info("classifier cnn_pixels: AUC %s", np.round(out["cnn_pixels"]["auc"], 3))
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


def label_drift(sim: dict, ref: dict) -> dict:
    """Per-stamp refined - sim drift of flux, shape and size (median / 95th pct of |drift|)."""
    a, b = sim["scalars"], ref["scalars"]
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
        if "regauss" in sim and "regauss" in ref:
            drift["eps1_regauss"] = ref["regauss"]["eps1"] - sim["regauss"]["eps1"]
            drift["eps2_regauss"] = ref["regauss"]["eps2"] - sim["regauss"]["eps2"]
    out = {k: _drift_summary(np.asarray(v, float)) for k, v in drift.items()}
    out["definition"] = ("refined minus sim per stamp; flux_rel, size_rel, hlr_rel relative (HSM "
                         "adaptive flux and sigma, aperture half-light radius); e1, e2 HSM observed shape; centroid in pixels")
    return out
