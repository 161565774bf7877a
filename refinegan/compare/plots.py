"""Plots of a compare result, for people (matplotlib, Agg backend).

`make_plots` writes into ``plots_dir`` one PNG per figure and, beside it, ``<name>.rst`` holding
its caption, which Snakemake's ``report(..., caption=...)`` can use; `CAPTIONS` is the same text.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

__all__ = ["CAPTIONS", "make_plots"]

logger = logging.getLogger(__name__)

COLORS = {"sim": "tab:blue", "refined": "tab:orange", "real": "black", "control": "tab:green"}
STYLES = {"sim": "-", "refined": "--", "real": "-", "control": ":"}
CAPTIONS = {
    "stamps": "Postage stamps, one galaxy per column: sim (top), its refined version (middle) "
              "and random real stamps (bottom), asinh(pixel / real median noise std) stretch, one "
              "colour scale for all.",
    "histograms": "Distributions of each per-image statistic for sim, refined and real (density). "
                  "The title gives W1 (sim-real, refined-real, real-real floor) and the gap closed "
                  "1 - W1(refined, real) / W1(sim, real). Morphology (morph_*) is on a subsample.",
    "pixels": "Pixel-value histograms in asinh(pixel / real median noise std), log scale: the "
              "negative side is pure noise, the positive tail galaxy light.",
    "noise_power": "Left: azimuthally averaged power spectrum of source-masked noise pixels "
                   "(mean over stamps, error of the mean); white noise is flat. Right: the mean "
                   "noise autocorrelation along x (rho at lag 0 is 1).",
    "calibration": "Shear calibration with HSM REGAUSS on +/-g, 90-degree-rotated pairs: "
                   "multiplicative bias m and additive bias c per component with bootstrap errors "
                   "(over galaxy groups). The grey band is m_real +/- the weak-lensing bar 2e-3; "
                   "calibration transfer asks whether refined lands in it.",
    "psf": "The PSF each file carries in /psf (log stretch, one scale; a per-stamp stack is "
           "averaged) and their azimuthal profiles, with each one's HSM adaptive-moment sigma in "
           "pixels. A refiner with a learned PSF kernel writes K * (sim PSF) as the refined PSF: "
           "how close it comes to the target's is the PSF part of the sim-to-real gap it closed.",
    "classifier": "Classifier two-sample tests: held-out AUC (0.5 = indistinguishable) for sim vs "
                  "real, refined vs real and the real-vs-real floor, with errors over seeds and "
                  "bootstrap of held-out galaxy groups.",
}


def _save(fig, plots_dir: Path, name: str) -> Path:
    path = plots_dir / f"{name}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    with atomic_path(plots_dir / f"{name}.rst") as tmp:
        tmp.write_text(CAPTIONS[name] + "\n")
    return path


def _stamps(plt, sets, scale, n, rng):
    n = min(n, len(sets["sim"]), len(sets["real"]))
    i_sim = np.sort(rng.choice(len(sets["sim"]), n, replace=False))
    i_real = np.sort(rng.choice(len(sets["real"]), n, replace=False))
    rows = (("sim", i_sim), ("refined", i_sim), ("real", i_real))
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.2), squeeze=False)
    vmax = max(np.arcsinh(np.nanmax(sets[d].images[i]) / scale) for d, i in rows)
    for r, (d, idx) in enumerate(rows):
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(np.arcsinh(sets[d].images[i] / scale), origin="lower", cmap="gray",
                      vmin=-2, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(d)
    return fig


def _histograms(plt, result):
    st, dist = result["stats"], result["distances"]
    names = [str(n) for n in dist["names"] if str(n) in st["real"]]
    ncol = 4
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow), squeeze=False)
    all_names = [str(n) for n in dist["names"]]
    for ax, name in zip(axes.flat, names, strict=False):
        vals = {d: np.asarray(st[d][name], float) for d in COLORS if d in st and name in st[d]}
        vals = {d: v[np.isfinite(v)] for d, v in vals.items()}
        vals = {d: v for d, v in vals.items() if v.size}  # e.g. noise_std of noiseless sims
        pool = np.concatenate(list(vals.values()))
        if pool.size == 0:
            continue
        lo, hi = np.percentile(pool, [0.5, 99.5])
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 40)
        for d, v in vals.items():
            ax.hist(np.clip(v, lo, hi), bins=bins, density=True, histtype="step",
                    color=COLORS[d], ls=STYLES[d], label=d)
        i = all_names.index(name)
        w1 = dist["w1"][i]
        ax.set_title(f"{name}\nW1 {w1[0]:.3g} / {w1[1]:.3g} / {w1[2]:.3g}, "
                     f"gap {dist['gap_closed_w1'][i]:.2f}", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _pixels(plt, result):
    h = result["histogram"]
    centres = 0.5 * (h["edges"][1:] + h["edges"][:-1])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for d, c in COLORS.items():
        if d not in h:
            continue
        ax.step(centres, h[d] / max(h[d].sum(), 1), where="mid", color=c, label=d)
    ax.set_yscale("log")
    ax.set_xlabel("asinh(pixel / noise std)")
    ax.set_ylabel("fraction of pixels")
    ax.legend()
    return fig


def _noise_power(plt, result):
    sp, acf = result["spectra"], result["acf"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for d, c in COLORS.items():
        if d not in sp:
            continue
        a1.errorbar(sp["k"], sp[d]["mean"], yerr=sp[d]["err"], color=c, label=d, marker=".")
        lag = acf["lags"]
        mid = len(lag) // 2
        a2.plot(lag, acf[d][mid], color=c, marker="o", label=d)
    a1.set_yscale("log")
    a1.set_xlabel("k (cycles / pixel)")
    a1.set_ylabel("noise power (counts$^2$)")
    a2.set_xlabel("x lag (pixels)")
    a2.set_ylabel("noise autocorrelation")
    a1.legend()
    fig.tight_layout()
    return fig


def _calibration(plt, result):
    cal = result.get("calibration", {})
    doms = [d for d in COLORS if d in cal and "m" in cal[d]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for j, (key, title) in enumerate((("m", "multiplicative bias m"), ("c", "additive bias c"))):
        ax = axes[j]
        for x, d in enumerate(doms):
            for comp in (0, 1):
                v, e = cal[d][key][comp], cal[d][f"{key}_err"][comp]
                ax.errorbar(x + 0.15 * (comp - 0.5), v, yerr=e, fmt="o" if comp == 0 else "s",
                            color=COLORS[d], label=f"{key}{comp + 1}" if x == 0 else None)
        if key == "m" and "real" in doms:
            m_real = cal["real"]["m"][0]
            bar = float(cal.get("transfer", {}).get("bar", 2e-3))
            if np.isfinite(m_real):
                ax.axhspan(m_real - bar, m_real + bar, color="0.85", zorder=0)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_xticks(range(len(doms)), doms)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _classifier(plt, result):
    cl = result.get("classifier", {})
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = ("sim-real", "refined-real", "real-real")
    colors = (COLORS["sim"], COLORS["refined"], COLORS["real"])
    for i, c in enumerate(cl.values()):
        for j in range(3):
            ax.errorbar(i + 0.2 * (j - 1), c["auc"][j], yerr=c["err"][j], fmt="o",
                        color=colors[j], label=labels[j] if i == 0 else None)
        if "control_auc" in c:
            ax.errorbar(i + 0.35, c["control_auc"], yerr=c["control_err"], fmt="s",
                        color=COLORS["control"], label="control-real" if i == 0 else None)
    ax.axhline(0.5, color="0.5", lw=0.5)
    ax.set_xticks(range(len(cl)), list(cl))
    ax.set_ylabel("held-out AUC")
    ax.legend(fontsize=7)
    return fig


def _psf_image(psf) -> np.ndarray | None:
    if psf is None:
        return None
    p = np.asarray(psf, dtype=np.float64)
    return p.mean(axis=0) if p.ndim == 3 else p


def _psf(plt, sets):
    from .stats import hsm_moments

    psfs = {d: _psf_image(sets[d].psf) for d in ("sim", "refined", "real") if d in sets}
    psfs = {d: p for d, p in psfs.items() if p is not None}
    fig, axes = plt.subplots(1, len(psfs) + 1, figsize=(3.0 * (len(psfs) + 1), 3.0), squeeze=False)
    axes = axes[0]
    if not psfs:
        axes[0].text(0.5, 0.5, "no /psf in any file", ha="center", va="center")
        return fig
    vmax = max(p.max() for p in psfs.values())
    for ax, (d, p) in zip(axes, psfs.items(), strict=False):
        ax.imshow(np.log10(np.clip(p, vmax * 1e-4, None)), origin="lower", cmap="magma",
                  vmin=np.log10(vmax) - 4, vmax=np.log10(vmax))
        sigma = hsm_moments(p[None])["hsm_sigma"][0]  # NaN where HSM fails
        ax.set_title(f"{d} PSF, sigma {sigma:.2f} px", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        h, w = p.shape
        y, x = np.mgrid[0:h, 0:w]
        r = np.hypot(x - (w - 1) / 2.0, y - (h - 1) / 2.0).round().astype(int)
        count = np.bincount(r.ravel())
        has = count > 0  # an even-sized image has no pixel at radius 0
        prof = np.bincount(r.ravel(), p.ravel())[has] / count[has]
        axes[-1].semilogy(np.flatnonzero(has), np.clip(prof, 1e-7, None), STYLES[d],
                          color=COLORS[d], label=d)
    axes[-1].set_xlabel("radius (pixels)")
    axes[-1].set_ylabel("mean PSF value")
    axes[-1].legend(fontsize=8)
    return fig


def make_plots(result: dict, sets: dict, plots_dir: str | os.PathLike, *, scale: float,
               n_stamps: int = 8, rng: np.random.Generator) -> dict[str, Path]:
    """Draw every figure; return {name: png path}. Captions go to ``<name>.rst`` beside each."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    makers = {"stamps": lambda: _stamps(plt, sets, scale, n_stamps, rng),
              "histograms": lambda: _histograms(plt, result),
              "pixels": lambda: _pixels(plt, result),
              "noise_power": lambda: _noise_power(plt, result),
              "calibration": lambda: _calibration(plt, result),
              "psf": lambda: _psf(plt, sets),
              "classifier": lambda: _classifier(plt, result)}
    for name, make in makers.items():
        fig = make()
        try:
            out[name] = _save(fig, plots_dir, name)
        finally:
            plt.close(fig)
    logger.info("plots in %s: %s", plots_dir, ", ".join(sorted(out)))
    return out
