"""``real.source: cosmos``: real HST galaxies (data/real_hst) through the target PSF.

These tests draw one stamp per galaxy group (``real.cosmos.pairs`` off, groups of 1), the
drawing-many-times behaviour; the pair layout and the applied shear are tested in
tests/test_cosmos_target.py on the 100-galaxy catalog.
"""

from pathlib import Path

import numpy as np
import pytest

from refinegan.config import load_config
from refinegan.errors import InputDataError
from refinegan.io import read_stamps
from refinegan.target.prepare_real import prepare_real

DATA = Path(__file__).resolve().parents[1] / "data"


def _cfg(*overrides):
    return load_config(None, ["stamp.size=32", "real.n=10", "real.source=cosmos",
                              f"real.cosmos.dir={DATA / 'real_hst' / 'aegis'}",
                              "real.cosmos.pairs.rot90=false", "real.cosmos.pairs.shear_sign=false",
                              *overrides])


def test_aegis_galaxies_drawn_many_times(tmp_path):
    out = prepare_real(_cfg("real.noise.sigma=0", "real.psf.optical=false"), tmp_path / "r.h5")
    s = read_stamps(out)
    assert s.attrs["domain"] == "real" and not s.attrs["is_mock"] and s.attrs["n_galaxies"] == 5
    assert list(s.labels["cat_index"]) == [0, 1, 2, 3, 4] * 2
    assert list(s.labels["ident"][:5]) == [23409, 14886, 9024, 17038, 24216]
    assert len(np.unique(s.labels["rotation"])) == 10 and np.all(s.labels["flip"] == 0)
    # Flux conserved through deconvolution, reconvolution and resampling to 0.2"/pixel (the
    # brightest galaxy spills out of the 32-pixel stamp; the optical PSF's strut and ring wings
    # would put ~7 % of the flux beyond it, so this uses the atmosphere alone).
    np.testing.assert_allclose(s.images.sum(axis=(1, 2))[[0, 2, 3]], s.labels["flux"][[0, 2, 3]],
                               rtol=0.05)
    a, b = s.images[0], s.images[5]  # the same galaxy, two rotations
    assert not np.allclose(a, b, atol=1e-3 * a.max())
    np.testing.assert_allclose(s.psf.sum(), 1.0, rtol=1e-5)
    assert np.all(s.labels["hst_noise_var"] < 1.0)


def test_noise_flips_and_determinism(tmp_path):
    cfg = _cfg("real.cosmos.flips=true", "real.n=12")
    a = read_stamps(prepare_real(cfg, tmp_path / "a.h5"))
    b = read_stamps(prepare_real(cfg, tmp_path / "b.h5"))
    assert a.images.tobytes() == b.images.tobytes()
    assert set(a.labels["flip"]) == {0, 1}
    corner = a.images[:, :6, :6]
    np.testing.assert_allclose(corner.std(), 10.0, rtol=0.2)


def test_cosmos_test_catalog_row0_and_whiten(tmp_path):
    cfg = load_config(None, ["stamp.size=32", "real.n=4", "real.source=cosmos",
                             f"real.cosmos.dir={DATA / 'real_hst' / 'cosmos'}",
                             "real.cosmos.file_name=test_catalog.fits", "real.cosmos.indices=[0]",
                             "real.cosmos.whiten=true", "real.cosmos.flux_scale=100"])
    s = read_stamps(prepare_real(cfg, tmp_path / "c.h5"))
    assert list(s.labels["ident"]) == [100533] * 4 and np.all(s.labels["hst_noise_var"] == 0)
    assert list(s.labels["shear_sign"]) == [1, -1, 1, -1]  # one group of the sims' layout


def test_missing_catalog_names_path_and_download(tmp_path):
    cfg = _cfg(f"real.cosmos.dir={tmp_path}", "real.cosmos.file_name=real_galaxy_catalog_25.2.fits")
    with pytest.raises(InputDataError, match=r"real_galaxy_catalog_25.2.fits not found .*"
                       r"galsim_download_cosmos"):
        prepare_real(cfg, tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()


def test_indices_out_of_range(tmp_path):
    with pytest.raises(InputDataError, match=r"AEGIS_F814w_catalog.fits: real.cosmos.indices \[7\] "
                       r"out of range; expected rows in \[0, 5\)"):
        prepare_real(_cfg("real.cosmos.indices=[0, 7]"), tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()
