rule prepare_real:
    """Build the target ("real") stamp file from real.source (refinegan prepare-real)."""
    output:
        h5=f"{RESULTS}/real.h5",
    log:
        f"{LOGS}/prepare_real/prepare_real.log",
    benchmark:
        f"{BENCH}/prepare_real.tsv"
    conda:
        "../envs/refinegan.yaml"
    params:
        cfg=sections("seed", "stamp", "sim", "real"),
        config=RUN_CONFIG,
    shell:
        "refinegan prepare-real --no-progress --config {params.config} --out {output.h5}"
        " > {log} 2>&1"
