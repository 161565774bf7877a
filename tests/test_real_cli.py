"""``refinegan prepare-real`` from the command line: the mock by default; a failing run writes nothing."""

from refinegan.cli import main
from refinegan.io import read_stamps


def test_cli_prepare_real_mock(tmp_path):
    out = tmp_path / "real.h5"
    rc = main(["prepare-real", "--no-progress", "--out", str(out), "--set", "stamp.size=32",
               "--set", "real.n=8"])
    assert rc == 0
    s = read_stamps(out)
    assert len(s) == 8 and s.attrs["domain"] == "real" and s.attrs["is_mock"]


def test_cli_prepare_real_bad_input_writes_nothing(tmp_path, caplog):
    out = tmp_path / "real.h5"
    rc = main(["prepare-real", "--no-progress", "--out", str(out), "--set", "real.source=fits",
               "--set", f"real.fits.path={tmp_path / 'missing'}"])
    assert rc == 2 and not out.exists() and not (tmp_path / "real.h5.tmp").exists()
    assert "missing: no such file or directory" in caplog.text
