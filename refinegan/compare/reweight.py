"""Calibration reweighted to the target's galaxies: m of one set as if it had another's
distribution of (size, S/N).

Shear response depends on size and S/N (noise bias, PSF-size bias), so two sets with different
distributions of them differ in m even when their pixels are alike. Image-simulation calibrations
(HSC: Mandelbaum et al. 2018; DES: Zuntz et al. 2018, MacCrann et al. 2022) weight each simulated
galaxy so the simulation's distribution of (resolution or size, S/N) matches the data's. Here:

- per galaxy group the covariates are the group mean of the stamps' adaptive-moment size
  ``sigma`` (pixels) and S/N (`refinegan.compare.calibration.regauss_shapes`), in log;
- a grid of ``n_bins`` x ``n_bins`` cells whose edges are the *target's* quantiles in each
  covariate (so every cell holds about the same share of the target);
- group g of the source set in cell k gets w_g = (target share of k) / (source share of k);
  target mass in cells with no source group cannot be reweighted to and is reported as
  ``uncovered_fraction`` (the reweighted m is then the m of the covered part);
- m, c come from the weighted fit (`refinegan.compare.calibration.calibrate_reweighted`:
  `fit_mc` with ``Groups.weight``); errors are bootstrap over the source's groups with the
  weights held fixed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_covariates", "cell_weights", "N_BINS"]

N_BINS = 5  # cells per covariate: 25 cells, about 40 target groups each at 1,024 groups


def group_covariates(pair_ids: np.ndarray, labels: dict, values: dict[str, np.ndarray],
                     names: tuple[str, ...] = ("sigma", "snr")) -> np.ndarray:
    """(G, len(names)) log of the per-group mean of each stamp value, for groups ``pair_ids``.

    ``labels`` gives the stamps' ``pair_id`` (each stamp its own group when absent); ``values``
    maps each name to an (N,) array. Non-finite or non-positive means give NaN.
    """
    n = len(values[names[0]])
    pair = np.asarray(labels["pair_id"]) if "pair_id" in labels else np.arange(n)
    uniq, inv = np.unique(pair, return_inverse=True)
    pos = np.searchsorted(uniq, pair_ids)
    out = np.empty((len(pair_ids), len(names)))
    for j, name in enumerate(names):
        v = np.asarray(values[name], float)
        ok = np.isfinite(v)
        tot = np.bincount(inv, weights=np.where(ok, v, 0.0), minlength=len(uniq))
        cnt = np.bincount(inv, weights=ok, minlength=len(uniq))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = tot / cnt
            out[:, j] = np.where(mean > 0, np.log(mean), np.nan)[pos]
    return out


def _cells(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Flat cell index of each row of ``x`` (-1 where a covariate is not finite)."""
    n_bins = len(edges[0]) + 1
    idx = np.zeros(len(x), np.int64)
    bad = ~np.isfinite(x).all(axis=1)
    for j, e in enumerate(edges):
        idx = idx * n_bins + np.searchsorted(e, np.nan_to_num(x[:, j]), side="right")
    idx[bad] = -1
    return idx


def cell_weights(x_source: np.ndarray, x_target: np.ndarray, n_bins: int = N_BINS
                 ) -> tuple[np.ndarray, float]:
    """Per-group weights (G,) for the source so its covariate distribution is the target's.

    Returns the weights (mean 1 over the source groups with a finite covariate; 0 for the
    others) and the target fraction in cells without a source group (``uncovered_fraction``).
    """
    xt = x_target[np.isfinite(x_target).all(axis=1)]
    if len(xt) == 0 or n_bins < 1:
        return np.ones(len(x_source)), float("nan")
    qs = np.linspace(0, 1, n_bins + 1)[1:-1]
    edges = [np.quantile(xt[:, j], qs) for j in range(xt.shape[1])]
    n_cells = n_bins ** xt.shape[1]
    cs, ct = _cells(x_source, edges), _cells(xt, edges)
    ns = np.bincount(cs[cs >= 0], minlength=n_cells).astype(float)
    nt = np.bincount(ct, minlength=n_cells).astype(float)
    share_t, share_s = nt / nt.sum(), ns / max(ns.sum(), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(ns > 0, share_t / share_s, 0.0)
    w = np.where(cs >= 0, ratio[np.maximum(cs, 0)], 0.0)
    uncovered = float(share_t[ns == 0].sum())
    if w.sum() > 0:
        w = w * (np.count_nonzero(cs >= 0) / w.sum())
    return w, uncovered
