rule simulate:
    """Draw one shard of the GalSim simulation (refinegan simulate)."""
    output:
        h5=f"{RESULTS}/sim/shard-{{i}}.h5",
    log:
        f"{LOGS}/simulate/shard-{{i}}.log",
    benchmark:
        f"{BENCH}/simulate/shard-{{i}}.tsv"
    conda:
        "../envs/refinegan.yaml"
    params:
        cfg=sections("seed", "stamp", "sim"),
        nshards=NSHARDS,
        config=RUN_CONFIG,
    shell:
        "refinegan simulate --no-progress --config {params.config} --out {output.h5}"
        " --shard {wildcards.i} --nshards {params.nshards} > {log} 2>&1"
