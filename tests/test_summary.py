import h5py
import numpy as np
import pytest

from refinegan.compare_store import write_tree
from refinegan.errors import ContractError
from refinegan.summary import write_summary


def test_summary_reports_the_numbers_it_reads(tmp_path):
    path = tmp_path / "compare.h5"
    with h5py.File(path, "w") as f:
        write_tree(f, {
            "distances": {"names": np.array(["noise_std"]), "w1": np.array([[2.0, 0.5, 0.1]]),
                          "gap_closed_w1": np.array([0.75]),
                          **{k: np.array([1.0, 1.0, 1.0]) for k in ("energy", "power_spectrum", "acf")},
                          **{f"gap_closed_{k}": 0.0 for k in ("energy", "power_spectrum", "acf")}},
            "classifier": {"gb_all": {"auc": np.array([0.9, 0.6, 0.5]),
                                      "err": np.array([0.01, 0.02, 0.03]), "gap_closed": 0.75}},
        })
    out = write_summary(path, tmp_path / "s.html")
    text = out.read_text()
    assert "<td>noise_std</td><td>2</td><td>0.5</td><td>0.1</td><td>0.75</td>" in text
    assert "0.6 ± 0.02" in text


def test_summary_refuses_other_files(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"] = 1
    with pytest.raises(ContractError, match="no /distances group"):
        write_summary(tmp_path / "x.h5", tmp_path / "s.html")
    assert not (tmp_path / "s.html").exists()
