"""Survey mask bits and noise planes of user cutouts (refinegan.target.planes, issue 16 item 8),
through ``real.source: fits`` and ``hdf5``: an HSC-like mask whose DETECTED bit covers the galaxy
keeps the stamp when only BAD is selected, and masks exactly the BAD pixels; a variance, rms or
weight plane sets noise_sigma to the plane's sky sigma; bad planes are refused by file and key."""

import h5py
import numpy as np
import pytest
from astropy.io import fits

from refinegan.config import load_config
from refinegan.errors import ConfigError, InputDataError
from refinegan.io import read_stamps
from refinegan.target.planes import resolve_mask_bits, sigma_from_plane
from refinegan.target.prepare_real import prepare_real

SIZE, SCALE, SIGMA = 32, 0.2, 3.0
BAD, DETECTED = 0, 5  # HSC / LSST afw bit numbers (the file's MP_* cards say so)
BAD_PIXELS = ((3, 4), (20, 9), (28, 30))


def _scene(n=3, seed=0):
    """Galaxies, an int32 HSC-like mask (DETECTED on 41 % of each stamp, BAD on 3 pixels) and
    its header; the DETECTED footprint alone is above max_bad_fraction 0.25."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    gal = 400 * np.exp(-(x**2 + y**2) / (2 * 2.0**2))
    images = (gal + 5.0 + rng.normal(0, SIGMA, (n, SIZE, SIZE))).astype(np.float32)
    mask = np.zeros((n, SIZE, SIZE), np.int32)
    mask[:, np.hypot(y, x) < 11.5] |= 1 << DETECTED
    for yy, xx in BAD_PIXELS:
        mask[:, yy, xx] |= 1 << BAD
    head = fits.Header()
    head["MP_BAD"], head["MP_SAT"], head["HIERARCH MP_DETECTED"] = BAD, 1, DETECTED  # as afw
    return images, mask, head, gal


def _fits(tmp_path, images, mask, head, noise=None):
    hdus = [fits.PrimaryHDU(images, fits.Header({"PIXSCALE": SCALE})),
            fits.ImageHDU(mask, head, name="MASK")]
    if noise is not None:
        hdus.append(fits.ImageHDU(noise, name="VARIANCE"))
    fits.HDUList(hdus).writeto(tmp_path / "hsc.fits")
    return tmp_path / "hsc.fits"


MASK_KEY = {"fits": "mask_hdu=MASK", "hdf5": "mask_dataset=mask"}


def _run(tmp_path, source, path, *overrides):
    """prepare_real of ``path`` as ``real.source`` fits or hdf5, with its mask, not recentred."""
    cfg = load_config(None, [f"stamp.size={SIZE}", f"real.source={source}",
                             f"real.{source}.path={path}", f"real.{source}.{MASK_KEY[source]}",
                             f"real.{source}.recenter=false", *overrides])
    prepare_real(cfg, tmp_path / "real.h5")
    return read_stamps(tmp_path / "real.h5")


def test_any_nonzero_bit_is_bad_by_default(tmp_path):
    """Today's behaviour, unchanged: DETECTED rejects every stamp (41 % > 25 % bad)."""
    images, mask, head, _ = _scene()
    with pytest.raises(InputDataError, match=r"3 bad fraction"):
        _run(tmp_path, "fits", _fits(tmp_path, images, mask, head))


@pytest.mark.parametrize("bits", ["1", "[0]", "[BAD]", "[bad, SAT]"])
def test_mask_bits_select_bad_only_and_keep_the_stamp(tmp_path, bits):
    images, mask, head, _ = _scene()
    s = _run(tmp_path, "fits", _fits(tmp_path, images, mask, head), f"real.fits.mask_bits={bits}")
    assert len(s) == 3 and s.attrs["n_rejected"] == 0
    expected = np.zeros((SIZE, SIZE), np.uint8)
    for yy, xx in BAD_PIXELS:
        expected[yy, xx] = 1
    np.testing.assert_array_equal(s.mask, np.broadcast_to(expected, s.mask.shape))  # only BAD
    assert np.all(s.images[:, 3, 4] == 0)


def test_mask_bits_errors_name_the_file_and_key(tmp_path):
    images, mask, head, _ = _scene()
    path = _fits(tmp_path, images, mask, head)
    with pytest.raises(InputDataError, match=r"hsc.fits HDU 'MASK': real.fits.mask_bits names the "
                       r"mask plane 'CR' but the mask has no MP_CR .*MP_BAD, MP_DETECTED, MP_SAT"):
        _run(tmp_path, "fits", path, "real.fits.mask_bits=[BAD, CR]")
    with pytest.raises(ConfigError, match=r"real.fits.mask_bits is set but real.fits.mask_hdu"):
        _run(tmp_path, "fits", path, "real.fits.mask_bits=1", "real.fits.mask_hdu=null")
    fits.HDUList([fits.PrimaryHDU(images, fits.Header({"PIXSCALE": SCALE})),
                  fits.ImageHDU(mask + 0.5, name="MASK")]).writeto(tmp_path / "f.fits")
    with pytest.raises(InputDataError, match=r"f.fits HDU 'MASK': real.fits.mask_bits selects mask "
                       r"bits but the mask holds non-integer values"):
        _run(tmp_path, "fits", tmp_path / "f.fits", "real.fits.mask_bits=1")
    assert not (tmp_path / "real.h5").exists()


def test_resolve_mask_bits():
    cards = {"MP_BAD": 0, "MP_NO_DATA": 8}
    assert resolve_mask_bits(None, cards, "f", "k") is None
    assert resolve_mask_bits(0b101, None, "f", "k") == 5
    assert resolve_mask_bits(("BAD", 3, "no_data"), cards, "f", "k") == 1 | 8 | 256


@pytest.mark.parametrize("kind,plane", [("variance", SIGMA**2), ("rms", SIGMA),
                                        ("weight", 1 / SIGMA**2)])
def test_a_noise_plane_sets_noise_sigma(tmp_path, kind, plane):
    """The sky's sigma exactly, though the plane (like HSC's variance) adds the galaxy's photon
    noise on the source pixels."""
    images, mask, head, gal = _scene()
    var = SIGMA**2 + np.where(gal > 0.5, gal / 2.0, 0.0)  # gain 2: source noise where gal > 0.5
    values = {"variance": var, "rms": np.sqrt(var), "weight": 1 / var}[kind]
    assert values.flat[0] == pytest.approx(plane)
    noise = np.broadcast_to(values, images.shape).astype(np.float32)
    path = _fits(tmp_path, images, mask, head, noise)
    s = _run(tmp_path, "fits", path, "real.fits.mask_bits=[BAD]", "real.fits.noise_hdu=VARIANCE",
                  f"real.fits.noise_kind={kind}")
    np.testing.assert_allclose(s.labels["noise_sigma"], SIGMA, rtol=1e-6)  # float32 plane
    scaled = _run(tmp_path, "fits", path, "real.fits.mask_bits=[BAD]", "real.fits.noise_hdu=VARIANCE",
                       f"real.fits.noise_kind={kind}", "real.fits.flux_scale=2.5")
    np.testing.assert_allclose(scaled.labels["noise_sigma"], 2.5 * SIGMA, rtol=1e-6)
    est = _run(tmp_path, "fits", path, "real.fits.mask_bits=[BAD]")  # without it: the estimate
    assert np.all(est.labels["noise_sigma"] != s.labels["noise_sigma"])


def test_noise_plane_zero_weight_is_bad_and_wrong_planes_are_refused(tmp_path):
    images, mask, head, _ = _scene()
    weight = np.full(images.shape, 1 / SIGMA**2, np.float32)
    weight[:, 10, 2] = 0.0  # no data
    s = _run(tmp_path, "fits", _fits(tmp_path, images, mask, head, weight), "real.fits.mask_bits=1",
                  "real.fits.noise_hdu=VARIANCE", "real.fits.noise_kind=weight")
    assert np.all(s.mask[:, 10, 2] == 1) and s.mask.sum() == 3 * (len(BAD_PIXELS) + 1)
    np.testing.assert_allclose(s.labels["noise_sigma"], SIGMA, rtol=1e-6)
    (tmp_path / "hsc.fits").unlink()
    path = _fits(tmp_path, images, mask, head, weight[:, :, :-1])
    with pytest.raises(InputDataError, match=r"hsc.fits HDU 'VARIANCE' \(real.fits.noise_hdu\): "
                       r"shape \(3, 32, 31\) differs from the pixels' \(3, 32, 32\)"):
        _run(tmp_path, "fits", path, "real.fits.noise_hdu=VARIANCE")
    big = np.kron(images, np.ones((1, 2, 2), np.float32))  # 0.1"/pixel: resampled
    fits.HDUList([fits.PrimaryHDU(big, fits.Header({"PIXSCALE": 0.1})),
                  fits.ImageHDU(np.ones_like(big), name="VAR")]).writeto(tmp_path / "fine.fits")
    cfg = load_config(None, [f"stamp.size={SIZE}", "real.source=fits",
                             f"real.fits.path={tmp_path / 'fine.fits'}", "real.fits.resample=true",
                             "real.fits.noise_hdu=VAR"])
    with pytest.raises(InputDataError, match=r"fine.fits HDU 0 cutout 0: a noise plane "
                       r"\(real.fits.noise_\*\) of cutouts that are resampled is not supported"):
        prepare_real(cfg, tmp_path / "real.h5")


def test_sigma_from_plane_marks_invalid_pixels():
    out = sigma_from_plane(np.array([4.0, 0.0, -1.0, np.inf, np.nan]), "variance")
    np.testing.assert_array_equal(out[:1], [2.0])
    assert np.isnan(out[1:]).all()
    np.testing.assert_array_equal(sigma_from_plane(np.array([0.25]), "weight"), [2.0])


def _hdf5(tmp_path, noise_shape=None):
    images, mask, _, gal = _scene()
    with h5py.File(tmp_path / "u.h5", "w") as f:
        f.attrs["pixel_scale"] = SCALE
        f["images"] = images
        m = f.create_dataset("mask", data=mask)
        m.attrs["MP_BAD"], m.attrs["MP_DETECTED"] = BAD, DETECTED
        rms = np.full(noise_shape or images.shape, SIGMA, np.float64)
        f["rms"] = rms
    return tmp_path / "u.h5"


def test_hdf5_mask_bits_and_noise_dataset(tmp_path):
    path = _hdf5(tmp_path)
    with pytest.raises(InputDataError, match=r"3 bad fraction"):
        _run(tmp_path, "hdf5", path)
    s = _run(tmp_path, "hdf5", path, "real.hdf5.mask_bits=[BAD]", "real.hdf5.noise_dataset=rms",
                  "real.hdf5.noise_kind=rms")
    assert len(s) == 3 and s.mask.sum() == 3 * len(BAD_PIXELS)
    np.testing.assert_allclose(s.labels["noise_sigma"], SIGMA, rtol=1e-12)
    (tmp_path / "real.h5").unlink()
    s = _run(tmp_path, "hdf5", path, "real.hdf5.mask_bits=[BAD]", "real.hdf5.noise_dataset=rms",
                  "real.hdf5.noise_kind=rms", "real.hdf5.flux_scale=2.5")  # sigma x flux_scale
    np.testing.assert_allclose(s.labels["noise_sigma"], 2.5 * SIGMA, rtol=1e-12)
    (tmp_path / "real.h5").unlink()
    with pytest.raises(InputDataError, match=r"u.h5 dataset 'mask': real.hdf5.mask_bits names the "
                       r"mask plane 'EDGE' but the mask has no MP_EDGE"):
        _run(tmp_path, "hdf5", path, "real.hdf5.mask_bits=[EDGE]")
    path.unlink()
    path = _hdf5(tmp_path, noise_shape=(2, SIZE, SIZE))
    with pytest.raises(InputDataError, match=r"u.h5 dataset 'rms' \(real.hdf5.noise_dataset\): "
                       r"shape \(2, 32, 32\) differs from the pixels' \(3, 32, 32\)"):
        _run(tmp_path, "hdf5", path, "real.hdf5.noise_dataset=rms")
    assert not (tmp_path / "real.h5").exists()


def test_the_plane_sigma_is_taken_on_the_sky_not_on_the_galaxy(tmp_path):
    """A galaxy covering 80-89 % of a 64-pixel stamp (tests/test_sky.py) and a variance plane
    with its photon noise (gain 1) wherever it is above 1 count (up to 28 pixels out; the mask's
    edge lies where it is 0.4): the label is the sky's sigma exactly; the plane's median over
    all pixels is 2.72."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:64, :64] - 32
    gal = 16600.0 * np.exp(-np.hypot(y, x) / 3.0)
    image = (gal + 6.0 + rng.normal(0, 2.0, (64, 64))).astype(np.float32)
    var = (4.0 + np.where(gal > 1.0, gal, 0.0)).astype(np.float32)
    assert np.median(np.sqrt(var)) > 2.7
    fits.HDUList([fits.PrimaryHDU(image, fits.Header({"PIXSCALE": SCALE})),
                  fits.ImageHDU(var, name="VAR")]).writeto(tmp_path / "big.fits")
    cfg = load_config(None, ["stamp.size=64", "real.source=fits", f"real.fits.path={tmp_path / 'big.fits'}",
                             "real.fits.noise_hdu=VAR"])
    prepare_real(cfg, tmp_path / "real.h5")
    s = read_stamps(tmp_path / "real.h5")
    assert s.labels["sky_ok"][0] == 1
    assert s.labels["noise_sigma"][0] == 2.0
