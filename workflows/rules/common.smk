# Shared paths and helpers. Outputs live in results/<name>/, logs in logs/<name>/<stage>/,
# benchmarks in benchmarks/<name>/.
import json
import os
from pathlib import Path

from refinegan.config import RunConfig, check_shards, read_yaml

# The run config, resolved once here at the edge (file + --config overrides + schema defaults,
# validated, frozen): the rules read it, and every CLI call reads the same values back from
# RUN_CONFIG below.
# read_yaml refuses duplicate keys, which Snakemake's own loader accepts (keeping the last)
for _file in workflow.configfiles:
    read_yaml(_file)
CFG = RunConfig.of(config)
check_shards(CFG)
RUN = CFG.name
RESULTS = f"results/{RUN}"
LOGS = f"logs/{RUN}"
BENCH = f"benchmarks/{RUN}"
NSHARDS = CFG.shards

# Rewritten only when it changes; rules see changes of their own sections through `params`
# (Snakemake's params rerun trigger), so e.g. a new train.steps does not redraw the sims.
RUN_CONFIG = f"{RESULTS}/run_config.json"
_text = json.dumps(CFG.to_dict(), indent=1, sort_keys=True)
_path = Path(RUN_CONFIG)
if not _path.exists() or _path.read_text() != _text:
    _path.parent.mkdir(parents=True, exist_ok=True)
    _tmp = _path.with_suffix(".tmp")
    _tmp.write_text(_text)
    _tmp.replace(_path)


def sections(*names):
    """The config sections a rule depends on, as a string for `params` (rerun trigger)."""
    return json.dumps({k: CFG.to_dict()[k] for k in names}, sort_keys=True)


def sim_shards():
    return expand(f"{RESULTS}/sim/shard-{{i}}.h5", i=range(NSHARDS))


def refined_shards():
    return expand(f"{RESULTS}/refined/shard-{{i}}.h5", i=range(NSHARDS))
