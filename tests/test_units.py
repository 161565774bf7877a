"""Pixel units: ``/images`` carries the unit of its stamps (FITS BUNIT, an HDF5 ``units``
attribute, counts for sims and the mock), ``flux_scale`` converts a user source into the sims'
counts exactly, and compare refuses sets whose units it cannot convert."""

import h5py
import numpy as np
import pytest
from astropy.io import fits
from compare_helpers import make_pairs, write_set

import refinegan.compare.compare as compare_stage
from refinegan.config import load_config
from refinegan.errors import ContractError, InputDataError
from refinegan.io import read_many, read_stamps, write_stamps
from refinegan.sim.simulate import simulate
from refinegan.target.prepare_real import prepare_real
from refinegan.units import normalise_unit, same_units

SIZE = 32  # the compare helpers' stamp size
SCALE = 0.2  # arcsec / pixel, the compare helpers' scale


@pytest.mark.parametrize("raw, expected", [
    ("electron/s", "electron / s"), ("ELECTRONS/S", "electron / s"), ("e-/s", "electron / s"),
    ("electron s-1", "electron / s"), ("counts", "counts"), ("COUNTS", "counts"),
    ("ct", "counts"), ("count", "counts"), ("ct/s", "ct / s"), ("DN", "DN"),
    ("MJy/sr", "MJy / sr"), ("normalised", "normalised"), ("  normalised ", "normalised")])
def test_normalise_unit(raw, expected):
    assert normalise_unit(raw) == expected


@pytest.mark.parametrize("a, b, same", [
    ("counts", "counts", True), ("counts", "ct", True), ("electron / s", "electron s-1", True),
    ("normalised", "normalised", True), ("counts", "electron / s", False),
    ("counts", "DN", False), ("ct", "2 ct", False), ("counts", "normalised", False)])
def test_same_units(a, b, same):
    assert same_units(a, b) is same and same_units(b, a) is same


def _pixels(rng, n=8):
    """Integer-valued cutouts (a Gaussian galaxy + background + noise): every product by 2.5 and
    every median of them is exact in float64, so the scaled stamps are exactly 2.5 x the others."""
    y, x = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    gal = 400 * np.exp(-(x**2 + y**2) / (2 * 2.0**2))
    return np.round(gal + 7 + rng.normal(0, 4, (n, SIZE, SIZE))).astype(np.float32)


def _fits_real(tmp_path, cube, bunit, *overrides, name="real.h5"):
    header = fits.Header()
    header["CDELT1"], header["CDELT2"] = -SCALE / 3600, SCALE / 3600
    if bunit is not None:
        header["BUNIT"] = bunit
    fits.writeto(tmp_path / "cube.fits", cube, header, overwrite=True)
    cfg = load_config(None, [f"stamp.size={SIZE}", "real.source=fits",
                             f"real.fits.path={tmp_path / 'cube.fits'}", *overrides])
    return prepare_real(cfg, tmp_path / name)


def _hdf5_real(tmp_path, cube, unit, *overrides, name="real.h5"):
    with h5py.File(tmp_path / "in.h5", "w") as f:
        ds = f.create_dataset("stamps", data=cube)
        ds.attrs["pixel_scale"] = SCALE
        if unit is not None:
            ds.attrs["units"] = unit
    cfg = load_config(None, [f"stamp.size={SIZE}", "real.source=hdf5",
                             f"real.hdf5.path={tmp_path / 'in.h5'}", "real.hdf5.dataset=stamps",
                             *overrides])
    return prepare_real(cfg, tmp_path / name)


def _image_attrs(path):
    with h5py.File(path) as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f["images"].attrs.items()}


@pytest.fixture
def sim_pair(tmp_path):
    """A sim file and its 'refined' copy (32 x 32 at 0.2"/pixel, counts)."""
    im, lab, psf = make_pairs(2, noise=2.0)
    sim = write_set(tmp_path / "sim.h5", im, lab, psf, "sim")
    return sim, write_set(tmp_path / "refined.h5", im, lab, psf, "refined", parent=sim)


class _Measured(Exception):
    """Raised in place of compare's first measurement: the unit check was passed."""


def _compare(tmp_path, sim_pair, real, monkeypatch):
    def stop(*args, **kwargs):
        raise _Measured

    monkeypatch.setattr(compare_stage, "measure", stop)
    sim, ref = sim_pair
    compare_stage.compare(load_config(None, []), [sim], [ref], real, tmp_path / "c.h5",
                          progress=False)


@pytest.mark.parametrize("source", ["fits", "hdf5"])
def test_declared_unit_carried_and_refused_by_compare(rng, tmp_path, sim_pair, monkeypatch,
                                                      source):
    cube = _pixels(rng)
    write = _fits_real if source == "fits" else _hdf5_real
    real = write(tmp_path, cube, "electron/s")
    s = read_stamps(real)
    attrs = _image_attrs(real)
    assert s.units == "electron / s" and attrs["units"] == "electron / s"
    assert attrs["input_units"] == "electron/s" and attrs["flux_scale"] == 1.0
    with h5py.File(real) as f:  # the labels in image units follow the images
        assert f["labels/noise_sigma"].attrs["units"] == "electron / s"
        assert f["labels/background"].attrs["units"] == "electron / s"
    key = f"real.{source}.flux_scale"
    with pytest.raises(ContractError, match=rf"(?s){real}.*'electron / s'.*{tmp_path / 'sim.h5'}"
                                            rf".*'counts'.*{key}"):
        _compare(tmp_path, sim_pair, real, monkeypatch)


@pytest.mark.parametrize("source", ["fits", "hdf5"])
def test_flux_scale_converts_exactly_into_counts(rng, tmp_path, sim_pair, monkeypatch, source):
    cube = _pixels(rng)
    write = _fits_real if source == "fits" else _hdf5_real
    one = read_stamps(write(tmp_path, cube, "electron/s", name="one.h5"))
    real = write(tmp_path, cube, "electron/s", f"real.{source}.flux_scale=2.5", name="scaled.h5")
    scaled = read_stamps(real)
    assert len(one) == len(cube) and scaled.images.dtype == np.float32
    np.testing.assert_array_equal(scaled.images, one.images * np.float32(2.5))
    np.testing.assert_array_equal(scaled.labels["background"], 2.5 * one.labels["background"])
    np.testing.assert_allclose(scaled.labels["noise_sigma"], 2.5 * one.labels["noise_sigma"],
                               rtol=1e-12)
    np.testing.assert_array_equal(scaled.mask, one.mask)
    attrs = _image_attrs(real)
    assert scaled.units == "counts" and attrs["units"] == "counts"
    assert attrs["input_units"] == "electron/s" and attrs["flux_scale"] == 2.5
    with pytest.raises(_Measured):  # past the unit check
        _compare(tmp_path, sim_pair, real, monkeypatch)


@pytest.mark.parametrize("source", ["fits", "hdf5"])
def test_flux_scale_one_says_already_in_the_sims_counts(rng, tmp_path, sim_pair, monkeypatch,
                                                        source):
    """flux_scale = 1 (not the default null): data declared in electron/s that the user knows
    to be in the sims' units: pixels unchanged bit for bit, /images counts, compare accepts."""
    cube = _pixels(rng)
    write = _fits_real if source == "fits" else _hdf5_real
    plain = read_stamps(write(tmp_path, cube, "electron/s", name="plain.h5"))
    real = write(tmp_path, cube, "electron/s", f"real.{source}.flux_scale=1", name="one.h5")
    one = read_stamps(real)
    np.testing.assert_array_equal(one.images, plain.images)
    attrs = _image_attrs(real)
    assert one.units == "counts" and plain.units == "electron / s"
    assert attrs["input_units"] == "electron/s" and attrs["flux_scale"] == 1.0
    with pytest.raises(_Measured):  # past the unit check
        _compare(tmp_path, sim_pair, real, monkeypatch)


@pytest.mark.parametrize("source", ["fits", "hdf5"])
@pytest.mark.parametrize("declared", [None, "COUNTS", "ct"])
def test_counts_or_no_unit_is_counts_and_accepted(rng, tmp_path, sim_pair, monkeypatch, source,
                                                  declared, caplog):
    write = _fits_real if source == "fits" else _hdf5_real
    real = write(tmp_path, _pixels(rng, 4), declared)
    attrs = _image_attrs(real)
    assert read_stamps(real).units == "counts" and attrs["input_units"] == (declared or "")
    assert ("declares no pixel unit" in caplog.text) is (declared is None)
    with pytest.raises(_Measured):
        _compare(tmp_path, sim_pair, real, monkeypatch)


def test_unparseable_unit_kept_as_written_and_refused(rng, tmp_path, sim_pair, monkeypatch):
    real = _fits_real(tmp_path, _pixels(rng, 4), "normalised")
    assert read_stamps(real).units == "normalised"
    with pytest.raises(ContractError, match="'normalised'.*real.fits.flux_scale"):
        _compare(tmp_path, sim_pair, real, monkeypatch)


def test_fits_files_in_different_units_refused(rng, tmp_path):
    header = fits.Header()
    header["PIXSCALE"] = SCALE
    for i, bunit in enumerate(["electron/s", "electron s-1", "DN"]):
        header["BUNIT"] = bunit
        fits.writeto(tmp_path / f"g{i}.fits", _pixels(rng, 1)[0], header)
    cfg = load_config(None, [f"stamp.size={SIZE}", "real.source=fits", f"real.fits.path={tmp_path}"])
    with pytest.raises(InputDataError, match=r"g2.fits HDU 0: BUNIT 'DN' differs from "
                                             r"'electron/s' of .*g0.fits"):
        prepare_real(cfg, tmp_path / "real.h5")
    assert not (tmp_path / "real.h5").exists()


def test_sim_and_mock_say_counts_and_nothing_more(tmp_path):
    """The default sources write exactly the one /images attribute they always wrote."""
    cfg = load_config(None, ["stamp.size=32", "sim.n=8", "real.n=8"])
    for path in (simulate(cfg, tmp_path / "sim.h5"), prepare_real(cfg, tmp_path / "real.h5")):
        assert _image_attrs(path) == {"units": "counts"}
        with h5py.File(path) as f:
            assert f["labels/flux"].attrs["units"] == "counts"
            assert f["labels/noise_sigma"].attrs["units"] == "counts"


def test_read_many_refuses_shards_in_different_units(tmp_path):
    images = np.zeros((2, 8, 8), np.float32)
    for name, units in (("a.h5", "counts"), ("b.h5", "electron / s")):
        write_stamps(tmp_path / name, images, {"id": np.arange(2)}, domain="real",
                     pixel_scale=SCALE, source="test", config={}, seed=1,
                     image_attrs={"units": units})
    assert read_many([tmp_path / "a.h5", tmp_path / "a.h5"]).units == "counts"
    with pytest.raises(ContractError, match=r"b.h5: /images units electron / s differs"):
        read_many([tmp_path / "a.h5", tmp_path / "b.h5"])
