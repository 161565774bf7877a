"""The refinegan command: stages run from the shell, errors exit 2 with one clear line,
and a killed run leaves no file at the final path."""

import signal
import subprocess
import sys
import time

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
