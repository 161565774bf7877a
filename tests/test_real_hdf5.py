"""``real.source: hdf5``: round trip from a refinegan-style file, and every bad input."""

import h5py
import numpy as np
import pytest

from refinegan.config import load_config
from refinegan.errors import ConfigError, InputDataError
from refinegan.io import read_stamps, write_stamps
from refinegan.target.prepare_real import prepare_real

SIZE = 32


def _stamps(rng, n=6, size=SIZE, sigma=3.0):
    y, x = np.mgrid[:size, :size] - size // 2
    gal = 300 * np.exp(-(x**2 + y**2) / (2 * 1.5**2))
    return (gal + rng.normal(0, sigma, (n, size, size))).astype(np.float32)


def _cfg(path, *overrides):
    return load_config(None, [f"stamp.size={SIZE}", "real.source=hdf5", f"real.hdf5.path={path}",
                              *overrides])


def _bad(tmp_path, cfg, match, exc=InputDataError):
    with pytest.raises(exc, match=match):
        prepare_real(cfg, tmp_path / "real.h5")
    assert not (tmp_path / "real.h5").exists() and not (tmp_path / "real.h5.tmp").exists()


def test_round_trip_stamp_file(rng, tmp_path):
    """A refinegan stamp file (pixel_scale as a file attribute) read back as a target."""
    images = _stamps(rng)
    write_stamps(tmp_path / "in.h5", images, {"id": np.arange(6)}, domain="sim", pixel_scale=0.2,
                 source="test", config={}, seed=1)
    out = tmp_path / "real.h5"
    prepare_real(_cfg(tmp_path / "in.h5", "real.hdf5.subtract_background=false"), out)
    s = read_stamps(out)
    np.testing.assert_array_equal(s.images, images)
    assert s.pixel_scale == 0.2 and s.attrs["n_rejected"] == 0
    np.testing.assert_allclose(s.labels["noise_sigma"], 3.0, rtol=0.15)


def test_nested_dataset_mask_and_single_stamp(rng, tmp_path):
    images = _stamps(rng, 3)
    mask = np.zeros(images.shape, np.uint8)
    mask[:, 0, 0] = 1
    images[2] = np.nan
    with h5py.File(tmp_path / "u.h5", "w") as f:
        ds = f.create_dataset("g/img", data=images)
        ds.attrs["pixel_scale"] = 0.2
        f.create_dataset("g/bad", data=mask)
        f.create_dataset("one", data=images[0])
    out = tmp_path / "real.h5"
    prepare_real(_cfg(tmp_path / "u.h5", "real.hdf5.dataset=g/img", "real.hdf5.mask_dataset=g/bad",
                      "real.hdf5.recenter=false"), out)
    s = read_stamps(out)
    assert len(s) == 2 and s.attrs["n_rejected"] == 1 and s.attrs["n_rejected_all_nan"] == 1
    assert np.all(s.mask[:, 0, 0] == 1) and s.mask.sum() == 2
    prepare_real(_cfg(tmp_path / "u.h5", "real.hdf5.dataset=one", "real.hdf5.pixel_scale=0.2"),
                 tmp_path / "one.h5")
    assert len(read_stamps(tmp_path / "one.h5")) == 1


def test_missing_file_and_unset(tmp_path):
    _bad(tmp_path, _cfg(tmp_path / "nope.h5"), r"nope.h5: no such file \(real.hdf5.path\)")
    _bad(tmp_path, load_config(None, ["real.source=hdf5"]), r"real.hdf5.path is not set", ConfigError)


def test_not_hdf5(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"garbage" * 100)
    _bad(tmp_path, _cfg(tmp_path / "x.h5"), r"x.h5: not a readable HDF5 file")


def test_dataset_missing_or_group(rng, tmp_path):
    with h5py.File(tmp_path / "u.h5", "w") as f:
        f.create_dataset("stamps", data=_stamps(rng))
        f.create_group("grp")
    _bad(tmp_path, _cfg(tmp_path / "u.h5"),
         r"u.h5: dataset 'images' \(real.hdf5.dataset\) does not exist; datasets present: \['stamps'\]")
    _bad(tmp_path, _cfg(tmp_path / "u.h5", "real.hdf5.dataset=grp"), r"u.h5: dataset 'grp' .* is a group")
    _bad(tmp_path, _cfg(tmp_path / "u.h5", "real.hdf5.dataset=stamps", "real.hdf5.mask_dataset=m"),
         r"u.h5: dataset 'm' \(real.hdf5.mask_dataset\) does not exist")


def test_bad_dtype_shape_scale_size(rng, tmp_path):
    with h5py.File(tmp_path / "u.h5", "w") as f:
        f.create_dataset("int", data=np.ones((2, SIZE, SIZE), np.int32))
        f.create_dataset("flat", data=np.ones(10, np.float32))
        f.create_dataset("noscale", data=_stamps(rng, 2))
        f.create_dataset("small", data=_stamps(rng, 2, size=16)).attrs["pixel_scale"] = 0.2
        f.create_dataset("fine", data=_stamps(rng, 2)).attrs["pixel_scale"] = 0.1
    run = lambda ds, *o: _cfg(tmp_path / "u.h5", f"real.hdf5.dataset={ds}", *o)  # noqa: E731
    _bad(tmp_path, run("int"), r"u.h5 dataset 'int': pixels are int32; expected floating-point")
    _bad(tmp_path, run("flat"), r"u.h5 dataset 'flat': data have shape \(10,\); expected a 2-D")
    _bad(tmp_path, run("noscale"), r"u.h5 dataset 'noscale': no pixel_scale attribute .* set "
         r"real.hdf5.pixel_scale")
    _bad(tmp_path, run("small"), r"u.h5 dataset 'small': stamps are 16x16 pixels .* smaller than "
         r"the working stamp size 32")
    _bad(tmp_path, run("fine"), r"u.h5 dataset 'fine': pixel scale 0.1\"/pixel differs .* "
         r"set real.hdf5.resample: true")
    _bad(tmp_path, run("fine", "real.hdf5.resample=true"), r"u.h5 dataset 'fine': stamps are "
         r"32x32 pixels at 0.1\"/pixel \(16x16 at the working scale\)")


def test_psf_dataset(rng, tmp_path):
    with h5py.File(tmp_path / "u.h5", "w") as f:
        f.create_dataset("images", data=_stamps(rng, 2)).attrs["pixel_scale"] = 0.2
        f.create_dataset("psf", data=np.full((9, 9), 2.0))
        f.create_dataset("nan_psf", data=np.full((9, 9), np.nan))
    out = tmp_path / "real.h5"
    _bad(tmp_path, _cfg(tmp_path / "u.h5", "real.hdf5.psf_dataset=psf"),
         r"dataset 'psf': the PSF has no pixel_scale attribute; set real.hdf5.psf_pixel_scale")
    prepare_real(_cfg(tmp_path / "u.h5", "real.hdf5.psf_dataset=psf",
                      "real.hdf5.psf_pixel_scale=0.2"), out)
    np.testing.assert_allclose(read_stamps(out).psf, 1 / 81, rtol=1e-6)
    out.unlink()
    _bad(tmp_path, _cfg(tmp_path / "u.h5", "real.hdf5.psf_dataset=nan_psf"),
         r"u.h5 dataset 'nan_psf': PSF must have finite pixels")


def _gauss_psf(sigma, size=25):
    y, x = np.mgrid[:size, :size] - size // 2
    p = np.exp(-0.5 * (x**2 + y**2) / sigma**2)
    return p / p.sum()


def _hsm_sigma(img):
    import galsim

    return galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(img, np.float64))).moments_sigma


def test_a_psf_cube_dataset_gives_each_kept_stamp_its_own_psf(rng, tmp_path):
    """psf_dataset (N, h, w), N = the stamps: the middle stamp (all NaN) is rejected with its PSF;
    /psf holds PSFs 1 and 3 with their HSM sizes; with augment=4 each copy's PSF is turned as
    its stamp; a cube of another length is refused, naming the file, key and both numbers."""
    images = _stamps(rng, 3)
    images[1] = np.nan
    sigmas = (1.5, 2.0, 2.5)
    cube = np.stack([3.0 * _gauss_psf(s) for s in sigmas])
    cube[2] *= 1 + 0.3 * (np.mgrid[:25, :25][1] > 12)  # lopsided: its rotations differ
    with h5py.File(tmp_path / "u.h5", "w") as f:
        f.create_dataset("images", data=images).attrs["pixel_scale"] = 0.2
        f.create_dataset("psf", data=cube).attrs["pixel_scale"] = 0.2
        f.create_dataset("psf2", data=cube[:2]).attrs["pixel_scale"] = 0.2
    out = tmp_path / "real.h5"
    prepare_real(_cfg(tmp_path / "u.h5", "real.hdf5.psf_dataset=psf"), out)
    s = read_stamps(out)
    assert len(s) == 2 and list(s.labels["index_in_file"]) == [0, 2] and s.psf.shape == (2, 25, 25)
    for got, k in zip(s.psf, (0, 2), strict=True):
        np.testing.assert_allclose(_hsm_sigma(got), _hsm_sigma(cube[k] / cube[k].sum()), rtol=1e-3)
    out.unlink()
    prepare_real(_cfg(tmp_path / "u.h5", "real.hdf5.psf_dataset=psf", "real.hdf5.augment=4"), out)
    a = read_stamps(out)
    assert a.psf.shape == (8, 25, 25)
    for g in range(2):
        for k in range(4):
            np.testing.assert_array_equal(a.psf[4 * g + k], np.rot90(s.psf[g], k))
    assert not np.allclose(a.psf[4], a.psf[5])
    out.unlink()
    _bad(tmp_path, _cfg(tmp_path / "u.h5", "real.hdf5.psf_dataset=psf2"),
         r"u.h5 dataset 'psf2' \(real.hdf5.psf_dataset\): a cube of 2 PSFs for 3 input cutouts "
         r"\(the stamps of dataset 'images'\)")
