"""The Snakemake workflow on the tiny CI config (.test/config): every output exists and passes
the contract; a second run does nothing; a deleted shard reruns only what depends on it;
`--config` overrides reach the stages. About a minute on 2 cores."""

import json
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from refinegan import io
from tests.conftest import ROOT

CONFIG = ROOT / ".test" / "config" / "config.yaml"


def _snakemake(workdir, *args):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(CONFIG), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    res = _snakemake(workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    return workdir


def test_all_outputs_exist_and_follow_the_contract(finished_run):
    res = finished_run / "results" / "ci"
    for i in range(2):
        assert io.validate_file(res / "sim" / f"shard-{i}.h5")["domain"] == "sim"
        attrs = io.validate_file(res / "refined" / f"shard-{i}.h5")
        assert attrs["domain"] == "refined" and attrs["model_sha256"]
        sim = io.read_stamps(res / "sim" / f"shard-{i}.h5")
        ref = io.read_stamps(res / "refined" / f"shard-{i}.h5")
        for name, values in sim.labels.items():
            assert ref.labels[name].tobytes() == values.tobytes(), name
        # the CI config's refiner matches the sims to the target PSF and has a learned PSF
        # kernel (near the identity after 4 steps): /psf is K * (target PSF), unit sum
        assert ref.attrs["psf_kernel"].shape == (9, 9)
        assert ref.attrs["psf_match_kernel"].shape == sim.images.shape[1:]
        assert ref.psf.shape == sim.psf.shape and abs(float(ref.psf.sum()) - 1.0) < 1e-5
        real_psf = io.read_stamps(res / "real.h5").psf
        assert np.abs(ref.psf - real_psf).max() < 0.02 * real_psf.max()
        assert np.abs(sim.psf - real_psf).max() > 0.1 * real_psf.max()
    assert io.validate_file(res / "real.h5")["domain"] == "real"
    assert (res / "model" / "refiner.pt").stat().st_size > 0
    with h5py.File(res / "model" / "train_log.h5") as f:
        assert len(f) > 0
    with h5py.File(res / "compare.h5") as f:
        assert len(f.keys()) > 0
        # the mock target's paired twin (compare.twin: null = on for the mock)
        for name in ("calibration/twin/m", "calibration/transfer_paired/dm",
                     "calibration/transfer_paired/dm_err", "calibration/twin_sim_paired/dm"):
            assert name in f, name
    twin = io.read_stamps(res / "twin.h5")
    assert twin.attrs["is_twin"] and len(twin) == 48
    assert sorted(p.name for p in (res / "plots").glob("*.png"))
    summary = (res / "summary.html").read_text()
    assert "Calibration transfer" in summary and "Classifier two-sample tests" in summary
    for stage in ("simulate", "prepare_real", "train", "refine", "compare"):
        assert any((finished_run / "logs" / "ci").glob(f"{stage}*")), stage
    assert (finished_run / "benchmarks" / "ci" / "train.tsv").exists()
    assert not list(res.rglob("*.tmp"))


def _jobs(out: str) -> dict:
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_a_dry_run_writes_nothing_and_a_train_change_reruns_only_training(finished_run):
    """Parsing never writes: what a running workflow's jobs read cannot change under them."""
    res_dir = finished_run / "results" / "ci"
    before = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.suffix == ".json" else b"")
              for p in res_dir.rglob("*") if p.is_file()}
    res = _snakemake(finished_run, "--dry-run", "--config", "train={steps: 5}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.suffix == ".json" else b"")
             for p in res_dir.rglob("*") if p.is_file()}
    assert after == before
    jobs = _jobs(out)  # the train change: its config, train and everything after it
    assert jobs.get("stage_config") == 2 and jobs.get("train") == 1 and jobs.get("refine") == 2
    assert "simulate" not in jobs and "prepare_real" not in jobs, out
    cfg = json.loads((res_dir / "config" / "train.json").read_text())
    assert cfg["train"]["steps"] == 4  # the config the finished run trained with


def test_second_run_does_nothing_and_deleted_shard_reruns_only_dependents(finished_run):
    res = _snakemake(finished_run, "--dry-run")
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
    (finished_run / "results" / "ci" / "sim" / "shard-1.h5").unlink()
    res = _snakemake(finished_run, "--dry-run")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    jobs = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
    # shard 1 only, then everything downstream of it; shard 0 and the real set stay.
    assert jobs.get("simulate") == 1 and "prepare_real" not in jobs, out
    assert jobs.get("train") == 1 and jobs.get("refine") == 2 and jobs.get("compare") == 1


def test_config_override_reaches_the_stage(tmp_path):
    res = _snakemake(tmp_path, "--config", "sim={n: 16}", "--until", "simulate")
    assert res.returncode == 0, res.stderr[-3000:]
    sizes = [io.read_stamps(tmp_path / "results" / "ci" / "sim" / f"shard-{i}.h5").images.shape[0]
             for i in range(2)]
    assert sum(sizes) == 16


def test_bad_config_fails_before_any_job(tmp_path):
    res = _snakemake(tmp_path, "--config", "sim={noise: {sigma: -1}}")
    assert res.returncode != 0
    assert "sigma" in res.stdout + res.stderr
    assert not (tmp_path / "results" / "ci" / "sim").exists()


def test_readme_notebook_example_runs(finished_run, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- notebook-example -->", 1)[1].split("<!-- /notebook-example -->")[0]
    code = block.split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(finished_run)
    exec(code.replace("results/default/", "results/ci/"), {})
    out = capsys.readouterr().out
    assert "gap closed" in out and "paired dm1" in out


def test_more_shards_than_galaxy_groups_fail_when_planning(tmp_path):
    res = _snakemake(tmp_path, "-n", "--config", "shards=13")  # the CI config: 12 groups
    assert res.returncode != 0
    assert "shards = 13 exceeds the 12 galaxy groups of sim.n = 48" in res.stdout + res.stderr


def test_the_cosmos_target_config_plans_its_own_run(tmp_path):
    """`snakemake -n --configfile config/cosmos.yaml` (on top of the Snakefile's default config):
    the whole pipeline into results/cosmos/, prepare_real reading the shipped catalog, and no
    noise-only control (it is the mock's)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cosmos_real").symlink_to(ROOT / "data" / "cosmos_real")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / "cosmos.yaml"),
           "--cores", "2", "-n"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert _jobs(out) == {"stage_config": 4, "simulate": 2, "prepare_real": 1, "train": 1,
                          "refine": 2, "psf_matched": 2, "compare": 1, "summary": 1, "all": 1,
                          "total": 15}
    assert "results/cosmos/summary.html" in out and "results/default" not in out
    assert "data/cosmos_real/real_galaxy_catalog_26_extension_example.fits" in out
    assert not (tmp_path / "results").exists()


def test_duplicate_keys_in_the_config_file_fail_when_planning(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(CONFIG.read_text() + "seed: 8\n")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(cfg), "--cores", "1", "-n"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "duplicate key 'seed'" in res.stdout + res.stderr


def test_changing_a_users_cutout_file_reruns_prepare_real(tmp_path):
    """prepare_real declares the files it reads: new cutouts are not left stale."""
    from astropy.io import fits

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:40, :40] - 19.5
    cube = (rng.normal(0, 1, (24, 40, 40)) + 50 * np.exp(-(xx**2 + yy**2) / 8)).astype(np.float32)
    header = fits.Header()
    header["PIXSCALE"] = 0.2
    cut = tmp_path / "cutouts.fits"
    fits.writeto(cut, cube, header)
    over = ["--config", f"real={{source: fits, fits: {{path: '{cut}'}}}}", "train={psf_match: false}"]
    res = _snakemake(tmp_path, *over, "--until", "prepare_real")
    assert res.returncode == 0, res.stderr[-3000:]
    again = _snakemake(tmp_path, *over, "-n", "--until", "prepare_real")
    assert "prepare_real" not in _jobs(again.stdout + again.stderr)
    fits.writeto(cut, cube[:12], header, overwrite=True)  # the user replaced the cutouts
    res = _snakemake(tmp_path, *over, "-n", "--until", "prepare_real")
    assert "prepare_real" in _jobs(res.stdout + res.stderr), res.stdout[-2000:]
