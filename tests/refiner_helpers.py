"""Stamp files for the refiner tests: analytic elliptical Gaussian galaxies, exact shear twins.

A galaxy is a Gaussian of covariance ``C_gal`` (size ``sigma_px``, intrinsic ellipticity), sheared
by ``g`` exactly (``C -> A C A^T``), convolved with a round Gaussian PSF (covariances add) and
sampled at pixel centres. Twins with ``g1 = 0.02`` and ``0`` share galaxies and noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from refinegan.io import SIM_LABELS, write_stamps

PIXEL_SCALE = 0.2  # arcsec / pixel
PSF_SIGMA_PX = 1.5
FLUX_MIN, FLUX_MAX = 150.0, 1500.0  # counts, with noise sigma 1: the default config's flux / sigma range
CORR_KERNEL = np.array([[0.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 0.0]])  # mock coadd-like


# The refiner's parts one at a time: a test of one mechanism switches off what the default run
# adds on top of SimGAN (PSF and noise matching, the latent code, the noise anchors on sky pixels, the
# linear residual, self-regularisation 1.0, no pretraining) and then switches on what it tests.
PLAIN_REFINER = ["train.psf_match=false", "train.noise_match=false", "train.latent_dim=0", "train.noise_lambda=0",
                 "train.noise_acf_lambda=0", "train.noise_acf_spread_lambda=0",
                 "train.noise_shape_lambda=0", "train.noise_region=frame",
                 "train.residual_space=asinh", "train.reg_lambda=0.3", "train.pretrain_r_steps=100",
                 "train.batch_size=64"]

def psf_image(size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    p = np.exp(-0.5 * (x * x + y * y) / PSF_SIGMA_PX**2)
    return p / p.sum()


def galaxy_params(n: int, rng: np.random.Generator) -> dict:
    e = rng.normal(0, 0.2, (n, 2)).clip(-0.6, 0.6)
    return {
        "flux": np.exp(rng.uniform(np.log(FLUX_MIN), np.log(FLUX_MAX), n)),
        "sigma_px": rng.uniform(1.2, 2.8, n),
        "e1_int": e[:, 0],
        "e2_int": e[:, 1],
    }


def render(params: dict, size: int, g1: float = 0.0, g2: float = 0.0) -> np.ndarray:
    """Noiseless stamps (n, size, size) in counts."""
    n = len(params["flux"])
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    out = np.empty((n, size, size))
    gmag2 = g1 * g1 + g2 * g2
    a = np.array([[1 + g1, g2], [g2, 1 - g1]]) / np.sqrt(1 - gmag2)
    for i in range(n):
        e1, e2 = params["e1_int"][i], params["e2_int"][i]
        b = np.array([[1 + e1, e2], [e2, 1 - e1]]) / np.sqrt(1 - e1 * e1 - e2 * e2)
        c = params["sigma_px"][i] ** 2 * (b @ b.T)  # intrinsic covariance (det = sigma^4)
        c = a @ c @ a.T + PSF_SIGMA_PX**2 * np.eye(2)
        ci = np.linalg.inv(c)
        q = ci[0, 0] * x * x + 2 * ci[0, 1] * x * y + ci[1, 1] * y * y
        out[i] = params["flux"][i] * np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(np.linalg.det(c)))
    return out


def noise(n: int, size: int, sigma: float, rng: np.random.Generator, correlated: bool) -> np.ndarray:
    w = rng.normal(0.0, sigma, (n, size, size))
    if not correlated:
        return w
    k = CORR_KERNEL / np.sqrt((CORR_KERNEL**2).sum())  # keeps the per-pixel sigma
    return ndimage.convolve(w, k[None], mode="wrap")


def sim_labels(params: dict, sigma: float, g1: float, start_id: int = 0) -> dict:
    n = len(params["flux"])
    labels = {name: np.zeros(n) for name in SIM_LABELS}
    labels["id"] = np.arange(start_id, start_id + n, dtype=np.int64)
    labels["g1"] = np.full(n, g1)
    labels["e1_int"], labels["e2_int"] = params["e1_int"], params["e2_int"]
    labels["flux"] = params["flux"]
    labels["hlr"] = params["sigma_px"] * 1.1774 * PIXEL_SCALE
    labels["psf_fwhm"] = np.full(n, 2.3548 * PSF_SIGMA_PX * PIXEL_SCALE)
    labels["noise_sigma"] = np.full(n, sigma)
    labels["snr"] = params["flux"] / sigma
    return labels


def write_set(path, n, size, rng, *, domain="sim", sigma=1.0, correlated=False, g1=0.0,
              pixel_scale=PIXEL_SCALE, params=None, noise_field=None, **kw):
    """Write a sim or real stamp file; returns (path, params, images)."""
    params = galaxy_params(n, rng) if params is None else params
    nf = noise(n, size, sigma, rng, correlated) if noise_field is None else noise_field
    images = (render(params, size, g1) + nf).astype(np.float32)
    labels = sim_labels(params, sigma, g1) if domain == "sim" else {"flux": params["flux"]}
    write_stamps(path, images, labels, domain=domain, pixel_scale=pixel_scale, source="test",
                 config={}, seed=1, psf=psf_image(size), **kw)
    return path, params, images


# -- the learning test: train on white-noise sims vs correlated-noise "real", then measure ------

def noise_features(images: np.ndarray) -> np.ndarray:
    """Per-stamp features a classifier uses: pixel autocorrelations (lags 1, 2, diagonal),
    std, and the border's std and kurtosis (whole stamp, galaxy included)."""
    im = images - images.mean(axis=(1, 2), keepdims=True)
    v = (im * im).mean(axis=(1, 2))

    def acf(a, b):
        return (a * b).mean(axis=(1, 2)) / v

    border = np.concatenate([im[:, :4].reshape(len(im), -1), im[:, -4:].reshape(len(im), -1)], 1)
    bc = border - border.mean(1, keepdims=True)
    kurt = (bc**4).mean(1) / (bc**2).mean(1) ** 2
    return np.column_stack([
        acf(im[:, :, 1:], im[:, :, :-1]), acf(im[:, 1:], im[:, :-1]), acf(im[:, 1:, 1:], im[:, :-1, :-1]),
        acf(im[:, :, 2:], im[:, :, :-2]), acf(im[:, 2:], im[:, :-2]), np.sqrt(v), bc.std(1), kurt,
    ])


def classifier_auc(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """Held-out AUC of a gradient-boosting classifier telling stamps ``a`` from ``b`` (half/half)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    x = np.concatenate([noise_features(a), noise_features(b)])
    y = np.r_[np.zeros(len(a)), np.ones(len(b))]
    idx = np.random.default_rng(seed).permutation(len(y))
    h = len(y) // 2
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=seed).fit(x[idx[:h]], y[idx[:h]])
    return float(roc_auc_score(y[idx[h:]], clf.predict_proba(x[idx[h:]])[:, 1]))


def regauss_e1(images: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """REGAUSS corrected e1 and a success flag per stamp (HSM, strict=False)."""
    import galsim

    psf = galsim.Image(psf_image(size), scale=PIXEL_SCALE)
    e1, ok = np.zeros(len(images)), np.zeros(len(images), bool)
    for i, im in enumerate(images):
        res = galsim.hsm.EstimateShear(galsim.Image(im.astype(np.float64), scale=PIXEL_SCALE), psf,
                                       shear_est="REGAUSS", strict=False)
        e1[i], ok[i] = res.corrected_e1, res.error_message == ""
    return e1, ok


def border_acf(images: np.ndarray) -> float:
    b = images[:, :6] - images[:, :6].mean(axis=(1, 2), keepdims=True)
    return float(((b[:, :, 1:] * b[:, :, :-1]).mean() + (b[:, 1:] * b[:, :-1]).mean()) / 2 / (b * b).mean())


def learning_run(workdir, overrides, *, size=32, n_train=1024, n_test=512, seed=7, g=0.02) -> dict:
    """Train on white-noise sims vs correlated-noise targets; refine held-out sets; measure.

    Returns AUCs (sim-vs-real, refined-vs-real), border autocorrelations, the aperture flux
    ratio refined / sim, per-image e1 drift, and the shear-response change dm (with its error)
    on g and 0 twins (same galaxies and noise).
    """
    import time
    from pathlib import Path

    from refinegan.config import load_config
    from refinegan.io import read_stamps
    from refinegan.refiner.refine import refine
    from refinegan.refiner.train import train

    d = Path(workdir)
    rng = np.random.default_rng(seed)
    write_set(d / "sim.h5", n_train, size, rng)
    write_set(d / "real.h5", n_train, size, rng, domain="real", correlated=True)
    params, nf = galaxy_params(n_test, rng), noise(n_test, size, 1.0, rng, False)
    write_set(d / "twin0.h5", n_test, size, rng, params=params, noise_field=nf, g1=0.0)
    write_set(d / "twin1.h5", n_test, size, rng, params=params, noise_field=nf, g1=g)
    _, _, real_test = write_set(d / "real_test.h5", n_test, size, rng, domain="real", correlated=True)
    # noise-only control: the twins with the target's noise (the same white field, correlated)
    k = CORR_KERNEL / np.sqrt((CORR_KERNEL**2).sum())
    nc = ndimage.convolve(nf, k[None], mode="wrap")
    write_set(d / "ctrl0.h5", n_test, size, rng, params=params, noise_field=nc, g1=0.0)
    write_set(d / "ctrl1.h5", n_test, size, rng, params=params, noise_field=nc, g1=g)
    cfg = load_config(None, [*PLAIN_REFINER, f"stamp.size={size}", "train.device=cpu",
                             "train.sample_every=0", "train.checkpoint_every=100000", *overrides])
    t0 = time.perf_counter()
    res = train(cfg, [d / "sim.h5"], d / "real.h5", d / "out")
    t_train = time.perf_counter() - t0
    for name in ("twin0", "twin1"):
        refine(res.model_path, d / f"{name}.h5", d / f"{name}_ref.h5")
    im = {k: read_stamps(d / f"{k}.h5").images
          for k in ("twin0", "twin1", "twin0_ref", "twin1_ref", "ctrl0", "ctrl1")}
    e = {k: regauss_e1(v, size) for k, v in im.items()}
    ok = np.logical_and.reduce([v[1] for v in e.values()])
    r_sim = (e["twin1"][0][ok] - e["twin0"][0][ok]) / g
    r_ref = (e["twin1_ref"][0][ok] - e["twin0_ref"][0][ok]) / g
    r_ctrl = (e["ctrl1"][0][ok] - e["ctrl0"][0][ok]) / g
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2.0
    ap = (x * x + y * y) < (size / 4) ** 2
    flux_sim, flux_ref = (im["twin0"] * ap).sum((1, 2)), (im["twin0_ref"] * ap).sum((1, 2))
    return {
        "auc_sim_real": classifier_auc(im["twin0"], real_test),
        "auc_refined_real": classifier_auc(im["twin0_ref"], real_test),
        "acf_sim": border_acf(im["twin0"]), "acf_real": border_acf(real_test),
        "acf_refined": border_acf(im["twin0_ref"]),
        "std_refined_over_real": float(im["twin0_ref"][:, :6].std() / real_test[:, :6].std()),
        "flux_ratio": float(flux_ref.sum() / flux_sim.sum()),
        "e1_drift_rms": float(np.sqrt(np.mean((e["twin0_ref"][0][ok] - e["twin0"][0][ok]) ** 2))),
        "dm": float(r_ref.mean() / r_sim.mean() - 1),
        "dm_err": float(np.std(r_ref - r_sim) / np.sqrt(ok.sum()) / r_sim.mean()),
        "dm_control": float(r_ctrl.mean() / r_sim.mean() - 1),
        "dm_control_err": float(np.std(r_ctrl - r_sim) / np.sqrt(ok.sum()) / r_sim.mean()),
        "n_ok": int(ok.sum()), "n_test": n_test, "train_s": t_train, "watch": res.watch,
    }
