rule compare:
    """Statistics, distances, label preservation and shear calibration (refinegan compare)."""
    input:
        sim=sim_shards(),
        refined=refined_shards(),
        real=rules.prepare_real.output.h5,
    output:
        h5=f"{RESULTS}/compare.h5",
        plots=report(
            directory(f"{RESULTS}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Compare",
        ),
    log:
        f"{LOGS}/compare/compare.log",
    benchmark:
        f"{BENCH}/compare.tsv"
    conda:
        "../envs/refinegan.yaml"
    threads: workflow.cores
    params:
        cfg=sections("seed", "compare"),
        config=RUN_CONFIG,
    shell:
        "refinegan compare --no-progress --config {params.config} --sim {input.sim}"
        " --refined {input.refined} --real {input.real} --out {output.h5}"
        " --plots {output.plots} > {log} 2>&1"
