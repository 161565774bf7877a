"""Can the discriminator see what is left? D trained alone as a two-sample classifier (issue 18).

In training D must separate R's output from the target before R can learn anything from it. This
bench asks the prior question on R's *input*: take a finished run's PSF- and noise-matched sims
(``psf_matched/``, the physics alone) and its target (``real.h5``), normalise them as training
does (asinh in units of each stamp's noise sigma), train a discriminator on 3/4 of the galaxy
groups for the budget of one default training (``--steps`` batches of ``--batch`` stamps from
each side, Adam at D's learning rate) and report the held-out AUC of

  * ``local``: the mean of the patch-logit map (what the adversarial loss averages),
  * ``global``: D's galaxy-scale logit (default D only),
  * ``both``: the two logits summed,

for each D variant, beside the compare stage's pixel CNN (``cnn``: conv 8-16-16, mean + max
pool) trained on the same split and budget. 0.5 = D cannot tell the physics-only sims from the
target, so no adversarial lever can teach R anything; an AUC near the compare CNN's means D's
architecture sees what is left. Errors: std over ``--seeds`` / sqrt(seeds).

    python bench/d_sees.py results/panel_knots_no_bulge_mmnone [--steps 1000] [--seeds 3]
        [--variants default maxpool cnn] [--fill-masked] [--json out.json]

``--fill-masked`` replaces the target's masked pixels (cosmic rays, hot pixels) by noise first,
as training does (`refinegan.noise.fill_masked`): what D can see in training.

Variants: ``default`` (the training's D: local map + mean-pooled global branch), ``maxpool``
(the same D whose global branch pools mean and max, as the compare CNN does), ``cnn`` (the compare
stage's pixel CNN, `refinegan.compare.classifiers`, one logit per stamp).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from refinegan.io import read_many  # noqa: E402
from refinegan.noise import fill_masked  # noqa: E402
from refinegan.pixel_cnn import pixel_cnn as cnn_net  # noqa: E402
from refinegan.refiner.discriminator import Discriminator  # noqa: E402
from refinegan.refiner.normalize import Normalization  # noqa: E402

VARIANTS = ("default", "maxpool", "cnn")


class MaxPoolD(Discriminator):
    """The training's D with its global branch pooling mean and max (compare CNN's _PoolCat)."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__(channels, global_branch=True)
        self.global_head = nn.Linear(4 * channels, 1)

    def forward(self, z):
        h = self.local(z)
        g = self.glob(h)
        g = torch.cat([g.mean(dim=(2, 3)), g.amax(dim=(2, 3))], dim=1)
        return self.local_head(h), self.global_head(g)


class CnnD(nn.Module):
    """The compare stage's pixel CNN as a one-logit D (no local map)."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.net = cnn_net(channels)

    def forward(self, z):
        return None, self.net(z)


def build(variant: str) -> nn.Module:
    return {"default": lambda: Discriminator(32, global_branch=True),
            "maxpool": lambda: MaxPoolD(32), "cnn": lambda: CnnD(8)}[variant]()


def normalised(paths, fill: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """(N, 1, H, W) float32 asinh stamps as training normalises them, and a group id per stamp;
    ``fill``: masked pixels (cosmic rays, hot pixels) replaced by noise first, as training does."""
    s = read_many(paths)
    norm = Normalization()
    sigma = norm.sigmas(s.images, s.labels, where=str(paths[0]))
    images = fill_masked(s.images, s.mask, sigma, seed=0)[0] if fill else s.images
    z = norm.forward(np.asarray(images, np.float64), sigma).astype(np.float32)
    groups = np.asarray(s.labels["pair_id"]) if "pair_id" in s.labels else np.arange(len(z)) // 4
    return torch.from_numpy(z)[:, None], groups


def split(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True for the training stamps: 3/4 of the distinct groups."""
    u = rng.permutation(np.unique(groups))
    return np.isin(groups, u[: (3 * len(u)) // 4])


def logits(model, z, chunk: int = 512) -> dict:
    loc, glo = [], []
    with torch.no_grad():
        for i in range(0, len(z), chunk):
            a, b = model(z[i:i + chunk])
            loc.append(None if a is None else a.mean(dim=(1, 2, 3)))
            glo.append(None if b is None else b[:, 0])
    out = {}
    if loc[0] is not None:
        out["local"] = torch.cat(loc).numpy()
    if glo[0] is not None:
        out["global"] = torch.cat(glo).numpy()
    if len(out) == 2:
        out["both"] = out["local"] + out["global"]
    return out


def one(variant: str, fake, real, seed: int, steps: int, batch: int, lr: float) -> dict:
    rng = np.random.default_rng(seed)
    ftr, rtr = split(fake[1], rng), split(real[1], rng)
    torch.manual_seed(seed)
    model = build(variant)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    zf, zr = fake[0][torch.from_numpy(ftr)], real[0][torch.from_numpy(rtr)]
    for _ in range(steps):
        bf = zf[torch.from_numpy(rng.integers(0, len(zf), batch))]
        br = zr[torch.from_numpy(rng.integers(0, len(zr), batch))]
        lr_, gr = model(br)
        lf, gf = model(bf)
        loss = 0.0
        if lr_ is not None:
            loss = loss + F.softplus(-lr_).mean() + F.softplus(lf).mean()
        if gr is not None:
            loss = loss + F.softplus(-gr).mean() + F.softplus(gf).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    a, b = logits(model, fake[0][torch.from_numpy(~ftr)]), logits(model, real[0][torch.from_numpy(~rtr)])
    y = np.r_[np.zeros(len(next(iter(a.values())))), np.ones(len(next(iter(b.values()))))]
    return {k: float(roc_auc_score(y, np.r_[a[k], b[k]])) for k in a}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a finished run's results folder (psf_matched/, real.h5)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--fake", default="psf_matched", help="subfolder of shards to test against the target")
    ap.add_argument("--fill-masked", action="store_true",
                    help="replace masked pixels (cosmic rays, hot pixels) by noise, as training does")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    shards = sorted((a.run / a.fake).glob("shard-*.h5"))
    if not shards or not (a.run / "real.h5").exists():
        sys.exit(f"{a.run}: needs {a.fake}/shard-*.h5 and real.h5 (a finished run's results folder)")
    fake, real = normalised(shards, a.fill_masked), normalised([a.run / "real.h5"], a.fill_masked)
    rows = {}
    for v in a.variants:
        res = [one(v, fake, real, 1000 + s, a.steps, a.batch, a.lr) for s in range(a.seeds)]
        rows[v] = {k: (float(np.mean([r[k] for r in res])),
                       float(np.std([r[k] for r in res]) / np.sqrt(len(res)))) for k in res[0]}
        print(v, {k: f"{m:.3f} +- {e:.3f}" for k, (m, e) in rows[v].items()}, flush=True)
    print(f"\n{a.run.name}: {a.fake} vs target{' (masked pixels filled)' if a.fill_masked else ''}, "
          f"held-out AUC ({a.steps} steps x {a.batch}, {a.seeds} seeds)")
    print("| D | local | global | both |\n|---|---|---|---|")
    for v, r in rows.items():
        cells = [f"{r[k][0]:.3f} +- {r[k][1]:.3f}" if k in r else "" for k in ("local", "global", "both")]
        print(f"| {v} | {' | '.join(cells)} |")
    if a.json:
        a.json.write_text(json.dumps({"run": str(a.run), "fake": a.fake, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
