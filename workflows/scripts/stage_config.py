"""Rule stage_config: write the run config this Snakemake invocation resolved, for one stage.

Run by Snakemake's `script:` directive (the `snakemake` object holds the invocation's config,
output and log). The file is written atomically, so a job never reads a half-written config.
"""

import json
from pathlib import Path

from refinegan.atomic import atomic_path
from refinegan.config import RunConfig

snakemake = globals()["snakemake"]  # injected by Snakemake
cfg = RunConfig.of(snakemake.config)
with atomic_path(snakemake.output.json) as tmp:
    tmp.write_text(json.dumps(cfg.to_dict(), indent=1, sort_keys=True))
Path(snakemake.log[0]).write_text(f"wrote {snakemake.output.json} for {snakemake.wildcards.stage}\n")
