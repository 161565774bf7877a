rule simulate:
    """Draw one shard of the GalSim simulation (refinegan simulate)."""
    input:
        cfg=stage_config("simulate"),
    output:
        h5=f"{RESULTS}/sim/shard-{{i}}.h5",
    log:
        f"{LOGS}/simulate/shard-{{i}}.log",
    benchmark:
        f"{BENCH}/simulate/shard-{{i}}.tsv"
    conda:
        "../envs/refinegan.yaml"
    params:
        nshards=NSHARDS,
    shell:
        "refinegan simulate --no-progress --config {input.cfg} --out {output.h5}"
        " --shard {wildcards.i} --nshards {params.nshards} > {log} 2>&1"
