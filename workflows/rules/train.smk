rule train:
    """Train the SimGAN refiner on all sim shards and the real set (refinegan train).

    Uses the GPU when there is one (train.device: auto). Declares a `gpu` resource so a cluster
    profile can request one (workflows/profiles/slurm).
    """
    input:
        sim=sim_shards(),
        real=rules.prepare_real.output.h5,
        cfg=stage_config("train"),
    output:
        model=f"{RESULTS}/model/refiner.pt",
        log_h5=f"{RESULTS}/model/train_log.h5",
        samples=report(
            directory(f"{RESULTS}/model/samples"),
            patterns=["{name}.png"],
            caption="../report/training.rst",
            category="Training",
        ),
    log:
        f"{LOGS}/train/train.log",
    benchmark:
        f"{BENCH}/train.tsv"
    conda:
        "../envs/refinegan.yaml"
    threads: 8
    resources:
        gpu=1 if CFG["train"]["device"] == "cuda" else 0,
    params:
        outdir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "refinegan train --no-progress --config {input.cfg} --sim {input.sim}"
        " --real {input.real} --out {params.outdir} --resume-if-matches > {log} 2>&1"
