"""Peak memory of training's data preparation (`refinegan.refiner.data.prepare_data`: read, PSF
and noise matching, normalisation) against the number of sim stamps, in blocks and in one pass.

    python bench/train_memory.py --config results/<run>/config/train.json \\
        --real results/<run>/real.h5 --sims results/<run>/sim/shard-*.h5 --shards 1 4

For each count k of ``--shards`` and each way (``blocks``: `Reobserve.apply` in blocks of
`CHUNK_STAMPS`, as training runs it; ``one pass``: every stamp at once, as before session 16), a
fresh process prepares the first k sim files against the real file and reports the stamps, wall
time and the process's peak resident memory. The stamps themselves are 9.2 kB each (48 x 48
float32) and are held a few times over; one pass added the matchings' padded complex grids.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import torch
from refinegan.config import RunConfig
from refinegan.refiner import reobserve
from refinegan.refiner.data import prepare_data
from refinegan.refiner.settings import TrainSettings
cfg_path, real, one_pass, *sims = sys.argv[1:]
if one_pass == "1":
    reobserve.Reobserve.apply.__defaults__ = (0, 10**9)
cfg = RunConfig.of(json.load(open(cfg_path)))
t0 = time.perf_counter()
d = prepare_data(TrainSettings.from_config(cfg), cfg.seed, sims, real, torch.device("cpu"))
print(json.dumps({"stamps": int(d.sim_z.shape[0]), "wall_s": round(time.perf_counter() - t0, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="a run's resolved config (results/<run>/config/train.json)")
    ap.add_argument("--real", required=True)
    ap.add_argument("--sims", nargs="+", required=True)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 4])
    a = ap.parse_args()
    for k in a.shards:
        for name, flag in (("blocks", "0"), ("one pass", "1")):
            out = subprocess.run([sys.executable, "-c", CHILD, a.config, a.real, flag, *a.sims[:k]],
                                 capture_output=True, text=True)
            if out.returncode:
                print(f"{k} shards, {name}: exit {out.returncode} {out.stderr.strip()[-300:]}", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{k} shards, {name}: {r['stamps']} stamps, {r['wall_s']} s, peak RSS "
                  f"{r['peak_rss_mb']} MB", flush=True)


if __name__ == "__main__":
    main()
