"""Classifier two-sample tests of compare: gradient boosting on per-image statistics, and a small
CNN on the pixels.

`classifier_tests` runs them all for the three `refinegan.compare.params.PAIRS` through
`refinegan.compare.distances.classifier_auc` (group-aware splits, AUC over seeds).

The pixel CNN (`CNNParams`, `cnn_fit_predict`): stamps go in as ``asinh(x / scale)`` with one
``scale`` for both sets (the real set's median noise std), so the classifier sees noise and faint
structure on the same footing in both. The net is conv3x3(1->c) -> ReLU -> conv3x3 stride 2
(c->2c) -> ReLU -> conv3x3 stride 2 (2c->2c) -> ReLU -> global mean and max pooling -> linear,
trained with Adam on binary cross-entropy. Weights are initialised inside
`torch.random.fork_rng` from the given seed, so no global RNG state changes.
"""

from __future__ import annotations

import logging

import numpy as np

from ..noise import fill_masked
from ..pixel_cnn import pixel_cnn
from . import distances as dist
from .measure import pick_groups
from .params import MORPH_STATS, NOISE_STATS, SCALAR_STATS, CompareParams
from .samples import Samples, triples

__all__ = ["CNNParams", "cnn_fit_predict", "cnn_pixels", "classifier_tests", "tests_vs_real"]

logger = logging.getLogger(__name__)


class CNNParams:
    """Hyper-parameters of the pixel classifier.

    Parameters
    ----------
    scale : float
        Counts; stamps are fed as asinh(x / scale).
    channels : int
        Width of the first layer [default: 8].
    epochs : int
        Passes over the training split [default: 5].
    batch_size : int
        Stamps per step [default: 64].
    lr : float
        Adam learning rate [default: 2e-3].
    threads : int
        torch intra-op threads during the call, restored afterwards [default: 1; a net this
        small trains faster on one thread: 0.17 s vs 2.6 s for 300 16x16 stamps, 2 loaded cores].
    """

    def __init__(self, scale: float, channels: int = 8, epochs: int = 5, batch_size: int = 64,
                 lr: float = 2e-3, threads: int = 1) -> None:
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"CNN input scale must be a positive number of counts, got {scale!r}")
        self.scale = float(scale)
        self.channels = int(channels)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.threads = int(threads)

    def fit_predict(self, x_train, y_train, x_test, seed: int) -> np.ndarray:
        return cnn_fit_predict(x_train, y_train, x_test, seed, self)


def cnn_fit_predict(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int, params: CNNParams
) -> np.ndarray:
    """Train the CNN on (x_train (n, H, W), y_train (n,)) and return scores for x_test."""
    import torch

    def prep(x: np.ndarray) -> torch.Tensor:  # (n, H, W) counts -> (n, 1, H, W)
        x = np.arcsinh(np.nan_to_num(np.asarray(x, np.float64)) / params.scale)
        return torch.from_numpy(x.astype(np.float32))[:, None]

    threads_before = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    try:
        return _train_and_score(x_train, y_train, x_test, seed, params, prep)
    finally:
        torch.set_num_threads(threads_before)


def _train_and_score(x_train, y_train, x_test, seed, params, prep) -> np.ndarray:
    import torch

    xt, yt = prep(x_train), torch.from_numpy(np.asarray(y_train, np.float32))
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = pixel_cnn(params.channels)
    opt = torch.optim.Adam(net.parameters(), lr=params.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()
    for epoch in range(params.epochs):
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for start in range(0, len(xt), params.batch_size):
            idx = order[start : start + params.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(xt[idx]).squeeze(1), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        logger.debug("cnn seed %d epoch %d | loss %.4f", seed, epoch, total / len(xt))
    net.eval()
    with torch.no_grad():
        xs = prep(x_test)
        scores = [net(xs[s : s + 512]).squeeze(1) for s in range(0, len(xs), 512)]
    return torch.cat(scores).numpy().astype(np.float64)


def _auc_triple(xs, gs, half_b_real, fit_predict, seeds, p, rng) -> dict:
    """AUCs of the three PAIRS; with a control set in ``xs``, also control vs real."""
    res, n_groups = [], []
    for (xa, xb), (ga, gb) in zip(triples(xs["sim"], xs["refined"], xs["real"], half_b_real),
                                  triples(gs["sim"], gs["refined"], gs["real"], half_b_real),
                                  strict=True):
        res.append(dist.classifier_auc(xa, xb, ga, gb, fit_predict=fit_predict, seeds=seeds,
                                       test_fraction=p.test_fraction, n_boot=p.n_bootstrap,
                                       rng=rng))
        n_groups.append([len(np.unique(ga)), len(np.unique(gb))])
    auc = np.array([r.auc for r in res])
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = float(1.0 - (auc[1] - 0.5) / (auc[0] - 0.5))
    out = {"auc": auc, "err": np.array([r.err for r in res]),
           "seed_aucs": np.stack([r.seed_aucs for r in res]),
           "n": np.array([[r.n_a, r.n_b] for r in res]), "n_groups": np.array(n_groups),
           "gap_closed": gap}
    if "control" in xs:
        r = dist.classifier_auc(xs["control"], xs["real"], gs["control"], gs["real"],
                                fit_predict=fit_predict, seeds=seeds,
                                test_fraction=p.test_fraction, n_boot=p.n_bootstrap, rng=rng)
        out["control_auc"], out["control_err"] = r.auc, r.err
        out["control_n_groups"] = np.array([len(np.unique(gs["control"])),
                                            len(np.unique(gs["real"]))])
    return out


def _features(data: Samples, d: str, names, with_power: bool) -> np.ndarray:
    """(N, F) features of domain ``d``: the statistics ``names``, then optionally the noise power
    spectrum / noise variance (K columns); non-finite values NaN."""
    m = data.meas[d]
    x = np.stack([m.values(n) for n in names], axis=1)
    if with_power:
        var = m.scalars["noise_std"][:, None] ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            x = np.concatenate([x, m.power / var], axis=1)
    return np.where(np.isfinite(x), x, np.nan)


def cnn_pixels(data: Samples, d: str, idx: np.ndarray) -> np.ndarray:
    """The stamps ``idx`` of set ``d`` as the pixel CNN sees them: counts (k, H, W), with bad
    pixels (``/mask`` non-zero: cosmic rays, hot pixels) replaced by white noise of the stamp's
    sky noise std by `refinegan.noise.fill_masked`, as training replaces them, so that the CNN
    does not count against the refined stamps the artefacts refinegan by design never adds
    (docs/compare.md). Deterministic: the noise comes from a fixed stream (seed 0)."""
    s = data.sets[d]
    x = np.asarray(s.images[idx], dtype=np.float32)
    if s.mask is None:
        return x
    sigma = np.asarray(data.meas[d].scalars["noise_std"], np.float64)[idx]
    sigma = np.where(np.isfinite(sigma), sigma, np.nanmedian(sigma))
    return fill_masked(x, np.asarray(s.mask[idx]), sigma, seed=0)[0]


def _cnn_test(data: Samples, p: CompareParams, rng: np.random.Generator) -> dict:
    """The pixel CNN on at most ``p.cnn_max_stamps`` stamps (whole groups) per domain."""
    cnn = CNNParams(data.scale, channels=p.cnn_channels, epochs=p.cnn_epochs, threads=p.threads)
    groups = data.groups
    idx = {"sim": pick_groups(groups["sim"], p.cnn_max_stamps, rng)}
    idx["refined"] = idx["sim"]
    idx["real"] = pick_groups(groups["real"], p.cnn_max_stamps, rng)
    if data.has_control:
        idx["control"] = pick_groups(groups["control"], p.cnn_max_stamps, rng)
    xs = {d: cnn_pixels(data, d, idx[d]) for d in idx}
    gs = {d: groups[d][idx[d]] for d in idx}
    return _auc_triple(xs, gs, data.half_b[idx["real"]], cnn.fit_predict, p.cnn_seeds, p, rng)


def classifier_tests(data: Samples, p: CompareParams, rng: np.random.Generator) -> dict:
    """Classifier two-sample tests: gradient boosting on all / noise-only / statmorph statistics,
    and the CNN on pixels.

    Parameters
    ----------
    data : Samples
        Sets, measurements, groups, the real half split and the CNN's asinh scale.
    p : CompareParams
        ``gb_*``, ``cnn_*``, ``test_fraction``, ``n_bootstrap`` and ``threads``.
    rng : numpy.random.Generator
        Drawn in this order: gb_all, gb_noise, gb_morph, then the CNN's stamp picks and splits.

    Returns
    -------
    dict
        Per test (``gb_all``, ``gb_noise``, ``gb_morph`` with statmorph, ``cnn_pixels`` with
        ``p.cnn_seeds > 0``): ``auc``, ``err`` (3,), ``seed_aucs`` (3, seeds), ``n`` (3, 2)
        stamps and ``n_groups`` (3, 2) distinct galaxies of the two sets of each pair,
        ``gap_closed``; ``control_auc``, ``control_err``, ``control_n_groups`` (2,) with a
        control set. `refinegan.compare.verdicts.apply_minimums` judges them afterwards.
    """
    doms = ("sim", "refined", "real")

    def gb(xtr, ytr, xte, seed):
        return dist.gb_fit_predict(xtr, ytr, xte, seed, max_iter=p.gb_max_iter,
                                   threads=p.threads)

    out = {}
    cdoms = doms + (("control",) if data.has_control else ())
    for key, names, power in (("gb_all", SCALAR_STATS, True), ("gb_noise", NOISE_STATS, True)):
        xs = {d: _features(data, d, names, power) for d in cdoms}
        out[key] = _auc_triple(xs, data.groups, data.half_b, gb, p.gb_seeds, p, rng)
        logger.info("classifier %s: AUC %s", key, np.round(out[key]["auc"], 3))
    if data.has_morph:
        xs = {d: _features(data, d, MORPH_STATS, False) for d in doms}
        gs = {d: data.groups[d][data.meas[d].morph_index] for d in doms}
        out["gb_morph"] = _auc_triple(xs, gs, data.half_b[data.meas["real"].morph_index], gb,
                                      p.gb_seeds, p, rng)
    if p.cnn_seeds > 0:
        out["cnn_pixels"] = _cnn_test(data, p, rng)
        logger.info("classifier cnn_pixels: AUC %s", np.round(out["cnn_pixels"]["auc"], 3))
    return out


def tests_vs_real(data: Samples, d: str, p: CompareParams, rng: np.random.Generator,
                  paired: str | None = None) -> dict:
    """The classifier tests of `classifier_tests` for one more set ``d`` (e.g. ``psf_matched``)
    against the real set only: a column beside sim's and refined's.

    ``rng`` is drawn in this order: gb_all, gb_noise, gb_morph, then the CNN's stamp picks (``d``
    then real) and splits. Returns per test ``auc``, ``err``, ``seed_aucs`` (seeds,) and ``n`` (2,).

    With ``paired`` (a set that holds ``d``'s stamps, changed: ``refined`` for ``psf_matched``),
    every test also runs on ``paired`` vs real with the same splits, classifier seeds and bootstrap
    resamples (`refinegan.compare.distances.paired_classifier_auc`; the draws, and so ``d``'s own
    AUCs, are those without it) and adds ``paired_auc``, ``paired_err``, ``diff`` (AUC of
    ``paired`` - AUC of ``d``), ``diff_err`` (its paired error) and ``seed_diffs`` (seeds,).
    """
    if paired is not None and not np.array_equal(data.groups[d], data.groups[paired]):
        raise ValueError(f"paired classifier tests: sets {d!r} and {paired!r} do not hold the same "
                         "galaxies in the same order (their groups differ)")

    def gb(xtr, ytr, xte, seed):
        return dist.gb_fit_predict(xtr, ytr, xte, seed, max_iter=p.gb_max_iter, threads=p.threads)

    def one(xa, xb, ga, gb_, fit_predict, seeds, xa2=None):
        kw = dict(fit_predict=fit_predict, seeds=seeds, test_fraction=p.test_fraction,
                  n_boot=p.n_bootstrap, rng=rng)
        extra = {}
        if xa2 is None:
            r = dist.classifier_auc(xa, xb, ga, gb_, **kw)
        else:
            q = dist.paired_classifier_auc(xa, xa2, xb, ga, gb_, **kw)
            r = q.first
            extra = {"paired_auc": q.second.auc, "paired_err": q.second.err, "diff": q.diff,
                     "diff_err": q.err, "seed_diffs": q.seed_diffs}
        return {"auc": r.auc, "err": r.err, "seed_aucs": r.seed_aucs,
                "n": np.array([r.n_a, r.n_b]), **extra}

    def feats(x, names, power):
        return None if x is None else _features(data, x, names, power)

    out, g = {}, data.groups
    for key, names in (("gb_all", SCALAR_STATS), ("gb_noise", NOISE_STATS)):
        out[key] = one(feats(d, names, True), feats("real", names, True), g[d], g["real"], gb,
                       p.gb_seeds, feats(paired, names, True))
    if data.has_morph:
        mi = {x: data.meas[x].morph_index for x in (d, "real")}
        if paired is not None and not np.array_equal(data.meas[paired].morph_index, mi[d]):
            # statmorph measured other stamps of the two sets: not paired, d's column only
            xa2 = None
        else:
            xa2 = feats(paired, MORPH_STATS, False)
        out["gb_morph"] = one(feats(d, MORPH_STATS, False), feats("real", MORPH_STATS, False),
                              g[d][mi[d]], g["real"][mi["real"]], gb, p.gb_seeds, xa2)
    if p.cnn_seeds > 0:
        cnn = CNNParams(data.scale, channels=p.cnn_channels, epochs=p.cnn_epochs, threads=p.threads)
        idx = {x: pick_groups(g[x], p.cnn_max_stamps, rng) for x in (d, "real")}
        out["cnn_pixels"] = one(*(cnn_pixels(data, x, idx[x]) for x in (d, "real")),
                                g[d][idx[d]], g["real"][idx["real"]], cnn.fit_predict, p.cnn_seeds,
                                None if paired is None else cnn_pixels(data, paired, idx[d]))
    return out
