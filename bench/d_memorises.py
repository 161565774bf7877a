"""Does D memorise the target? D at the end of a run, on target stamps it trained on and on fresh
ones (issue 18).

A finished run's D (``model/checkpoint.pt``) scores, as training does (its patch-logit mean and
global logit combined with ``train.global_weight``):

  * the run's target stamps (``real.h5``, which D trained on),
  * fresh target stamps from the same mock with another ``real.seed`` (made here with
    ``prepare_real``; mock targets only, or pass ``--fresh FILE``),
  * R's output (``refined/``) and R's input (``psf_matched/``).

and prints the AUCs: trained-on vs fresh target (0.5 = D learnt only what the target's
distribution has; above = D recognises the stamps it saw), and refined / R's input vs each.

    python bench/d_memorises.py results/panel_knots_no_bulge_mo2 [--n 2048] [--fresh-seed 9104]
        [--fresh FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d_sees import normalised  # noqa: E402

from refinegan.config import load_config  # noqa: E402
from refinegan.refiner.losses import stamp_score  # noqa: E402
from refinegan.refiner.model import build_discriminator  # noqa: E402
from refinegan.refiner.refiner_file import TrainCheckpoint  # noqa: E402
from refinegan.refiner.settings import TrainSettings  # noqa: E402
from refinegan.target.prepare_real import prepare_real  # noqa: E402


def _auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """AUC of scores ``pos`` (label 1) above ``neg`` (label 0)."""
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))


def d_scores(run: Path):
    """D of ``run``'s checkpoint as a function (N, 1, H, W) -> (N,) stamp scores."""
    s = TrainSettings.from_config(load_config(run / "config" / "train.json"))
    d = build_discriminator(s.disc_arch(), 0)
    d.load_state_dict(TrainCheckpoint.read(run / "model" / "checkpoint.pt").trainer["disc"])
    d.eval()

    def score(z: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            out = [stamp_score(d(z[i:i + 512]), s.global_weight) for i in range(0, len(z), 512)]
        return torch.cat(out).numpy().astype(np.float64)

    return score


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--n", type=int, default=2048, help="stamps per set")
    ap.add_argument("--fresh-seed", type=int, default=9104, help="real.seed of the fresh mock target")
    ap.add_argument("--fresh", type=Path, help="a fresh target file instead of making one")
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    score = d_scores(a.run)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = a.fresh
        if fresh is None:
            cfg = load_config(a.run / "config" / "prepare_real.json",
                              [f"real.seed={a.fresh_seed}", f"real.n={a.n}"])
            if cfg["real"]["source"] != "mock":
                sys.exit(f"{a.run}: the target is real.source {cfg['real']['source']!r}; pass --fresh FILE")
            fresh = prepare_real(cfg, Path(tmp) / "fresh.h5")
        sets = {"trained-on target": [a.run / "real.h5"], "fresh target": [fresh],
                "refined": sorted((a.run / "refined").glob("shard-*.h5")),
                "R's input": sorted((a.run / "psf_matched").glob("shard-*.h5"))}
        sc = {k: score(normalised(v)[0][: a.n]) for k, v in sets.items()}
    print(f"| {a.run.name} | {_auc(sc['fresh target'], sc['trained-on target']):.3f} | "
          + " | ".join(f"{_auc(sc[f], sc[t]):.3f}" for f in ("refined", "R's input")
                       for t in ("trained-on target", "fresh target")) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
