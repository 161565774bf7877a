# Shared paths and helpers. Outputs live in results/<name>/, logs in logs/<name>/<stage>/,
# benchmarks in benchmarks/<name>/.
import json
import os
from pathlib import Path

from refinegan.config import RunConfig, check_shards, read_yaml, twin_enabled

# The run config, resolved once here at the edge (file + --config overrides + schema defaults,
# validated, frozen). Parsing the workflow writes nothing: a dry run, or a run refused by the
# lock, cannot change what a running workflow's jobs read.
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
# whether prepare_twin makes the paired twin target: compare.twin, null = on for the mock
TWIN = twin_enabled(CFG)

# The config sections each stage depends on: its own and those of the stages upstream of it.
# Rule `stage_config` writes results/<name>/config/<stage>.json, the whole run config as this
# invocation resolved it, when those sections change (Snakemake's params rerun trigger); the
# stage reads that file, its input, so e.g. a new train.steps retrains but does not redraw sims.
STAGE_SECTIONS = {
    "simulate": ("seed", "stamp", "sim"),
    "prepare_real": ("seed", "stamp", "sim", "real"),
    "train": ("seed", "stamp", "sim", "real", "train"),
    "compare": ("seed", "stamp", "sim", "real", "train", "compare"),
}


def sections(*names):
    """The config sections a rule depends on, as a string for `params` (rerun trigger)."""
    plain = CFG.to_dict()
    return json.dumps({k: plain[k] for k in names}, sort_keys=True)


def stage_config(stage):
    """The run config file the jobs of ``stage`` read (an output of rule stage_config)."""
    return f"{RESULTS}/config/{stage}.json"


def target_inputs():
    """The user's files prepare_real reads, so that changing one reruns it (and what follows)."""
    real = CFG["real"]
    if real["source"] == "fits":
        from refinegan.target.fits import list_fits_files

        files = [str(p) for p in list_fits_files(real["fits"]["path"])]
        return files + ([real["fits"]["psf_path"]] if real["fits"]["psf_path"] else [])
    if real["source"] == "hdf5":
        return [real["hdf5"]["path"]] if real["hdf5"]["path"] else []
    if real["source"] == "cosmos":
        cat = Path(real["cosmos"]["dir"]) / real["cosmos"]["file_name"]
        return [str(cat)] if cat.exists() else []
    return []  # the mock draws everything from the config


def sim_shards():
    return expand(f"{RESULTS}/sim/shard-{{i}}.h5", i=range(NSHARDS))


def refined_shards():
    return expand(f"{RESULTS}/refined/shard-{{i}}.h5", i=range(NSHARDS))


def twin_file():
    """The paired twin target compare reads, when compare.twin is on (else nothing)."""
    return [f"{RESULTS}/twin.h5"] if TWIN else []
