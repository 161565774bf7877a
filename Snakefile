# refinegan: simulate -> prepare-real -> train -> refine -> compare.
# `snakemake --cores all` runs the default config (config/config.yaml).
from snakemake.utils import min_version, validate

from refinegan.config import coerce_types

min_version("9.0")


configfile: "config/config.yaml"


# `--config 'sim={n: 64}'` passes nested values as strings: type them by the schema first.
config.update(coerce_types(config))


validate(config, "workflows/schemas/config.schema.yaml")


include: "workflows/rules/common.smk"
include: "workflows/rules/stage_config.smk"
include: "workflows/rules/simulate.smk"
include: "workflows/rules/prepare_real.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/refine.smk"
include: "workflows/rules/compare.smk"


localrules:
    all,
    stage_config,
    summary,


# Every stage's outputs are targets, so a deleted intermediate file (one sim shard, say) is
# redrawn together with what depends on it, instead of being skipped as "not needed".
rule all:
    input:
        sim_shards(),
        rules.prepare_real.output.h5,
        twin_file(),
        rules.train.output.model,
        refined_shards(),
        rules.compare.output.h5,
        rules.summary.output.html,
