rule refine:
    """Refine one sim shard with the trained refiner; labels copied unchanged (refinegan refine)."""
    input:
        model=rules.train.output.model,
        sim=f"{RESULTS}/sim/shard-{{i}}.h5",
    output:
        h5=f"{RESULTS}/refined/shard-{{i}}.h5",
    log:
        f"{LOGS}/refine/shard-{{i}}.log",
    benchmark:
        f"{BENCH}/refine/shard-{{i}}.tsv"
    conda:
        "../envs/refinegan.yaml"
    shell:
        "refinegan refine --no-progress --model {input.model} --in {input.sim}"
        " --out {output.h5} > {log} 2>&1"


rule psf_matched:
    """R's input for one sim shard: the sims through the model's PSF (and noise) matching (refinegan refine --matching-only)."""
    input:
        model=rules.train.output.model,
        sim=f"{RESULTS}/sim/shard-{{i}}.h5",
    output:
        h5=f"{RESULTS}/psf_matched/shard-{{i}}.h5",
    log:
        f"{LOGS}/refine/psf_matched-{{i}}.log",
    benchmark:
        f"{BENCH}/psf_matched/shard-{{i}}.tsv"
    conda:
        "../envs/refinegan.yaml"
    shell:
        "refinegan refine --no-progress --matching-only --model {input.model}"
        " --in {input.sim} --out {output.h5} > {log} 2>&1"
