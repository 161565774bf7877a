"""The refinegan command: stages run from the shell, errors exit 2 with one clear line,
and a killed run leaves no file at the final path."""

import signal
import subprocess
import sys
import time

import pytest

from refinegan import io


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "refinegan", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def test_simulate_from_the_shell_with_overrides(tmp_path):
    out = tmp_path / "s.h5"
    res = _cli("simulate", "--no-progress", "--out", str(out), "--set", "sim.n=8",
               "--set", "stamp.size=32", "--shard", "1", "--nshards", "2")
    assert res.returncode == 0, res.stderr
    s = io.read_stamps(out)
    assert s.images.shape == (4, 32, 32) and list(s.labels["pair_id"]) == [1] * 4


def test_bad_config_exits_2_with_the_key(tmp_path):
    res = _cli("simulate", "--out", str(tmp_path / "x.h5"), "--set", "sim.noise.sigma=-3")
    assert res.returncode == 2
    assert "sim.noise.sigma" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.h5").exists()


def test_killed_run_leaves_no_complete_looking_file(tmp_path):
    out = tmp_path / "big.h5"
    proc = subprocess.Popen([sys.executable, "-m", "refinegan", "simulate", "--no-progress",
                             "--out", str(out), "--set", "sim.n=400000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(tmp_path.glob("big.h5.*.tmp")) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob("big.h5.*.tmp"))  # it was writing (to a temporary name)...
    assert not out.exists()  # ...and nothing looks complete


def test_a_config_that_is_a_directory_is_one_line_exit_2(tmp_path):
    res = _cli("simulate", "--config", str(tmp_path), "--out", str(tmp_path / "x.h5"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"config file {tmp_path} is not a file" in res.stderr


def test_file_system_errors_are_one_line_and_traceback_only_with_v(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a directory should be")
    args = ("simulate", "--no-progress", "--out", str(blocker / "x.h5"), "--set", "sim.n=4",
            "--set", "stamp.size=16")
    res = _cli(*args)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert str(blocker) in res.stderr and "-v for the traceback" in res.stderr
    assert "Traceback" in _cli(*args, "-v").stderr


def test_duplicate_yaml_keys_are_refused_with_the_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sim:\n  n: 8\nseed: 3\nsim:\n  n: 16\n")
    res = _cli("simulate", "--config", str(cfg), "--out", str(tmp_path / "x.h5"))
    assert res.returncode == 2 and "duplicate key 'sim' at line 4 (first at line 1)" in res.stderr


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    out = tmp_path / "big.h5"
    # SIGINT back to its default in the child: a test run started in the background (``cmd &``
    # in a script) inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "refinegan", "simulate", "--no-progress",
                             "--out", str(out), "--set", "sim.n=400000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:  # generous waits: a loaded machine (CI beside other jobs) starts and stops slowly
        deadline = time.time() + 120
        while not list(tmp_path.glob("big.h5.*.tmp")) and time.time() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:  # never leave the child running into the next test
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))  # the writer cleaned up


def _limit_file_size(limit_bytes):
    import resource

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def test_a_disk_that_fills_while_writing_is_one_line_no_crash_nothing_left(tmp_path):
    """A file size limit stands in for a full disk: HDF5 fails mid-write (it used to segfault
    and leave its temporary file)."""
    proc = subprocess.run([sys.executable, "-m", "refinegan", "simulate", "--no-progress",
                           "--out", str(tmp_path / "s.h5"), "--set", "sim.n=256"],
                          capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_file_size(1_000_000))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "writing failed: File too large; the partial file was removed" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil as shutil_mod

    from refinegan import io
    from refinegan.errors import OutputWriteError

    monkeypatch.setattr(shutil_mod, "disk_usage", lambda p: shutil_mod._ntuple_diskusage(1, 1, 1000))
    with pytest.raises(OutputWriteError, match="not enough disk space for 64 stamps"):
        io.StampWriter(tmp_path / "s.h5", 64, (48, 48), domain="real", pixel_scale=0.2,
                       source="t", config={}, seed=1)
    assert not list(tmp_path.iterdir())
