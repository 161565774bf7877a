# The run config each stage's jobs read (results/<name>/config/<stage>.json): written by a job,
# never while the workflow is parsed.
rule stage_config:
    """The run config as this invocation resolved it, for the jobs of one stage."""
    output:
        json=f"{RESULTS}/config/{{stage}}.json",
    log:
        f"{LOGS}/config/{{stage}}.log",
    wildcard_constraints:
        stage="|".join(STAGE_SECTIONS),
    conda:
        "../envs/refinegan.yaml"
    params:
        cfg=lambda wildcards: sections(*STAGE_SECTIONS[wildcards.stage]),
    script:
        "../scripts/stage_config.py"
