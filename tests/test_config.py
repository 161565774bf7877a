import re

import pytest

from refinegan.config import apply_overrides, default_config, get, load_config
from refinegan.errors import ConfigError
from tests.conftest import ROOT


def test_defaults_filled_and_repo_config_valid():
    cfg = default_config()
    assert cfg["stamp"]["size"] == 48 and cfg["sim"]["psf"]["type"] == "moffat"
    repo = load_config(ROOT / "config" / "config.yaml")
    for key in ("name", "seed", "stamp.size", "stamp.pixel_scale", "sim.n", "sim.shear.g1",
                "sim.shear.g2", "sim.noise.sigma", "sim.pairs.rot90", "sim.pairs.shear_sign",
                "sim.psf.type", "sim.psf.fwhm", "real.source", "real.n", "real.fits.path",
                "real.hdf5.path", "real.hdf5.dataset", "train.steps", "train.batch_size",
                "train.device", "shards"):
        get(repo, key)  # the fixed keys of DESIGN.md section 2 exist


def test_overrides_are_typed():
    cfg = load_config(None, ["train.steps=200", "sim.noise.sigma=0.5", "sim.pairs.rot90=false",
                             "name=run_a", "sim.noise.snr=null", "sim.galaxy.flux_max=2e4"])
    assert cfg["sim"]["galaxy"]["flux_max"] == 20000.0
    assert cfg["train"]["steps"] == 200 and isinstance(cfg["train"]["steps"], int)
    assert cfg["sim"]["noise"]["sigma"] == 0.5
    assert cfg["sim"]["pairs"]["rot90"] is False
    assert cfg["name"] == "run_a"


def test_wrong_type_message():
    with pytest.raises(ConfigError, match=r"'stamp.size': 'big' is not of type 'integer'"):
        load_config(None, ["stamp.size=big"])


def test_unknown_key_message():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['sim.nosie'\]"):
        load_config(None, ["sim.nosie.sigma=1"])


def test_out_of_range_message():
    with pytest.raises(ConfigError, match=r"'sim.noise.sigma': -1 is less than the minimum of 0"):
        load_config(None, ["sim.noise.sigma=-1"])
    with pytest.raises(ConfigError, match=r"'sim.psf.type': 'airy' is not one of"):
        load_config(None, ["sim.psf.type=airy"])


def test_cross_key_rules():
    with pytest.raises(ConfigError, match="sim.n = 6 must be a multiple of 4"):
        load_config(None, ["sim.n=6"])
    with pytest.raises(ConfigError, match="sersic_n_min .* must not exceed"):
        load_config(None, ["sim.galaxy.sersic_n_min=3", "sim.galaxy.sersic_n_max=2"])


def test_bad_file_and_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_run_config_is_typed_frozen_and_resolved_once(monkeypatch):
    import copy
    import pickle

    from refinegan import config as config_mod
    from refinegan.config import RunConfig, load_config

    cfg = load_config(None, ["seed=11", "stamp.size=32", "train.steps=5"])
    assert isinstance(cfg, RunConfig)
    assert (cfg.seed, cfg.stamp_size, cfg.name, cfg.shards) == (11, 32, "default", 2)
    assert isinstance(cfg.pixel_scale, float) and cfg["train"]["steps"] == 5
    with pytest.raises(TypeError):
        cfg["train"]["steps"] = 6  # sections are read-only
    with pytest.raises(AttributeError):
        cfg.seed = 3
    assert isinstance(cfg["train"]["moment_weights_px"], tuple)
    plain = cfg.to_dict()
    assert isinstance(plain["train"]["moment_weights_px"], list)
    plain["train"]["steps"] = 99  # a copy: the run config is unchanged
    assert cfg["train"]["steps"] == 5
    assert pickle.loads(pickle.dumps(cfg)) == cfg and copy.deepcopy(cfg) == cfg
    # converted once: a RunConfig passes through the stage entry without a second validation
    calls = []
    monkeypatch.setattr(config_mod, "validate_config", lambda c: calls.append(c) or c)
    assert RunConfig.of(cfg) is cfg and calls == []
    assert cfg.with_overrides(["train.steps=7"])["train"]["steps"] == 7 and len(calls) == 1


def test_a_plain_dict_is_accepted_by_the_python_api_and_validated(tmp_path):
    from refinegan.config import RunConfig, default_config

    raw = default_config()
    raw["sim"]["n"] = 8
    cfg = RunConfig.of(raw)
    assert cfg["sim"]["n"] == 8 and RunConfig.of(cfg.to_dict()) == cfg
    raw["sim"]["n"] = 7  # the RunConfig does not follow later edits of the dict
    assert cfg["sim"]["n"] == 8
    with pytest.raises(ConfigError, match="sim.n = 7 must be a multiple of 4"):
        RunConfig.of(raw)


@pytest.mark.parametrize("override,key", [("sim.noise.sigma=.nan", "sim.noise.sigma"),
                                          ("sim.noise.sigma=.inf", "sim.noise.sigma"),
                                          ("train.lr_r=.inf", "train.lr_r"),
                                          ("train.moment_weights_px=[1.0, .nan]", "train.moment_weights_px[1]")])
def test_non_finite_numbers_are_refused(override, key):
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}' is .*expected a finite number"):
        load_config(None, [override])


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs", ".hidden", "", "x y"])
def test_run_name_must_be_one_path_component(name):
    with pytest.raises(ConfigError, match="config key 'name'"):
        load_config(None, [f"name={name!r}" if name else "name=''"])
    assert load_config(None, ["name=run_2.b-1"]).name == "run_2.b-1"


def test_more_shards_than_galaxy_groups_are_refused():
    from refinegan.config import check_shards

    cfg = load_config(None, ["sim.n=16", "shards=4"])
    check_shards(cfg)  # 4 groups of 4 stamps: fine
    with pytest.raises(ConfigError, match=r"shards = 5 exceeds the 4 galaxy groups of sim.n = 16"):
        check_shards(load_config(None, ["sim.n=16", "shards=5"]))


def test_duplicate_keys_and_unreadable_files_are_refused(tmp_path):
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  steps: 3\n  batch_size: 4\n  steps: 5\n")
    with pytest.raises(ConfigError, match=r"dup.yaml: duplicate key 'steps' at line 4 \(first at line 2\)"):
        load_config(dup)
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(binary)


def test_one_set_of_defaults_the_default_run_is_the_schema():
    """config/config.yaml lists the schema's defaults: a stage run without --config is the
    default run (its refiner included: PSF matching, the anchors, the latent code)."""
    run = load_config(ROOT / "config" / "config.yaml").to_dict()
    assert run == default_config()
    assert run["train"]["psf_match"] and run["train"]["noise_region"] == "sky"


def test_every_panel_target_is_a_valid_change_of_the_default_runs_target():
    files = sorted((ROOT / "config" / "targets").glob("*.yaml"))
    assert len(files) >= 7
    base = load_config(ROOT / "config" / "config.yaml").to_dict()
    names = set()
    for path in files:
        cfg = load_config([ROOT / "config" / "config.yaml", path]).to_dict()
        changed = {k for k in cfg if cfg[k] != base[k]}
        assert changed <= {"name", "real"}, (path.name, changed)  # only the target changes
        names.add(cfg["name"])
    assert len(names) == len(files)  # each writes to its own results/<name>/
