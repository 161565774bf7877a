"""The HDF5 stamp contract: round trip, atomic writes, and one clear error per defect."""

import json
import tracemalloc

import h5py
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from refinegan import io
from refinegan.errors import ContractError


def _labels(n):
    lab = {name: np.linspace(0, 1, n) for name in io.SIM_LABELS}
    lab["id"] = np.arange(n, dtype=np.int64)
    return lab


def _write(path, n=6, shape=(8, 8), **kw):
    images = np.arange(n * shape[0] * shape[1], dtype=np.float32).reshape(n, *shape)
    args = dict(domain="sim", pixel_scale=0.2, source="test", config={"a": 1}, seed=3,
                psf=np.ones((5, 5)))
    args.update(kw)
    io.write_stamps(path, images, _labels(n), **args)
    return images


def test_round_trip_and_attributes(tmp_path):
    path = tmp_path / "s.h5"
    images = _write(path, mask=np.zeros((6, 8, 8), np.uint8))
    s = io.read_stamps(path)
    assert_array_equal(s.images, images)
    assert_array_equal(s.labels["id"], np.arange(6))
    assert s.attrs["config"] == {"a": 1} and s.attrs["seed"] == 3
    assert set(s.attrs["versions"]) >= {"refinegan", "galsim", "torch", "numpy", "h5py"}
    assert s.attrs["created"].endswith("+00:00")
    np.testing.assert_allclose(s.psf.sum(), 1.0, rtol=1e-6)
    with h5py.File(path) as f:
        assert f["images"].chunks[0] == 6 and f["images"].attrs["units"] == "counts"
        assert f["labels/hlr"].attrs["units"] == "arcsec"
    with io.open_stamps(path) as sf:
        assert_array_equal(sf.images[2:4], images[2:4])
        assert sf.stamp_shape == (8, 8) and sf.n == 6 and sf.domain == "sim"


def test_slice_reads_only_the_slice(tmp_path):
    path = tmp_path / "big.h5"
    n, size = 2048, 64  # 32 MiB of stamps
    with io.StampWriter(path, n, (size, size), domain="real", pixel_scale=0.2, source="t",
                        config={}, seed=1) as w:
        for start in range(0, n, 256):
            w.write(np.full((256, size, size), start, np.float32), {"k": np.arange(256)})
    with io.open_stamps(path) as sf:
        tracemalloc.start()
        block = sf.images[1000:1010]
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert block.shape == (10, size, size) and block[0, 0, 0] == 768
    assert peak < 2 * 10 * size * size * 4 + 100_000  # ~ the slice, not the 32 MiB file


def test_interrupted_write_leaves_no_file(tmp_path):
    path = tmp_path / "part.h5"
    with pytest.raises(RuntimeError, match="boom"), io.StampWriter(
        path, 4, (8, 8), domain="sim", pixel_scale=0.2, source="t", config={}, seed=1
    ) as w:
        w.write(np.zeros((2, 8, 8), np.float32), _labels(2))
        raise RuntimeError("boom")
    assert not path.exists() and not (tmp_path / "part.h5.tmp").exists()


def test_incomplete_write_refused(tmp_path):
    path = tmp_path / "short.h5"
    w = io.StampWriter(path, 4, (8, 8), domain="sim", pixel_scale=0.2, source="t", config={}, seed=1)
    w.write(np.zeros((2, 8, 8), np.float32), _labels(2))
    with pytest.raises(ContractError, match="only 2 of 4 stamps were written"):
        w.close()
    assert not path.exists()


def _corrupt(path, how):
    with h5py.File(path, "r+") as f:
        if how == "no_images":
            del f["images"]
        elif how == "dtype":
            data = f["images"][()]
            del f["images"]
            f["images"] = data.astype(np.float64)
        elif how == "rank":
            data = f["images"][()]
            del f["images"]
            f["images"] = data.reshape(6, 64)
        elif how == "label_length":
            del f["labels/flux"]
            f["labels/flux"] = np.zeros(5)
        elif how == "attr":
            del f.attrs["seed"]
        elif how == "domain":
            f.attrs["domain"] = "simulated"
        elif how == "label_missing":
            del f["labels/g1"]
        elif how == "schema":
            f.attrs["schema_version"] = 99
        elif how == "psf":
            del f["psf"]
            f["psf"] = np.ones((3, 5, 5), np.float32)


@pytest.mark.parametrize(
    "how, message",
    [
        ("no_images", "missing dataset /images"),
        ("dtype", "/images must be float32, got float64"),
        ("rank", r"/images must have rank 3 \(N, H, W\), got shape \(6, 64\)"),
        ("label_length", "label 'flux' has length 5, /images has N=6"),
        ("attr", "missing file attribute 'seed'"),
        ("domain", "unknown domain 'simulated'"),
        ("label_missing", r"missing label\(s\) \['g1'\] for a sim set"),
        ("schema", "schema_version is 99"),
        ("psf", r"/psf must have shape \(h, w\) or \(N=6, h, w\)"),
    ],
)
def test_malformed_files_rejected(tmp_path, how, message):
    path = tmp_path / "bad.h5"
    _write(path)
    _corrupt(path, how)
    with pytest.raises(ContractError, match=message) as err:
        io.validate_file(path)
    assert str(path) in str(err.value)


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(ContractError, match="no such stamp file"):
        io.read_stamps(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ContractError, match="not a readable HDF5 file"):
        io.read_stamps(junk)


def test_refined_needs_parent_and_checksum(tmp_path):
    path = tmp_path / "r.h5"
    with pytest.raises(ContractError, match="refined file is missing attribute 'parent'"):
        _write(path, domain="refined")
        io.validate_file(path)
    _write(path, domain="refined", extra_attrs={"parent": "sim.h5", "model_sha256": "0" * 64})
    assert io.validate_file(path)["parent"] == "sim.h5"


def test_writer_rejects_bad_blocks(tmp_path):
    with pytest.raises(ContractError, match="domain must be one of"):
        io.StampWriter(tmp_path / "x.h5", 2, (8, 8), domain="fake", pixel_scale=0.2,
                       source="t", config={}, seed=1)
    with io.StampWriter(tmp_path / "y.h5", 2, (8, 8), domain="real", pixel_scale=0.2,
                        source="t", config={}, seed=1) as w:
        with pytest.raises(ContractError, match=r"stamps must be \(8, 8\), got \(9, 9\)"):
            w.write(np.zeros((2, 9, 9), np.float32), {})
        with pytest.raises(ContractError, match=r"label 'a' must have shape \(2,\)"):
            w.write(np.zeros((2, 8, 8), np.float32), {"a": np.zeros(3)})
        w.write(np.zeros((2, 8, 8), np.float32), {"a": np.zeros(2)})
    assert not (tmp_path / "x.h5.tmp").exists()


def test_read_many_checks_consistency(tmp_path):
    _write(tmp_path / "a.h5")
    _write(tmp_path / "b.h5", pixel_scale=0.3)
    with pytest.raises(ContractError, match="pixel_scale 0.3 differs"):
        io.read_many([tmp_path / "a.h5", tmp_path / "b.h5"])
    _write(tmp_path / "c.h5")
    both = io.read_many([tmp_path / "a.h5", tmp_path / "c.h5"])
    assert len(both) == 12 and both.psf.shape == (5, 5)


def test_config_attribute_is_json(tmp_path):
    path = tmp_path / "j.h5"
    _write(path, config={"sim": {"n": 4}})
    with h5py.File(path) as f:
        assert json.loads(f.attrs["config"]) == {"sim": {"n": 4}}


def test_empty_stamp_file(tmp_path):
    path = tmp_path / "empty.h5"
    io.write_stamps(path, np.zeros((0, 8, 8), np.float32), {"id": np.zeros(0, np.int64)},
                    domain="real", pixel_scale=0.2, source="t", config={}, seed=1,
                    mask=np.zeros((0, 8, 8), np.uint8))
    with io.open_stamps(path) as sf:
        assert sf.n == 0 and sf.stamp_shape == (8, 8)


def test_an_existing_directory_as_output_is_refused_and_nothing_is_left(tmp_path):
    out = tmp_path / "outdir"
    out.mkdir()
    with pytest.raises(ContractError, match="outdir is a directory"):
        io.write_stamps(out, np.zeros((2, 8, 8), np.float32), {}, domain="real", pixel_scale=0.2,
                        source="t", config={}, seed=1)
    assert list(tmp_path.iterdir()) == [out] and not list(out.iterdir())


def test_a_failed_write_removes_its_temporary_file(tmp_path):
    out = tmp_path / "s.h5"
    with pytest.raises(ContractError, match="only 1 of 2 stamps"), io.StampWriter(
            out, 2, (8, 8), domain="real", pixel_scale=0.2, source="t", config={}, seed=1) as w:
        w.write(np.zeros((1, 8, 8), np.float32), {})
        w.close()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused_at_write(tmp_path, bad):
    images = np.zeros((3, 8, 8), np.float32)
    images[2, 4, 4] = bad
    with pytest.raises(ContractError, match=r"x.h5: stamp 2 has NaN or inf pixels"):
        io.write_stamps(tmp_path / "x.h5", images, {}, domain="real", pixel_scale=0.2, source="t",
                        config={}, seed=1)
    assert not list(tmp_path.iterdir())


def test_non_finite_labels_are_refused_where_the_contract_forbids_them(tmp_path):
    images = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(ContractError, match=r"label 'noise_sigma' of stamp 1 is nan; it must be finite"):
        io.write_stamps(tmp_path / "x.h5", images, {"noise_sigma": np.array([1.0, np.nan])},
                        domain="real", pixel_scale=0.2, source="t", config={}, seed=1)
    # sersic_n of a bulge + disk galaxy and the snr of a noiseless stamp may be NaN / inf
    io.write_stamps(tmp_path / "ok.h5", images, {"sersic_n": np.array([np.nan, 1.0]),
                                                 "snr": np.array([np.inf, 3.0])},
                    domain="real", pixel_scale=0.2, source="t", config={}, seed=1)
    io.write_stamps(tmp_path / "g.h5", images, {"g1": np.array([0.02, 0.02])}, domain="real",
                    pixel_scale=0.2, source="t", config={}, seed=1)
    with h5py.File(tmp_path / "g.h5", "a") as f:  # damaged afterwards: the reader refuses it
        f["labels/g1"][1] = np.inf
    with pytest.raises(ContractError, match=r"g.h5: label 'g1' of stamp 1 is inf; it must be finite"):
        io.validate_file(tmp_path / "g.h5")
