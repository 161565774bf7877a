"""compare's calibration mode: REGAUSS on every stamp, streamed (refinegan.compare.stream)."""

import h5py
import numpy as np
from compare_helpers import make_pairs, write_set
from test_compare import FAST, G

from refinegan.compare.calibration import TARGET_PSF, set_shapes
from refinegan.compare.compare import compare
from refinegan.compare.measure import groups_of, measure
from refinegan.compare.params import CompareParams
from refinegan.compare.samples import Samples
from refinegan.compare.store import read_tree
from refinegan.compare.stream import stream_shape_sets
from refinegan.config import load_config
from refinegan.io import read_many


def _shards(tmp_path, n_gal=6, seed=1, noise=2.0):
    """Two sim shards and their refined copies (+1 % shear), one real file."""
    im, lab, psf = make_pairs(n_gal, g=G, noise=noise, profile="exp", method="auto", seed=seed,
                              e_int=0.05)
    imr, _, _ = make_pairs(n_gal, g=G, noise=noise, profile="exp", method="auto", seed=seed,
                           e_int=0.05, bias=0.01)
    half = len(im) // 2
    sim, ref = [], []
    for k, sl in enumerate((slice(0, half), slice(half, None))):
        part = {n: v[sl] for n, v in lab.items()}
        sim.append(write_set(tmp_path / f"sim{k}.h5", im[sl], part, psf, "sim"))
        ref.append(write_set(tmp_path / f"ref{k}.h5", imr[sl], part, psf, "refined",
                             parent=sim[-1]))
    imq, labq, _ = make_pairs(n_gal, g=G, noise=4.0, profile="gauss", method="auto", seed=2)
    real = write_set(tmp_path / "real.h5", imq, labq, psf, "real")
    return sim, ref, real


def test_streamed_shapes_equal_in_memory_shapes(tmp_path):
    """Known answer: chunk by chunk (7 stamps, across two shards) every stamp gets exactly the
    shape, size, S/N and status the in-memory calibration measures, target-PSF set included."""
    sim, ref, real = _shards(tmp_path)
    p = CompareParams(chunk_stamps=7)
    sets = {"sim": read_many(sim), "refined": read_many(ref), "real": read_many([real])}
    meas = {d: measure(s, p) for d, s in sets.items()}
    data = Samples(sets, meas, {d: groups_of(s) for d, s in sets.items()},
                   np.zeros(len(sets["real"]), bool), 1.0)
    mem, skipped_mem = set_shapes(data, p)
    streamed, skipped = stream_shape_sets({"sim": sim, "refined": ref, "real": [real]}, p)
    assert set(streamed) == set(mem) == {"sim", "refined", "real", TARGET_PSF}
    assert skipped == skipped_mem == {}
    for d in mem:
        for k, v in mem[d].shapes.items():
            np.testing.assert_array_equal(streamed[d].shapes[k], v, err_msg=f"{d} {k}")
        for k, v in streamed[d].labels.items():
            np.testing.assert_array_equal(v, sets[d if d != TARGET_PSF else "refined"].labels[k])


def test_calibration_mode_calibrates_every_stamp_compares_a_subsample(tmp_path):
    """mode calibration with subsample_stamps = 8 of 24: statistics on the first 8 stamps (2
    whole groups), calibration on all 24 with the same m as full mode; paired dm = 0.01 (the
    refined set is the sims drawn with 1.01 g, same noise)."""
    sim, ref, real = _shards(tmp_path)
    out_full, out_cal = tmp_path / "full" / "compare.h5", tmp_path / "cal" / "compare.h5"
    compare(load_config(None, FAST), sim, ref, real, out_full, progress=False)
    cfg = load_config(None, [*FAST, "compare.mode=calibration", "compare.subsample_stamps=8",
                             "compare.morphology_n=4", "compare.chunk_stamps=5"])
    compare(cfg, sim, ref, real, out_cal, progress=False)
    with h5py.File(out_full) as f:
        full = read_tree(f)
    with h5py.File(out_cal) as f:
        cal = read_tree(f)
        assert f.attrs["n_sim"] == 8
    assert len(cal["stats"]["sim"]["flux"]) == 8 and len(full["stats"]["sim"]["flux"]) == 24
    for d in ("sim", "refined", "real", "refined_target_psf"):
        assert cal["calibration"][d]["n_groups"] == full["calibration"][d]["n_groups"] == 6
        np.testing.assert_array_equal(cal["calibration"][d]["m"], full["calibration"][d]["m"])
    for d in ("sim", "refined", "real"):
        np.testing.assert_array_equal(cal["calibration"][d]["eps1"],
                                      full["calibration"][d]["eps1"])
    np.testing.assert_allclose(cal["calibration"]["paired"]["dm"], 0.01, atol=1e-3)


def test_worker_processes_give_the_same_shapes(tmp_path):
    """compare.calibration_processes = 2 (one file a task, spawned workers): every shape, label
    and skip reason equals the one-process result exactly."""
    sim, ref, real = _shards(tmp_path)
    files = {"sim": sim, "refined": ref, "real": [real]}
    one, skipped_one = stream_shape_sets(files, CompareParams(chunk_stamps=7))
    two, skipped_two = stream_shape_sets(files, CompareParams(chunk_stamps=7,
                                                              calibration_processes=2))
    assert set(one) == set(two) and skipped_one == skipped_two
    for d in one:
        for k in one[d].shapes:
            np.testing.assert_array_equal(two[d].shapes[k], one[d].shapes[k], err_msg=f"{d} {k}")
        for k in one[d].labels:
            np.testing.assert_array_equal(two[d].labels[k], one[d].labels[k])
