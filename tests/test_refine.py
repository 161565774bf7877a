"""refine: labels byte-identical and in order, streaming, any stamp size, refusals."""

import h5py
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from refiner_helpers import PLAIN_REFINER, write_set

from refinegan.config import load_config
from refinegan.errors import ContractError, TrainingError
from refinegan.io import file_sha256, open_stamps, read_stamps
from refinegan.refiner.refine import refine
from refinegan.refiner.refiner_file import (
    MODEL_FORMAT,
    MODEL_VERSION,
    RefinerFile,
    atomic_save,
    load_file,
    load_model,
)
from refinegan.refiner.train import train

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_config(*extra):
    """A tiny refiner on SIZE x SIZE stamps with no pretraining (steps set by ``extra``)."""
    return load_config(None, [*PLAIN_REFINER, f"stamp.size={SIZE}", "train.batch_size=4",
                              "train.refiner_channels=4",
                              "train.refiner_blocks=1", "train.disc_channels=4",
                              "train.pretrain_r_steps=0", "train.pretrain_d_steps=0",
                              "train.history_size=4", "train.device=cpu", "train.sample_every=0",
                              *extra])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny trained refiner whose last layer is then randomised, so it changes stamps."""
    d = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(3)
    sim, _, _ = write_set(d / "sim.h5", 16, SIZE, rng, sigma=2.0)
    real, _, _ = write_set(d / "real.h5", 16, SIZE, rng, domain="real", sigma=2.0, correlated=True)
    cfg = _tiny_config("train.steps=1")
    res = train(cfg, [sim], real, d / "out")
    ckpt = load_file(res.model_path)
    g = torch.Generator().manual_seed(0)
    ckpt["state_dict"]["refiner.tail.weight"] = 0.2 * torch.randn(1, 4, 1, 1, generator=g)
    atomic_save(ckpt, res.model_path)
    return res.model_path


def _input(tmp_path, n=37, size=SIZE, **kw):
    rng = np.random.default_rng(11)
    path, _, images = write_set(tmp_path / "in.h5", n, size, rng, sigma=2.0, **kw)
    with h5py.File(path, "a") as f:  # labels of unusual dtypes must survive bit for bit
        f["labels"].create_dataset("tag", data=np.arange(n, dtype=np.int16)[::-1])
        f["labels"].create_dataset("weird", data=np.array([np.nan, -0.0] * (n // 2) + [1e-300] * (n % 2)))
    return path, images


@pytest.mark.parametrize("chunk", [3, 1000])
def test_labels_byte_identical_in_order(tmp_path, model, chunk):
    src, images = _input(tmp_path)
    out = refine(model, src, tmp_path / "out.h5", chunk_stamps=chunk)
    with h5py.File(src) as a, h5py.File(out) as b:
        assert sorted(a["labels"]) == sorted(b["labels"])
        for name in a["labels"]:
            x, y = a["labels"][name][()], b["labels"][name][()]
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
        assert np.array_equal(a["psf"][()], b["psf"][()])
    ref = read_stamps(out)
    assert ref.attrs["domain"] == "refined"
    assert ref.attrs["model_sha256"] == file_sha256(model)
    assert ref.attrs["parent_sha256"] == file_sha256(src)
    assert ref.attrs["parent"].endswith("in.h5")
    assert not np.allclose(ref.images, images)  # the model does something


def test_chunking_does_not_change_pixels(tmp_path, model):
    src, _ = _input(tmp_path)
    a = read_stamps(refine(model, src, tmp_path / "a.h5", chunk_stamps=5)).images
    b = read_stamps(refine(model, src, tmp_path / "b.h5", chunk_stamps=64)).images
    assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(a).max())


def test_other_stamp_size_and_moments_kept(tmp_path, model):
    """A 24x24 file through a model trained on 16x16; flux in counts is preserved exactly."""
    src, images = _input(tmp_path, n=6, size=24)
    ref = read_stamps(refine(model, src, tmp_path / "out.h5")).images
    assert ref.shape == images.shape
    assert_allclose(ref.sum(axis=(1, 2)), images.sum(axis=(1, 2)), rtol=0, atol=1e-3 * np.abs(images).sum() / 6)


def test_mask_is_copied(tmp_path, model):
    rng = np.random.default_rng(2)
    mask = (rng.uniform(size=(5, SIZE, SIZE)) < 0.1).astype(np.uint8)
    src, _, _ = write_set(tmp_path / "m.h5", 5, SIZE, rng, sigma=2.0, mask=mask)
    out = refine(model, src, tmp_path / "out.h5", chunk_stamps=2)
    with open_stamps(out) as sf:
        assert np.array_equal(sf.mask[()], mask)


def test_refuses_other_pixel_scale(tmp_path, model):
    src, _ = _input(tmp_path, pixel_scale=0.1)
    with pytest.raises(ContractError, match=r"refiner.pt was trained at pixel scale 0.2 arcsec/pixel, .*in.h5 has 0.1"):
        refine(model, src, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out.h5.tmp").exists()


def test_refuses_other_noise_normalization(tmp_path, model):
    rng = np.random.default_rng(5)
    src, _, _ = write_set(tmp_path / "loud.h5", 4, SIZE, rng, sigma=20.0)
    with pytest.raises(ContractError, match=r"loud.h5: median noise sigma 20 counts is outside a factor 2.0 of the 2 counts"):
        refine(model, src, tmp_path / "out.h5")
    ckpt = load_file(model)
    ckpt["normalization"]["version"] = 99
    atomic_save(ckpt, tmp_path / "v99.pt")
    src, _ = _input(tmp_path)
    with pytest.raises(ContractError, match=r"v99.pt: normalization version 99 is not the one"):
        refine(tmp_path / "v99.pt", src, tmp_path / "out.h5")
    ckpt["normalization"] |= {"version": 1, "sigma_source": "label"}
    atomic_save(ckpt, tmp_path / "label.pt")
    real, _, _ = write_set(tmp_path / "real.h5", 4, SIZE, rng, domain="real", sigma=2.0)
    with pytest.raises(ContractError, match=r"real.h5: normalization uses /labels/noise_sigma but the file has no such label"):
        refine(tmp_path / "label.pt", real, tmp_path / "out.h5")


def test_refiner_file_has_one_field_per_key(tmp_path, model):
    """RefinerFile writes its fields in order, reads them back, refuses a file without a required
    key and reads one without the provenance keys as None."""
    m = RefinerFile.read(model)
    assert list(load_file(model)) == list(RefinerFile.keys()) == list(m.to_dict())
    assert RefinerFile.required_keys() == ("format", "version", "arch", "state_dict", "normalization",
                                           "pixel_scale", "stamp_shape", "sim_sigma_median",
                                           "real_sigma_median", "config")
    assert m.format == MODEL_FORMAT and m.version == MODEL_VERSION and m.stamp_shape == [SIZE, SIZE]
    assert m.step == 1 and m.sim_files[0].endswith("sim.h5") and m.psf_match is None
    m.write(tmp_path / "copy.pt")
    copy = RefinerFile.read(tmp_path / "copy.pt")
    assert copy.info() == m.info() and copy.state_dict.keys() == m.state_dict.keys()
    assert all(torch.equal(v, m.state_dict[k]) for k, v in copy.state_dict.items())
    module, info = load_model(tmp_path / "copy.pt")
    assert "state_dict" not in info and info["arch"] == m.arch and not module.training
    old = load_file(model)
    for key in ("step", "versions", "sim_files", "real_file", "psf_match"):
        del old[key]
    atomic_save(old, tmp_path / "old.pt")
    assert RefinerFile.read(tmp_path / "old.pt").step is None
    del old["config"]
    atomic_save(old, tmp_path / "noconfig.pt")
    with pytest.raises(ContractError, match=r"noconfig.pt: refiner file lacks \['config'\]"):
        refine(tmp_path / "noconfig.pt", _input(tmp_path)[0], tmp_path / "out.h5")


def test_refuses_bad_model_files_and_inputs(tmp_path, model):
    src, _ = _input(tmp_path)
    with pytest.raises(ContractError, match=r"nope.pt: no such checkpoint file"):
        refine(tmp_path / "nope.pt", src, tmp_path / "out.h5")
    ckpt_path = model.parent / "checkpoint.pt"
    with pytest.raises(ContractError, match=r"not a refinegan refiner .*pass refiner.pt, not checkpoint.pt"):
        refine(ckpt_path, src, tmp_path / "out.h5")
    bad = load_file(model)
    bad["arch"] = dict(bad["arch"], channels=8)
    atomic_save(bad, tmp_path / "arch.pt")
    with pytest.raises(ContractError, match=r"arch.pt: weights do not match architecture"):
        refine(tmp_path / "arch.pt", src, tmp_path / "out.h5")
    with pytest.raises(ContractError, match="chunk_stamps must be >= 1, got 0"):
        refine(model, src, tmp_path / "out.h5", chunk_stamps=0)
    with h5py.File(src, "a") as f:
        f["images"][3, 2, 2] = np.inf
    with pytest.raises(ContractError, match=r"in.h5: stamp 3 has NaN or inf pixels"):
        refine(model, src, tmp_path / "out.h5", chunk_stamps=2)
    assert not (tmp_path / "out.h5").exists()


def test_jit_path_matches_eager(tmp_path, model):
    src, _ = _input(tmp_path, n=9)
    a = read_stamps(refine(model, src, tmp_path / "a.h5", chunk_stamps=4, jit=True)).images
    b = read_stamps(refine(model, src, tmp_path / "b.h5", chunk_stamps=4, jit=False)).images
    assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


def test_memory_is_bounded_by_the_chunk(tmp_path, model):
    """Peak traced memory while refining 20,000 stamps in chunks of 500 stays far below the
    file's pixel data (20,000 x 16 x 16 x 4 B = 20 MB): refine never holds all stamps. (The
    sha256 of the parent, read in 1 MB blocks, costs a constant ~2 MB.)"""
    import tracemalloc

    rng = np.random.default_rng(4)
    n = 20000
    images = (rng.normal(0, 2.0, (n, SIZE, SIZE))).astype(np.float32)
    labels = {k: np.zeros(n) for k in ("g1", "g2", "e1_int", "e2_int", "flux", "hlr", "sersic_n",
                                        "psf_fwhm", "snr")}
    labels |= {"id": np.arange(n), "noise_sigma": np.full(n, 2.0)}
    from refinegan.io import write_stamps

    src = write_stamps(tmp_path / "big.h5", images, labels, domain="sim", pixel_scale=0.2,
                       source="t", config={}, seed=1)
    del images
    tracemalloc.start()
    refine(model, src, tmp_path / "out.h5", chunk_stamps=500)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.25 * n * SIZE * SIZE * 4, peak
    assert open_stamps(tmp_path / "out.h5").n == n


def test_learned_psf_kernel_gives_the_refined_psf(tmp_path):
    """With a PSF kernel the refined file's /psf is K * (sim /psf), unit sum, K in the attrs, the
    pixels are K * sim (R itself left the identity here) and the flux is kept exactly."""
    rng = np.random.default_rng(4)
    sim, _, _ = write_set(tmp_path / "sim.h5", 8, SIZE, rng, sigma=2.0)
    cfg = _tiny_config("train.steps=0", "train.psf_kernel_px=3")
    res = train(cfg, [sim], sim, tmp_path / "out")
    ckpt = load_file(res.model_path)
    ckpt["state_dict"]["kernel_weights"] = torch.tensor([0.2, 0.3, 0.4])  # a round blur
    atomic_save(ckpt, res.model_path)
    out = refine(res.model_path, sim, tmp_path / "ref.h5")
    a, b = read_stamps(sim), read_stamps(out)
    kernel = np.asarray(b.attrs["psf_kernel"], dtype=np.float64)
    assert kernel.shape == (3, 3) and kernel[1, 1] < 0.9
    assert_allclose(kernel, kernel[::-1].T, atol=1e-7)
    assert_allclose(kernel.sum(), 1.0, rtol=1e-6)

    def blur(img):  # K * img with circular padding, as the refiner applies it (K is symmetric)
        p = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="wrap")
        return sum(kernel[i, j] * p[..., i:i + img.shape[-2], j:j + img.shape[-1]]
                   for i in range(3) for j in range(3))

    assert_allclose(b.images, blur(a.images.astype(np.float64)), atol=2e-4 * np.abs(a.images).max())
    assert_allclose(b.images.sum(axis=(1, 2)), a.images.sum(axis=(1, 2)), rtol=1e-4)
    psf_zero = np.pad(a.psf.astype(np.float64), 1)
    expect = sum(kernel[i, j] * psf_zero[i:i + a.psf.shape[0], j:j + a.psf.shape[1]]
                 for i in range(3) for j in range(3))
    assert_allclose(b.psf, expect / expect.sum(), atol=1e-6)
    assert_allclose(b.psf.sum(), 1.0, rtol=1e-5)
    assert not np.allclose(b.psf, a.psf, atol=1e-4)


def _set_psf(path, psf):
    with h5py.File(path, "a") as f:
        del f["psf"]
        f["psf"] = psf.astype(np.float32)


def test_psf_match_refines_through_the_target_psf(tmp_path):
    """train.psf_match: the refined pixels are the matched sims (R itself the identity here), the
    refined /psf is the target's, the kernel is in the attrs, labels unchanged; a file with
    another PSF, or a target without one, is refused."""
    from refinegan.refiner.psf_match import PsfMatch

    rng = np.random.default_rng(4)
    sim, _, _ = write_set(tmp_path / "sim.h5", 8, SIZE, rng, sigma=2.0)
    real, _, _ = write_set(tmp_path / "real.h5", 8, SIZE, rng, domain="real", sigma=2.0)
    y, x = np.mgrid[0:SIZE, 0:SIZE] - SIZE // 2
    wide = np.exp(-0.5 * ((x - 0.3) ** 2 / 2.2**2 + y**2 / 1.9**2))  # wider, elliptical, offset
    _set_psf(real, wide / wide.sum())
    cfg = _tiny_config("train.steps=0", "train.psf_match=true")
    res = train(cfg, [sim], real, tmp_path / "out")
    out = refine(res.model_path, sim, tmp_path / "ref.h5")
    a, b = read_stamps(sim), read_stamps(out)
    match = PsfMatch.from_dict(load_file(res.model_path)["psf_match"])
    assert_allclose(b.images, match.apply(a.images, a.labels["noise_sigma"], a.labels), atol=1e-3)
    assert_allclose(b.psf, wide / wide.sum(), atol=1e-3 * wide.max() / wide.sum())
    assert_allclose(np.asarray(b.attrs["psf_match_kernel"]), match.kernel)
    # the matching residual, recorded at training, reaches the refined file: max |K * psf_sim -
    # psf_target| of the target's peak, i.e. of the refined /psf against the target's
    target = wide / wide.sum()
    residual = float(np.abs(b.psf - target).max() / target.max())
    assert 1e-4 < residual < 0.02
    assert_allclose(b.attrs["psf_match_residual"], residual, rtol=1e-4)
    assert b.attrs["psf_match_residual_max"] == 0.02
    for name in a.labels:
        assert np.array_equal(a.labels[name], b.labels[name])
    # the sims' border noise keeps its sigma (white noise put back), the galaxies are wider
    assert_allclose(b.images[:, :3].std(), a.images[:, :3].std(), rtol=0.1)
    assert b.images.sum(axis=0).max() < 0.8 * a.images.sum(axis=0).max()

    # a refiner.pt from before the residual was recorded: no attribute, nothing else changes
    old = load_file(res.model_path)
    for key in ("residual", "residual_max"):
        del old["psf_match"][key]
    atomic_save(old, tmp_path / "old.pt")
    c = read_stamps(refine(tmp_path / "old.pt", sim, tmp_path / "ref_old.h5"))
    assert "psf_match_residual" not in c.attrs and "psf_match_residual_max" not in c.attrs
    assert np.array_equal(c.images, b.images) and np.array_equal(c.psf, b.psf)

    other = tmp_path / "other.h5"
    write_set(other, 4, SIZE, rng, sigma=2.0)
    _set_psf(other, wide / wide.sum())
    with pytest.raises(ContractError, match="other.h5: /psf differs from the PSF"):
        refine(res.model_path, other, tmp_path / "ref2.h5")
    with h5py.File(real, "a") as f:
        del f["psf"]
    with pytest.raises(TrainingError, match="train.psf_match is on but .*real.h5 has no /psf"):
        train(cfg, [sim], real, tmp_path / "out2")


def test_latent_codes_are_shared_by_twins_and_reproducible(tmp_path):
    """A refiner with a latent code: stamps of one sim noise realisation (same pair_id, rot90)
    get the same code, others not; refine is reproducible and independent of the chunking."""
    from refinegan.refiner.refine import latent_codes

    rng = np.random.default_rng(4)
    n = 8
    noise = np.broadcast_to(rng.normal(0, 2.0, (1, SIZE, SIZE)), (n, SIZE, SIZE)).copy()
    sim, params, _ = write_set(tmp_path / "sim.h5", n, SIZE, rng, sigma=2.0, noise_field=noise)
    with h5py.File(sim, "a") as f:
        f["labels"].create_dataset("pair_id", data=np.array([0, 0, 0, 0, 1, 1, 1, 1]))
        f["labels"].create_dataset("rot90", data=np.array([0, 0, 1, 1, 0, 0, 1, 1]))
        f["images"][...] = noise.astype(np.float32)  # identical inputs: only the codes differ
    cfg = _tiny_config("train.steps=1", "train.latent_dim=2")
    res = train(cfg, [sim], sim, tmp_path / "out")
    ckpt = load_file(res.model_path)
    g = torch.Generator().manual_seed(0)
    ckpt["state_dict"]["refiner.tail.weight"] = 0.5 * torch.randn(1, 4, 1, 1, generator=g)
    atomic_save(ckpt, res.model_path)
    a = read_stamps(refine(res.model_path, sim, tmp_path / "a.h5")).images
    b = read_stamps(refine(res.model_path, sim, tmp_path / "b.h5", chunk_stamps=3)).images
    tol = 1e-5 * np.abs(a).max()  # chunk sizes change only the float rounding of the convolutions
    assert_allclose(a, b, atol=tol)
    for i, j in ((0, 1), (2, 3), (4, 5), (6, 7)):
        assert_allclose(a[i], a[j], atol=tol)
    assert np.abs(a[0] - a[2]).max() > 100 * tol and np.abs(a[0] - a[4]).max() > 100 * tol
    codes = latent_codes({"pair_id": np.array([0, 0, 1]), "rot90": np.array([0, 0, 0])}, 3, 2, 7)
    assert codes.shape == (3, 2) and np.array_equal(codes[0], codes[1]) and not np.allclose(codes[0], codes[2])
    assert latent_codes({}, 3, 0, 7) is None


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_code_is_refused_without_suggesting_the_unsafe_load(tmp_path, model, capsys):
    src, _ = _input(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "refinegan-refiner", "payload": _RunsCode()}, evil)
    with pytest.raises(ContractError, match=r"evil.pt: refused: not a refinegan checkpoint \(it holds "
                                            r"print\)") as err:
        refine(evil, src, tmp_path / "out.h5")
    assert "weights_only" not in str(err.value) and "this must never run" not in capsys.readouterr().out
    (tmp_path / "trunc.pt").write_bytes(model.read_bytes()[:500])
    with pytest.raises(ContractError, match=r"trunc.pt: not a readable refinegan checkpoint"):
        refine(tmp_path / "trunc.pt", src, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_refine_refuses_to_overwrite_its_input(tmp_path, model):
    src, _ = _input(tmp_path)
    before = file_sha256(src)
    with pytest.raises(ContractError, match=r"refine --out .*in.h5 is the input file"):
        refine(model, src, src)
    link = tmp_path / "link.h5"
    link.symlink_to(src)
    with pytest.raises(ContractError, match="is the input file"):
        refine(model, src, link)
    assert file_sha256(src) == before


def test_matching_only_writes_r_input(tmp_path):
    """refine --matching-only: the sims as R receives them, bytes of the matching's own output
    (`PsfMatch.apply`), the matched /psf, matching_only 1, labels unchanged; with an identity R
    (no training step) the refined file is that, up to the float32 normalisation round trip."""
    from refinegan.refiner.psf_match import PsfMatch

    rng = np.random.default_rng(4)
    sim, _, _ = write_set(tmp_path / "sim.h5", 8, SIZE, rng, sigma=2.0)
    real, _, _ = write_set(tmp_path / "real.h5", 8, SIZE, rng, domain="real", sigma=2.0)
    y, x = np.mgrid[0:SIZE, 0:SIZE] - SIZE // 2
    wide = np.exp(-0.5 * (x**2 / 2.2**2 + y**2 / 1.9**2))
    _set_psf(real, wide / wide.sum())
    res = train(_tiny_config("train.steps=0", "train.psf_match=true"), [sim], real, tmp_path / "out")
    pm = refine(res.model_path, sim, tmp_path / "pm.h5", matching_only=True, chunk_stamps=3)
    ref = refine(res.model_path, sim, tmp_path / "ref.h5")
    a, b, r = read_stamps(sim), read_stamps(pm), read_stamps(ref)
    match = PsfMatch.from_dict(load_file(res.model_path)["psf_match"])
    want = match.apply(a.images, a.labels["noise_sigma"], a.labels)
    assert b.images.tobytes() == want.astype(np.float32).tobytes()
    assert b.psf.tobytes() == match.apply_psf(a.psf).tobytes() == r.psf.tobytes()
    assert int(b.attrs["matching_only"]) == 1 and "matching_only" not in r.attrs
    assert b.attrs["model_sha256"] == r.attrs["model_sha256"] and b.attrs["domain"] == "refined"
    for name in a.labels:
        assert a.labels[name].tobytes() == b.labels[name].tobytes()
    assert_allclose(r.images, b.images, atol=1e-5 * np.abs(b.images).max())


def test_matching_to_the_sims_own_psf_is_the_sim(tmp_path):
    """A target whose PSF is the sims': the psf_matched stamps are the sims up to the white noise
    put back where the PSF passes (almost) nothing (the Wiener regularisation re-draws those
    modes, most of them for this 1.5-pixel Gaussian PSF). So seen through the PSF, what the PSF
    passes, the difference is < 1 % of the noise; the restored noise has the sims' sigma within 2 %."""
    rng = np.random.default_rng(8)
    size, sigma = 32, 2.0
    sim, _, _ = write_set(tmp_path / "sim.h5", 64, size, rng, sigma=sigma)
    real, _, _ = write_set(tmp_path / "real.h5", 8, size, rng, domain="real", sigma=sigma)
    cfg = load_config(None, [*PLAIN_REFINER, f"stamp.size={size}", "train.batch_size=4",
                             "train.refiner_channels=4", "train.refiner_blocks=1",
                             "train.disc_channels=4", "train.pretrain_r_steps=0",
                             "train.pretrain_d_steps=0", "train.history_size=4", "train.device=cpu",
                             "train.sample_every=0", "train.steps=0", "train.psf_match=true"])
    res = train(cfg, [sim], real, tmp_path / "out")
    a = read_stamps(sim)
    b = read_stamps(refine(res.model_path, sim, tmp_path / "pm.h5", matching_only=True))
    diff = (b.images - a.images).astype(np.float64)
    p_ft = np.fft.fft2(np.fft.ifftshift(a.psf / a.psf.sum()))  # the PSF's transfer function
    seen = np.fft.ifft2(np.fft.fft2(diff) * p_ft).real  # the difference through the PSF
    noise_seen = sigma * np.sqrt(np.mean(np.abs(p_ft) ** 2))  # the sim noise through the PSF
    assert seen.std() < 0.01 * noise_seen
    assert diff.std() > 0.5 * sigma  # (not trivially: the unpassed modes are new noise)
    border = np.concatenate([b.images[:, :4].ravel(), b.images[:, -4:].ravel()])
    assert border.std() == pytest.approx(sigma, rel=0.02)
    assert_allclose(b.psf, a.psf / a.psf.sum(), atol=1e-3 * a.psf.max())
