"""``real.source: fits``: round trip, header scales, masks, rejection counts, and every bad input."""

import json

import numpy as np
import pytest
from astropy.io import fits

from refinegan.config import load_config
from refinegan.errors import ConfigError, InputDataError
from refinegan.io import read_stamps
from refinegan.target.prepare_real import prepare_real

SIZE = 32
SCALE = 0.2
SIGMA = 4.0
BKG = 7.0


def _galaxies(rng, n, size=SIZE, dy=0, dx=0):
    y, x = np.mgrid[:size, :size] - size // 2
    gal = 400 * np.exp(-((x - dx) ** 2 + (y - dy) ** 2) / (2 * 2.0**2))
    return (gal + BKG + rng.normal(0, SIGMA, (n, size, size))).astype(np.float32)


def _header(scale=SCALE, kind="cdelt"):
    h = fits.Header()
    if kind == "cdelt":
        h["CDELT1"], h["CDELT2"] = -scale / 3600, scale / 3600
    elif kind == "cd":
        h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -scale / 3600, 0.0, 0.0, scale / 3600
    elif kind == "pixscale":
        h["PIXSCALE"] = scale
    elif kind == "pc":  # WCS with a 30-degree rotation in PC and the scale in CDELT (arcsec)
        c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
        h["CDELT1"], h["CDELT2"], h["CUNIT1"], h["CUNIT2"] = -scale, scale, "arcsec", "arcsec"
        h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = c, -s, s, c
    return h


def _cfg(path, *overrides):
    return load_config(None, [f"stamp.size={SIZE}", "real.source=fits", f"real.fits.path={path}",
                              *overrides])


def _run(cfg, tmp_path):
    out = tmp_path / "real.h5"
    prepare_real(cfg, out)
    return read_stamps(out)


def test_round_trip_cube(rng, tmp_path):
    cube = _galaxies(rng, 20)
    fits.writeto(tmp_path / "cube.fits", cube, _header())
    s = _run(_cfg(tmp_path / "cube.fits", "real.fits.subtract_background=false"), tmp_path)
    np.testing.assert_array_equal(s.images, cube)
    assert s.pixel_scale == SCALE and s.attrs["n_rejected"] == 0 and s.attrs["domain"] == "real"
    np.testing.assert_allclose(s.labels["noise_sigma"], SIGMA, rtol=0.15)
    np.testing.assert_allclose(s.labels["noise_sigma"].mean(), SIGMA, rtol=0.05)
    # Median of ~800 sky pixels: std 1.25 sigma / sqrt(800) = 0.18 counts per stamp.
    np.testing.assert_allclose(s.labels["background"], BKG, atol=0.9)
    np.testing.assert_allclose(s.labels["background"].mean(), BKG, atol=0.15)
    assert s.mask.sum() == 0 and np.all(s.labels["center_dx"] == 0)
    t = _run(_cfg(tmp_path / "cube.fits"), tmp_path)  # background subtracted by default
    np.testing.assert_allclose(t.images, cube - t.labels["background"][:, None, None], atol=1e-4)


@pytest.mark.parametrize("kind", ["cd", "pc", "pixscale", "config"])
def test_directory_of_cutouts_and_scale_sources(rng, tmp_path, kind):
    for i in range(3):
        fits.writeto(tmp_path / f"g{i}.fits", _galaxies(rng, 1)[0],
                     _header(kind="none" if kind == "config" else kind))
    extra = [f"real.fits.pixel_scale={SCALE}"] if kind == "config" else []
    s = _run(_cfg(tmp_path, *extra), tmp_path)
    assert len(s) == 3 and list(s.labels["file_index"]) == [0, 1, 2]
    assert [f.rsplit("/", 1)[-1] for f in json.loads(s.attrs["files"])] == ["g0.fits", "g1.fits",
                                                                           "g2.fits"]


def test_glob_limit_n_and_extension_hdu(rng, tmp_path):
    for i in range(3):
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_galaxies(rng, 4), _header(), name="SCI")])
        hdul.writeto(tmp_path / f"c{i}.fits")
    s = _run(_cfg(f"{tmp_path}/c*.fits", "real.n=6", "real.fits.hdu=SCI"), tmp_path)
    assert len(s) == 6 and list(s.labels["index_in_file"]) == [0, 1, 2, 3, 0, 1]


def test_nan_pixels_masked_and_bad_stamps_counted(rng, tmp_path):
    cube = _galaxies(rng, 4)
    cube[1, 0, :5] = np.nan
    cube[2, :20] = np.nan  # 62 % bad: rejected
    cube[3] = np.nan  # all NaN: rejected
    fits.writeto(tmp_path / "c.fits", cube, _header())
    s = _run(_cfg(tmp_path / "c.fits", "real.fits.recenter=false"), tmp_path)
    assert len(s) == 2 and s.attrs["n_rejected"] == 2 and s.attrs["n_input"] == 4
    assert s.attrs["n_rejected_all_nan"] == 1 and s.attrs["n_rejected_bad_fraction"] == 1
    assert s.mask[1, 0, :5].all() and s.mask[1].sum() == 5 and np.all(s.images[1, 0, :5] == 0)
    assert np.isfinite(s.images).all()


def test_mask_hdu(rng, tmp_path):
    cube, mask = _galaxies(rng, 2), np.zeros((2, SIZE, SIZE), np.uint8)
    mask[0, 3, 4] = 1
    fits.HDUList([fits.PrimaryHDU(cube, _header()), fits.ImageHDU(mask, name="MASK")]).writeto(
        tmp_path / "m.fits")
    s = _run(_cfg(tmp_path / "m.fits", "real.fits.hdu=0", "real.fits.mask_hdu=MASK",
                  "real.fits.recenter=false"), tmp_path)
    assert s.mask[0, 3, 4] == 1 and s.mask.sum() == 1


def test_recenter_and_crop(rng, tmp_path):
    cube = _galaxies(rng, 2, size=40, dy=3, dx=-2)
    fits.writeto(tmp_path / "big.fits", cube, _header())
    s = _run(_cfg(tmp_path / "big.fits"), tmp_path)
    assert list(s.labels["center_dy"]) == [3, 3] and list(s.labels["center_dx"]) == [-2, -2]
    peak = np.unravel_index(np.argmax(s.images.mean(axis=0)), (SIZE, SIZE))
    assert peak == (SIZE // 2, SIZE // 2)


def test_resample_to_working_scale(rng, tmp_path):
    y, x = np.mgrid[:80, :80] - 40
    gal = 400 * np.exp(-(x**2 + y**2) / (2 * 2.0**2))
    cube = (gal + rng.normal(0, 0.01, (2, 80, 80))).astype(np.float32)
    fits.writeto(tmp_path / "fine.fits", cube, _header(scale=0.1))
    with pytest.raises(InputDataError, match=r"fine.fits HDU 0: pixel scale 0.1\"/pixel differs .* "
                       r"set real.fits.resample: true"):
        _run(_cfg(tmp_path / "fine.fits"), tmp_path)
    assert not (tmp_path / "real.h5").exists()
    s = _run(_cfg(tmp_path / "fine.fits", "real.fits.resample=true", "real.fits.recenter=false",
                  "real.fits.subtract_background=false"), tmp_path)
    assert s.pixel_scale == SCALE and s.attrs["resampled"]
    assert s.attrs["input_pixel_scale"] == pytest.approx(0.1)
    flux = 400 * 2 * np.pi * 2.0**2  # flux of the Gaussian in counts
    np.testing.assert_allclose(s.images.sum(axis=(1, 2)), flux, rtol=0.01)


# --- bad input: one clear message naming the file (and HDU), and no output file -------------

def _bad(tmp_path, cfg, match, exc=InputDataError):
    with pytest.raises(exc, match=match):
        prepare_real(cfg, tmp_path / "real.h5")
    assert not (tmp_path / "real.h5").exists() and not (tmp_path / "real.h5.tmp").exists()


def test_missing_path_and_unset(tmp_path):
    _bad(tmp_path, _cfg(tmp_path / "nope.fits"), r"nope.fits: no such file or directory")
    _bad(tmp_path, _cfg(f"{tmp_path}/*.fits"), r"the glob matches no files")
    cfg = load_config(None, ["real.source=fits"])
    _bad(tmp_path, cfg, r"real.fits.path is not set", ConfigError)


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    _bad(tmp_path, _cfg(tmp_path / "empty"), r"empty: directory holds no FITS files")


def test_wrong_hdu(rng, tmp_path):
    fits.writeto(tmp_path / "a.fits", _galaxies(rng, 2), _header())
    _bad(tmp_path, _cfg(tmp_path / "a.fits", "real.fits.hdu=3"),
         r"a.fits: HDU 3 \(real.fits.hdu\) does not exist; expected one of 0 PRIMARY")
    _bad(tmp_path, _cfg(tmp_path / "a.fits", "real.fits.hdu=SCI"), r"a.fits: HDU 'SCI'")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(_galaxies(rng, 1))]).writeto(tmp_path / "b.fits")
    _bad(tmp_path, _cfg(tmp_path / "b.fits", "real.fits.hdu=0"), r"b.fits: HDU 0 .* holds no image data")


def test_2d_3d_mismatch(rng, tmp_path):
    fits.writeto(tmp_path / "a.fits", _galaxies(rng, 1)[0], _header())
    fits.writeto(tmp_path / "b.fits", _galaxies(rng, 2), _header())
    _bad(tmp_path, _cfg(tmp_path), r"b.fits HDU 0: 3-D data among 2-D files \(first: .*a.fits")
    fits.writeto(tmp_path / "c.fits", np.zeros((2, 2, SIZE, SIZE), np.float32), _header())
    _bad(tmp_path, _cfg(tmp_path / "c.fits"), r"c.fits HDU 0: data have shape \(2, 2, 32, 32\) "
         r"\(bands, N, H, W\?\); set real.fits.band")
    fits.writeto(tmp_path / "d.fits", np.zeros((2, 2, 2, SIZE, SIZE), np.float32), _header())
    _bad(tmp_path, _cfg(tmp_path / "d.fits"), r"d.fits HDU 0: data have shape \(2, 2, 2, 32, 32\); "
         r"expected a 2-D cutout")


def test_non_float_data(tmp_path):
    fits.writeto(tmp_path / "i.fits", np.ones((SIZE, SIZE), np.int16), _header())
    _bad(tmp_path, _cfg(tmp_path / "i.fits"), r"i.fits HDU 0: pixels are .*int16 \(BITPIX 16\); "
         r"expected floating-point")


def test_all_nan_stamp(tmp_path):
    fits.writeto(tmp_path / "n.fits", np.full((SIZE, SIZE), np.nan, np.float32), _header())
    _bad(tmp_path, _cfg(tmp_path / "n.fits"), r"no usable stamps in .*n.fits: 1 all nan "
         r"\(e.g. .*n.fits HDU 0 cutout 0 \(all pixels NaN")


def test_inconsistent_pixel_scales(rng, tmp_path):
    fits.writeto(tmp_path / "a.fits", _galaxies(rng, 1)[0], _header(SCALE))
    fits.writeto(tmp_path / "b.fits", _galaxies(rng, 1)[0], _header(0.25))
    _bad(tmp_path, _cfg(tmp_path), r"b.fits HDU 0: pixel scale 0.25\"/pixel differs from "
         r"0.2\"/pixel of .*a.fits")


def test_missing_or_non_square_scale(rng, tmp_path):
    fits.writeto(tmp_path / "a.fits", _galaxies(rng, 1)[0])
    _bad(tmp_path, _cfg(tmp_path / "a.fits"), r"a.fits HDU 0: no pixel scale in the header.*"
         r"set real.fits.pixel_scale")
    h = _header()
    h["CDELT2"] = 0.3 / 3600
    fits.writeto(tmp_path / "b.fits", _galaxies(rng, 1)[0], h)
    _bad(tmp_path, _cfg(tmp_path / "b.fits"), r"b.fits HDU 0: pixels are not square")


def test_stamp_smaller_than_working_size_is_rejected_and_counted(rng, tmp_path):
    fits.writeto(tmp_path / "s.fits", _galaxies(rng, 2, size=20), _header())
    _bad(tmp_path, _cfg(tmp_path / "s.fits"), r"no usable stamps in .*s.fits: 2 too small \(e.g. "
         r".*s.fits HDU 0 cutout 0 \(20x20 pixels at 0.2\"/pixel.* smaller than stamp.size 32")
    # one undersized file among good ones no longer aborts the set: it is counted
    d = tmp_path / "dir"
    d.mkdir()
    fits.writeto(d / "a.fits", _galaxies(rng, 3), _header())
    fits.writeto(d / "b.fits", _galaxies(rng, 2, size=20), _header())
    fits.writeto(d / "c.fits.fz", _galaxies(rng, 2), _header())  # listed too (read by astropy)
    s = _run(_cfg(d), tmp_path)
    assert len(s.images) == 5 and s.attrs["n_rejected_too_small"] == 2 and s.attrs["n_input"] == 7


def test_corrupt_fits(rng, tmp_path):
    (tmp_path / "junk.fits").write_bytes(b"this is not a FITS file" * 200)
    _bad(tmp_path, _cfg(tmp_path / "junk.fits"), r"junk.fits: not a readable FITS file")
    fits.writeto(tmp_path / "t.fits", _galaxies(rng, 4), _header())
    data = (tmp_path / "t.fits").read_bytes()
    (tmp_path / "t.fits").write_bytes(data[: len(data) // 2])
    _bad(tmp_path, _cfg(tmp_path / "t.fits"), r"t.fits: (corrupt|not a readable) FITS file")


def test_mask_shape_mismatch(rng, tmp_path):
    fits.HDUList([fits.PrimaryHDU(_galaxies(rng, 2), _header()),
                  fits.ImageHDU(np.zeros((3, SIZE, SIZE), np.uint8), name="MASK")]).writeto(
        tmp_path / "m.fits")
    _bad(tmp_path, _cfg(tmp_path / "m.fits", "real.fits.mask_hdu=MASK"),
         r"m.fits HDU 'MASK': mask shape \(3, 32, 32\) differs")


def test_psf_file_written_to_psf(rng, tmp_path):
    fits.writeto(tmp_path / "c.fits", _galaxies(rng, 2), _header())
    y, x = np.mgrid[:41, :41] - 20
    psf = np.exp(-(x**2 + y**2) / (2 * 3.0**2))  # sigma 3 pixels at 0.1"/pixel = 0.3"
    fits.writeto(tmp_path / "psf.fits", psf, _header(scale=0.1))
    s = _run(_cfg(tmp_path / "c.fits", f"real.fits.psf_path={tmp_path / 'psf.fits'}"), tmp_path)
    assert s.psf.ndim == 2 and s.psf.shape == (21, 21)  # resampled to 0.2"/pixel, odd-sized
    np.testing.assert_allclose(s.psf.sum(), 1.0, rtol=1e-5)
    yy = np.arange(21) - 10.0
    sigma_pix = np.sqrt((s.psf.sum(axis=1) * yy**2).sum())
    np.testing.assert_allclose(sigma_pix * SCALE, 0.3, rtol=0.05)
    (tmp_path / "real.h5").unlink()
    fits.writeto(tmp_path / "bad.fits", np.ones((2, 2, 5, 5), np.float32))
    _bad(tmp_path, _cfg(tmp_path / "c.fits", f"real.fits.psf_path={tmp_path / 'bad.fits'}"),
         r"bad.fits HDU 0: PSF must be a 2-D floating-point image, got float32 of shape \(2, 2, 5, 5\)")
    _bad(tmp_path, _cfg(tmp_path / "c.fits", f"real.fits.psf_path={tmp_path / 'no.fits'}"),
         r"no.fits: no such PSF file \(real.fits.psf_path\)")


def test_a_psf_without_a_pixel_scale_is_refused_unless_configured(rng, tmp_path):
    """The PSF used to be taken at the cutouts' scale when its header had none (an HST PSF at
    0.03"/pixel read as ground-based pixels)."""
    fits.writeto(tmp_path / "c.fits", _galaxies(rng, 2), _header())
    y, x = np.mgrid[:41, :41] - 20
    fits.writeto(tmp_path / "psf.fits", np.exp(-(x**2 + y**2) / (2 * 3.0**2)))  # no scale
    psf = f"real.fits.psf_path={tmp_path / 'psf.fits'}"
    _bad(tmp_path, _cfg(tmp_path / "c.fits", psf),
         r"psf.fits HDU 0: the PSF image has no pixel scale in its header .*real.fits.psf_pixel_scale")
    s = _run(_cfg(tmp_path / "c.fits", psf, "real.fits.psf_pixel_scale=0.1"), tmp_path)
    assert s.psf.shape == (21, 21)


def test_psf_pixel_scale_wins_over_a_header_that_disagrees_with_a_warning(rng, tmp_path, caplog):
    fits.writeto(tmp_path / "c.fits", _galaxies(rng, 2), _header())
    y, x = np.mgrid[:41, :41] - 20
    fits.writeto(tmp_path / "psf.fits", np.exp(-(x**2 + y**2) / (2 * 3.0**2)), _header(scale=0.2))
    s = _run(_cfg(tmp_path / "c.fits", f"real.fits.psf_path={tmp_path / 'psf.fits'}",
                  "real.fits.psf_pixel_scale=0.1"), tmp_path)
    assert s.psf.shape == (21, 21)  # 41 pixels at 0.1", not at the header's 0.2"
    assert any("overridden by real.fits.psf_pixel_scale" in r.message for r in caplog.records)


def test_a_multi_band_cube_is_one_band_not_five_galaxies(rng, tmp_path):
    cube = np.stack([_galaxies(rng, 1)[0] * (b + 1) for b in range(5)])  # (5 bands, H, W)
    fits.writeto(tmp_path / "bands.fits", cube, _header())
    stack = _run(_cfg(tmp_path / "bands.fits"), tmp_path)  # band null: read as 5 cutouts
    assert len(stack.images) == 5
    (tmp_path / "real.h5").unlink()
    one = _run(_cfg(tmp_path / "bands.fits", "real.fits.band=2"), tmp_path)
    assert len(one.images) == 1
    (tmp_path / "real.h5").unlink()
    _bad(tmp_path, _cfg(tmp_path / "bands.fits", "real.fits.band=7"),
         r"bands.fits HDU 0: real.fits.band = 7 but the file has 5 bands")
    fits.writeto(tmp_path / "b4.fits", np.stack([cube, cube], axis=1), _header())  # (5, 2, H, W)
    _bad(tmp_path, _cfg(tmp_path / "b4.fits"), r"set real.fits.band to the band to use")
    two = _run(_cfg(tmp_path / "b4.fits", "real.fits.band=0"), tmp_path)
    assert len(two.images) == 2


def test_non_square_pixels_are_refused_from_a_cd_matrix_as_from_cdelt(rng, tmp_path):
    """A non-square CD matrix used to be taken as its geometric mean, silently."""
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -0.2 / 3600, 0.0, 0.0, 0.3 / 3600
    fits.writeto(tmp_path / "cd.fits", _galaxies(rng, 2), h)
    _bad(tmp_path, _cfg(tmp_path / "cd.fits"),
         r'cd.fits HDU 0: pixels are not square \(0.2" x 0.3" from the WCS\)')


def _gauss_psf(sigma, size=25, q=1.0, beta_deg=0.0):
    """A unit-sum elliptical Gaussian (axis ratio q, major axis at beta_deg from +x) sampled at
    pixel centres, centred on the central pixel."""
    y, x = np.mgrid[:size, :size] - size // 2
    b = np.radians(beta_deg)
    u, v = x * np.cos(b) + y * np.sin(b), -x * np.sin(b) + y * np.cos(b)
    p = np.exp(-0.5 * (u**2 / sigma**2 + v**2 / (q * sigma) ** 2))
    return p / p.sum()


def _hsm(img):
    import galsim

    r = galsim.hsm.FindAdaptiveMom(galsim.Image(np.ascontiguousarray(img, dtype=np.float64)))
    return r.moments_sigma, r.observed_shape.e1, r.observed_shape.e2


def test_a_psf_cube_gives_each_kept_cutout_its_own_psf(rng, tmp_path):
    """One PSF per input cutout across the files in sorted order (2 in a.fits, 1 in b.fits);
    the middle cutout (all NaN) is rejected and its PSF dropped: /psf holds PSFs 1 and 3, each
    with its input's HSM size (equal pixel scales: only the centring step touches it)."""
    gals = _galaxies(rng, 3)
    gals[1] = np.nan
    fits.writeto(tmp_path / "a.fits", gals[:2], _header())
    fits.writeto(tmp_path / "b.fits", gals[2:], _header())
    sigmas = (1.5, 2.0, 2.5)
    cube = np.stack([_gauss_psf(s) * 7.0 for s in sigmas]).astype(np.float32)  # not unit sum
    (tmp_path / "psf").mkdir()
    fits.writeto(tmp_path / "psf" / "cube.fits", cube, _header())
    psf = f"real.fits.psf_path={tmp_path / 'psf' / 'cube.fits'}"
    s = _run(_cfg(tmp_path, psf), tmp_path)
    assert len(s) == 2 and s.attrs["n_rejected_all_nan"] == 1
    assert list(s.labels["file_index"]) == [0, 1]
    assert s.psf.shape == (2, 25, 25)
    np.testing.assert_allclose(s.psf.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    for got, k in zip(s.psf, (0, 2), strict=True):
        want = _hsm(cube[k] / cube[k].sum())[0]
        np.testing.assert_allclose(_hsm(got)[0], want, rtol=1e-3)
        np.testing.assert_allclose(want, sigmas[k], rtol=0.01)  # the input is what it says
    # a cube of the wrong length is refused, naming the file, the key and both numbers
    (tmp_path / "real.h5").unlink()
    fits.writeto(tmp_path / "psf" / "two.fits", cube[:2], _header())
    _bad(tmp_path, _cfg(tmp_path, f"real.fits.psf_path={tmp_path / 'psf' / 'two.fits'}"),
         r"two.fits HDU 0 \(real.fits.psf_path\): a cube of 2 PSFs for 3 input cutouts \(those of "
         r"the 2 file\(s\) of real.fits.path, in sorted order\); expected one PSF per cutout, in "
         r"their order: shape \(3, 25, 25\)")
    # real.n stops early, yet the count is of all input cutouts
    fits.writeto(tmp_path / "psf" / "four.fits", np.concatenate([cube, cube[:1]]), _header())
    _bad(tmp_path, _cfg(tmp_path, "real.n=1", f"real.fits.psf_path={tmp_path / 'psf' / 'four.fits'}"),
         r"a cube of 4 PSFs for 3 input cutouts")
    bad = cube.copy()
    bad[2] = np.roll(bad[2], (4, 4), axis=(0, 1))  # a kept cutout's PSF off-centre: refused, named
    fits.writeto(tmp_path / "psf" / "bad.fits", bad, _header())
    _bad(tmp_path, _cfg(tmp_path, f"real.fits.psf_path={tmp_path / 'psf' / 'bad.fits'}"),
         r"bad.fits HDU 0 PSF 2: the PSF's centroid is \(\+4.00, \+4.00\) pixels")
    bad[2], bad[1] = cube[2], np.nan  # the rejected cutout's PSF is not looked at
    fits.writeto(tmp_path / "psf" / "nan1.fits", bad, _header())
    assert _run(_cfg(tmp_path, f"real.fits.psf_path={tmp_path / 'psf' / 'nan1.fits'}"),
                tmp_path).psf.shape == (2, 25, 25)


@pytest.mark.parametrize("augment", [4, 8])
def test_augmented_copies_carry_their_psf_turned_as_the_stamp(rng, tmp_path, augment):
    """A cutout that is the elliptical PSF itself (a bright star): every copy's stamp and its
    /psf have the same HSM ellipticity, and the copy's PSF is np.rot90 (of the mirror image for
    copies >= 4) of the cutout's, as the stamps are (`dihedral_copies`)."""
    psfs = np.stack([_gauss_psf(2.0, q=0.6, beta_deg=30.0), _gauss_psf(1.8, q=0.7, beta_deg=-60.0)])
    y, x = np.mgrid[:SIZE, :SIZE] - SIZE // 2
    stars = np.zeros((2, SIZE, SIZE), np.float32)
    for k in range(2):
        stars[k, SIZE // 2 - 12:SIZE // 2 + 13, SIZE // 2 - 12:SIZE // 2 + 13] = 5e4 * psfs[k]
    stars += rng.normal(0, 0.5, stars.shape).astype(np.float32)
    fits.writeto(tmp_path / "c.fits", stars, _header())
    fits.writeto(tmp_path / "psf.fits", psfs.astype(np.float32), _header())
    base = _cfg(tmp_path / "c.fits", f"real.fits.psf_path={tmp_path / 'psf.fits'}",
                "real.fits.recenter=false", "real.fits.subtract_background=false")
    plain = _run(base, tmp_path)
    (tmp_path / "real.h5").unlink()
    s = _run(load_config(None, [*_overrides(base), f"real.fits.augment={augment}"]), tmp_path)
    assert s.psf.shape == (2 * augment, 25, 25)
    for g in range(2):
        for k in range(augment):
            flip = (lambda a: np.fliplr(a)) if k >= 4 else (lambda a: a)
            np.testing.assert_array_equal(s.images[augment * g + k], np.rot90(flip(plain.images[g]), k % 4))
            np.testing.assert_array_equal(s.psf[augment * g + k], np.rot90(flip(plain.psf[g]), k % 4))
            _, e1s, e2s = _hsm(s.images[augment * g + k])
            _, e1p, e2p = _hsm(s.psf[augment * g + k])
            np.testing.assert_allclose([e1s, e2s], [e1p, e2p], atol=2e-3)
    # the copies differ: a rotation by 90 degrees flips the sign of e1 and e2
    e = np.array([_hsm(s.psf[k])[1:] for k in range(2)])
    np.testing.assert_allclose(e[1], -e[0], atol=1e-4)
    assert abs(e[0][0]) > 0.1 and abs(e[0][1]) > 0.1
    # one PSF for all cutouts: each copy's PSF turned too, so /psf becomes per stamp
    fits.writeto(tmp_path / "one.fits", psfs[0].astype(np.float32), _header())
    (tmp_path / "real.h5").unlink()
    one = _run(load_config(None, [*_overrides(base), f"real.fits.augment={augment}",
                                  f"real.fits.psf_path={tmp_path / 'one.fits'}"]), tmp_path)
    np.testing.assert_array_equal(one.psf[augment], plain.psf[0])  # the next cutout's copy 0
    np.testing.assert_array_equal(one.psf[1], np.rot90(plain.psf[0]))


def _overrides(cfg):
    """The --set overrides a config was built with, as a list (to add one)."""
    return [f"stamp.size={SIZE}", "real.source=fits", f"real.fits.path={cfg['real']['fits']['path']}",
            f"real.fits.psf_path={cfg['real']['fits']['psf_path']}", "real.fits.recenter=false",
            "real.fits.subtract_background=false"]
