"""The SLURM profile plans the expected jobs with the expected resources (dry run only)."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytest.importorskip("snakemake_executor_plugin_slurm")


def test_slurm_profile_dry_run(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--profile", str(ROOT / "workflows" / "profiles" / "slurm"),
           "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / "config.yaml"),
           "--dry-run"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts == {"stage_config": "4", "simulate": "2", "prepare_real": "1",
                      "prepare_control": "1", "prepare_twin": "1", "train": "1", "refine": "2",
                      "psf_matched": "2", "compare": "1", "summary": "1", "all": "1",
                      "total": "17"}, counts
    blocks = dict(re.findall(r"^rule (\w+):\n(?:.*\n)*?\s+resources: (.*)$", out, flags=re.M))
    assert "slurm_partition=gpu" in blocks["train"] and "gpu=1" in blocks["train"]
    assert "runtime=240" in blocks["train"]
    assert "slurm_partition=cpu" in blocks["simulate"] and "gpu=" not in blocks["simulate"]


def test_campaign_plans_on_slurm(tmp_path):
    """config/campaign.yaml over the default config: 160 simulate and 160 refine jobs of 4,096
    stamps, one compare in calibration mode, planned by the SLURM profile (dry run)."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--profile", str(ROOT / "workflows" / "profiles" / "slurm"),
           "--directory", str(tmp_path), "--configfile", str(ROOT / "config" / "config.yaml"),
           str(ROOT / "config" / "campaign.yaml"), "--dry-run"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts["simulate"] == counts["refine"] == counts["psf_matched"] == "160", counts
    assert counts["compare"] == counts["prepare_real"] == counts["train"] == "1", counts
    assert "results/campaign/compare.h5" in out and "results/default" not in out
