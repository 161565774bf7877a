"""One atomic-write helper (refinegan.atomic): complete or absent, never a partial final file."""

import pytest

from refinegan.atomic import TMP_SUFFIX, atomic_path, temporary_path


def test_a_finished_write_lands_under_the_final_name_only(tmp_path):
    out = tmp_path / "sub" / "out.txt"
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.endswith(TMP_SUFFIX)
        tmp.write_text("done")
        assert not out.exists()
    assert out.read_text() == "done"
    assert [p.name for p in out.parent.iterdir()] == ["out.txt"]


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_writer_that_wrote_nothing_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x.h5"):
        pass
    assert not list(tmp_path.iterdir())


def test_two_writers_never_share_a_temporary_name(tmp_path):
    names = {temporary_path(tmp_path / "same.h5") for _ in range(200)}
    assert len(names) == 200
