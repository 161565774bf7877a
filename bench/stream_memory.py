"""Peak memory and REGAUSS throughput of compare's calibration mode against the number of stamps.

    python bench/stream_memory.py results/campaign_fraction/sim/shard-*.h5 --shards 2 16

For each count k of ``--shards``, a fresh process streams the first k files through REGAUSS
(`refinegan.compare.stream.stream_shapes`, compare's default chunk of 1,024 stamps) and reports
the stamps, wall time, stamps/s and the process's peak resident memory. Memory flat in N means the
peak is about the same for 2 and 16 shards (it holds one chunk of pixels plus 64 bytes a stamp).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
from refinegan.compare.params import CompareParams
from refinegan.compare.stream import stream_shapes
files = sys.argv[1:]
t0 = time.perf_counter()
ss = stream_shapes(files, CompareParams())
dt = time.perf_counter() - t0
n = len(ss.shapes["eps1"])
print(json.dumps({"files": len(files), "stamps": n, "wall_s": round(dt, 1),
                  "stamps_per_s": round(n / dt, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "failed": int((ss.shapes["status"] != 0).sum())}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="stamp files (shards), in order")
    ap.add_argument("--shards", type=int, nargs="+", default=[2, 16],
                    help="how many of the files each run streams [default: 2 16]")
    args = ap.parse_args(argv)
    print("| files | stamps | wall (s) | stamps/s | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for k in args.shards:
        out = subprocess.run([sys.executable, "-c", CHILD, *args.files[:k]], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['files']} | {r['stamps']} | {r['wall_s']} | {r['stamps_per_s']} | "
              f"{r['peak_rss_mb']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
