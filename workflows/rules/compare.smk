rule compare:
    """Statistics, distances, label preservation and shear calibration (refinegan compare)."""
    input:
        sim=sim_shards(),
        refined=refined_shards(),
        real=rules.prepare_real.output.h5,
        # the noise-only control exists for the mock target only
        control=(
            [rules.prepare_control.output.h5]
            if CFG["real"]["source"] == "mock"
            else []
        ),
        twin=twin_file(),
        cfg=stage_config("compare"),
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
    threads: 4
    params:
        control=lambda wildcards, input: (
            f"--control {input.control}" if input.control else ""
        ),
        twin=lambda wildcards, input: f"--twin {input.twin}" if input.twin else "",
    shell:
        "refinegan compare --no-progress --config {input.cfg} --sim {input.sim}"
        " --refined {input.refined} --real {input.real} --out {output.h5}"
        " {params.control} {params.twin} --plots {output.plots} > {log} 2>&1"


rule summary:
    """The key numbers of compare.h5 as one HTML page for the report (refinegan summary)."""
    input:
        h5=rules.compare.output.h5,
    output:
        html=report(
            f"{RESULTS}/summary.html",
            caption="../report/summary.rst",
            category="Summary",
        ),
    log:
        f"{LOGS}/compare/summary.log",
    conda:
        "../envs/refinegan.yaml"
    shell:
        "refinegan summary --compare {input.h5} --out {output.html} > {log} 2>&1"
