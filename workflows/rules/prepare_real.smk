rule prepare_real:
    """Build the target ("real") stamp file from real.source (refinegan prepare-real)."""
    input:
        cfg=stage_config("prepare_real"),
        data=target_inputs(),
    output:
        h5=f"{RESULTS}/real.h5",
    log:
        f"{LOGS}/prepare_real/prepare_real.log",
    benchmark:
        f"{BENCH}/prepare_real.tsv"
    conda:
        "../envs/refinegan.yaml"
    shell:
        "refinegan prepare-real --no-progress --config {input.cfg} --out {output.h5}"
        " > {log} 2>&1"


# The noise-only control for compare: the mock target with every effect off but its noise
# (same galaxies, same seed). A refiner that only learned the noise should do as well as this.
MOCK_EFFECTS = ["knots", "bulge", "neighbours", "cosmic_rays", "hot_pixels"]
CONTROL_SETS = " ".join(
    [f"--set real.mock.{e}.enabled=false" for e in MOCK_EFFECTS]
    + [
        "--set real.psf.optical=false",
        "--set real.psf.use_sim_psf=true",
        "--set real.source=mock",
    ]
)


rule prepare_control:
    """The noise-only control set (mock with only its noise effect; refinegan prepare-real)."""
    input:
        cfg=stage_config("prepare_real"),
    output:
        h5=f"{RESULTS}/control_noise.h5",
    log:
        f"{LOGS}/prepare_real/control_noise.log",
    benchmark:
        f"{BENCH}/prepare_control.tsv"
    conda:
        "../envs/refinegan.yaml"
    params:
        sets=CONTROL_SETS,
    shell:
        "refinegan prepare-real --no-progress --config {input.cfg} {params.sets}"
        " --out {output.h5} > {log} 2>&1"


# The paired twin target for compare only (training keeps the independent mock): the mock's
# effects, target PSF and noise on the sims' own galaxies (docs/compare.md), when compare.twin.
rule prepare_twin:
    """The paired twin target: the mock drawn on the sims' galaxies (refinegan prepare-twin)."""
    input:
        cfg=stage_config("prepare_real"),
    output:
        h5=f"{RESULTS}/twin.h5",
    log:
        f"{LOGS}/prepare_real/twin.log",
    benchmark:
        f"{BENCH}/prepare_twin.tsv"
    conda:
        "../envs/refinegan.yaml"
    shell:
        "refinegan prepare-twin --no-progress --config {input.cfg} --out {output.h5}"
        " > {log} 2>&1"
