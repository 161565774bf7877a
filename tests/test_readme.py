"""The README's Python example runs as written (from a copy of the repo's config)."""

import shutil

import numpy as np

from tests.conftest import ROOT


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- python-example -->", 1)[1].split("<!-- /python-example -->")[0]
    code = block.split("```python", 1)[1].split("```", 1)[0]
    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(code.replace("sim.n=256", "sim.n=16"), names)  # 16 stamps: the same code, faster
    assert names["first"].shape == (16, 48, 48) and np.isfinite(names["first"]).all()
    assert names["g1"].shape == (16,) and names["cfg"].seed == 20261125
