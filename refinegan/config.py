"""Run configuration: load YAML, apply ``--set key=value`` overrides, validate, fill defaults.

The schema is ``refinegan/config.schema.yaml`` (``workflows/schemas/config.schema.yaml`` links to
it, so Snakemake's ``validate`` checks the same rules). Every key has a type, a default and a
description with units; ``additionalProperties: false`` turns typos into errors.

A run's config is resolved once, at the edge (the CLI, the Snakefile), into a `RunConfig`: validated,
defaults filled, frozen, with the top-level keys typed (``name``, ``seed``, ``shards``,
``stamp_size``, ``pixel_scale``) and each section a read-only mapping that the stage's own typed
view reads (`refinegan.sim.simulate.SimParams`, `refinegan.refiner.settings.TrainSettings`, ...).
Stage functions take a `RunConfig`; a plain dict given to the Python API is converted once by
`RunConfig.of`, never validated again downstream.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml

from .errors import ConfigError

__all__ = [
    "RunConfig",
    "twin_enabled",
    "FrozenMapping",
    "to_plain",
    "SCHEMA_PATH",
    "load_schema",
    "default_config",
    "load_config",
    "validate_config",
    "apply_overrides",
    "read_yaml",
    "deep_merge",
    "check_shards",
    "get",
]

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def load_schema() -> dict:
    """The config JSON schema (a fresh copy)."""
    return copy.deepcopy(_schema())


def _extend_with_default(validator_class):
    """The jsonschema FAQ recipe: fill ``default`` values while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(prop, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _extend_with_default(jsonschema.Draft202012Validator)


def _key_of(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_of(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = "" if key == "<top level>" else f" in section {key!r}"
        full = [f"{key}.{e}" if key != "<top level>" else e for e in extra]
        return f"unknown config key(s) {full}{where}; allowed: {allowed}"
    expected = error.schema.get("description", "")
    hint = f" ({expected})" if expected else ""
    return f"config key {key!r}: {error.message}{hint}"


def coerce_types(config: Mapping, schema: Mapping | None = None) -> dict:
    """Convert string values to the number / boolean / null their schema entry expects.

    Snakemake's ``--config 'sim={n: 64}'`` hands nested values over as strings; this makes
    them the same typed values a YAML file or ``--set`` gives. Other values are left alone
    (validation then reports them).
    """
    schema = _schema() if schema is None else schema
    out = dict(config)
    props = schema.get("properties", {})
    for key, value in out.items():
        sub = props.get(key)
        if sub is None:
            continue
        if isinstance(value, Mapping):
            out[key] = coerce_types(value, sub)
        elif isinstance(value, str):
            types = sub.get("type", [])
            types = [types] if isinstance(types, str) else types
            if "string" not in types and set(types) & {"integer", "number", "boolean", "null"}:
                parsed = _parse_value(value)
                if isinstance(parsed, float) and parsed.is_integer() and "integer" in types:
                    parsed = int(parsed)
                out[key] = parsed
    return out


def validate_config(config: Mapping) -> dict:
    """Validate ``config`` against the schema and return a copy with defaults filled in.

    Raises
    ------
    ConfigError
        Naming each bad key, its value and what was expected.
    """
    cfg = coerce_types(to_plain(config))
    validator = _DefaultFillingValidator(_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    _check_finite(cfg)
    _check_consistency(cfg)
    return cfg


def _check_finite(node, key: str = "") -> None:
    """Refuse NaN and infinite numbers anywhere in a config (YAML's .nan, .inf)."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            _check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list | tuple):
        for i, v in enumerate(node):
            _check_finite(v, f"{key}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"config key {key!r} is {node!r}; expected a finite number")


def _check_consistency(cfg: dict) -> None:
    """Cross-key rules a JSON schema cannot express."""
    gal = cfg["sim"]["galaxy"]
    if gal["sersic_n_min"] > gal["sersic_n_max"]:
        raise ConfigError(
            f"sim.galaxy.sersic_n_min ({gal['sersic_n_min']}) must not exceed "
            f"sim.galaxy.sersic_n_max ({gal['sersic_n_max']})"
        )
    if gal["hlr_min"] > gal["hlr_max"]:
        raise ConfigError(
            f"sim.galaxy.hlr_min ({gal['hlr_min']}) must not exceed sim.galaxy.hlr_max ({gal['hlr_max']})"
        )
    if gal["flux_min"] > gal["flux_max"]:
        raise ConfigError(
            f"sim.galaxy.flux_min ({gal['flux_min']}) must not exceed sim.galaxy.flux_max ({gal['flux_max']})"
        )
    pairs, group = cfg["sim"]["pairs"], _group_size(cfg)
    if cfg["sim"]["n"] % group:
        raise ConfigError(
            f"sim.n = {cfg['sim']['n']} must be a multiple of {group} "
            f"(rot90={pairs['rot90']}, shear_sign={pairs['shear_sign']} make groups of {group} stamps)"
        )



def _group_size(config: Mapping) -> int:
    """Stamps per galaxy group of the sims: 1, 2 or 4 (rot90 and +/-g twins)."""
    pairs = config["sim"]["pairs"]
    return (2 if pairs["rot90"] else 1) * (2 if pairs["shear_sign"] else 1)


def twin_enabled(config: Mapping) -> bool:
    """Whether the run makes and compares the paired twin target: ``compare.twin``, or with null
    (auto) when ``real.source`` is ``mock`` (the twin is the mock drawn on the sims' galaxies)."""
    twin = config["compare"]["twin"]
    return config["real"]["source"] == "mock" if twin is None else bool(twin)


def check_shards(config: Mapping) -> None:
    """Refuse ``shards`` above the number of galaxy groups of ``sim.n`` (the workflow would write
    empty shards); checked where the workflow is planned (the Snakefile)."""
    group = _group_size(config)
    n_groups = config["sim"]["n"] // group
    if config["shards"] > n_groups:
        raise ConfigError(
            f"shards = {config['shards']} exceeds the {n_groups} galaxy groups of sim.n = "
            f"{config['sim']['n']} (groups of {group} stamps are never split): some shards would be "
            f"empty; set shards <= {n_groups}")


def _parse_value(text: str):
    """Typed parsing of an override value: YAML scalars (``3``, ``0.5``, ``true``, ``null``).

    Numbers YAML 1.1 leaves as strings (``1e4``, ``.5e-3``) are read as floats.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(config: Mapping, overrides: Iterable[str]) -> dict:
    """Apply ``section.key=value`` overrides (values parsed as YAML) to a copy of ``config``."""
    cfg = to_plain(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override {item!r}: empty key in {dotted!r}")
        node = cfg
        for k in keys[:-1]:
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {k!r} is a value, not a section")
            node = child
        node[keys[-1]] = _parse_value(text)
    return cfg


def default_config() -> dict:
    """The schema's defaults alone (what an empty config file gives)."""
    return validate_config({})


def deep_merge(base: Mapping, over: Mapping) -> dict:
    """``over`` merged into a copy of ``base``, section by section (as Snakemake merges several
    ``--configfile``): a key of ``over`` replaces the value, a mapping merges into the mapping."""
    out = to_plain(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = to_plain(value)
    return out


def load_config(
    path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    overrides: Iterable[str] = (),
) -> RunConfig:
    """Read a YAML config (or start from defaults), apply overrides, validate, fill defaults.

    Returns the frozen `RunConfig` the stage functions take.

    Parameters
    ----------
    path : str or Path, or a sequence of them, optional
        YAML file; several are merged in order (`deep_merge`, e.g. the default run and a panel
        target, ``config/targets/*.yaml``); None starts from the schema defaults.
    overrides : iterable of str
        ``section.key=value`` items, applied after the file.
    """
    raw: dict = {}
    paths = [] if path is None else [path] if isinstance(path, str | os.PathLike) else list(path)
    for p in paths:
        raw = deep_merge(raw, read_yaml(p))
    cfg = apply_overrides(raw, overrides)
    try:
        return RunConfig.of(cfg)
    except ConfigError as err:
        where = f" (from {path})" if path is not None else ""
        raise ConfigError(f"{err}{where}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing a key that appears twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first at line "
                    f"{seen[key]}); each key may appear once per section")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike) -> dict:
    """The mapping in a YAML config file; ConfigError naming the file for anything unreadable
    (missing, a directory, not text, not YAML, duplicate keys, not a mapping)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a file (a directory?); give a YAML file")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.load(f, Loader=_UniqueKeyLoader) or {}
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason} at byte "
                          f"{err.start}); give a YAML file") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(raw).__name__}")
    return raw


def get(config: Mapping, dotted: str):
    """``get(cfg, "sim.noise.sigma")`` -> value; ConfigError naming the key if absent."""
    node = config
    for k in dotted.split("."):
        if not isinstance(node, Mapping) or k not in node:
            raise ConfigError(f"config key {dotted!r} is missing")
        node = node[k]
    return node


def to_json(config: Mapping) -> str:
    """Canonical JSON of a config (sorted keys), as stored in every output file."""
    return json.dumps(to_plain(config), sort_keys=True)


def to_plain(value):
    """A deep, mutable copy of ``value`` made of dicts and lists (a `RunConfig`, `FrozenMapping`
    and tuples become dicts and lists), e.g. for JSON or a checkpoint."""
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return copy.deepcopy(value)


def _freeze(value):
    if isinstance(value, Mapping):
        return FrozenMapping({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


class FrozenMapping(Mapping):
    """A read-only mapping (a config section); `to_plain` gives a mutable copy."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name, value):
        raise AttributeError(f"config sections are read-only; change {name!r} in the config file "
                             "or with --set, then load it again")

    def __deepcopy__(self, memo) -> FrozenMapping:
        return self  # immutable

    def __reduce__(self):
        return (_freeze, (to_plain(self),))

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"


@dataclass(frozen=True)
class RunConfig(Mapping):
    """The resolved run configuration (module docstring): validated, defaults filled, frozen.

    Build with `RunConfig.of` (or `load_config`). Read the top-level keys as typed attributes,
    sections as read-only mappings: ``cfg.seed``, ``cfg["train"]["steps"]``.

    Attributes
    ----------
    name : str
        Run name; outputs go to ``results/<name>/``.
    seed : int
        Master seed.
    shards : int
        Shards of simulate and refine.
    stamp_size : int
        Stamp side, pixels.
    pixel_scale : float
        arcsec per pixel.
    """

    name: str
    seed: int
    shards: int
    stamp_size: int
    pixel_scale: float
    _data: FrozenMapping = field(repr=False, compare=True)

    @classmethod
    def of(cls, config: Mapping) -> RunConfig:
        """``config`` itself if it is a `RunConfig`, else the validated, frozen copy of it."""
        if isinstance(config, RunConfig):
            return config
        cfg = validate_config(config)
        return cls(name=str(cfg["name"]), seed=int(cfg["seed"]), shards=int(cfg["shards"]),
                   stamp_size=int(cfg["stamp"]["size"]), pixel_scale=float(cfg["stamp"]["pixel_scale"]),
                   _data=_freeze(cfg))

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict:
        """A plain, mutable copy (dicts and lists), as stored in output files."""
        return to_plain(self._data)

    def with_overrides(self, overrides: Iterable[str]) -> RunConfig:
        """A new `RunConfig` with ``section.key=value`` overrides applied and validated."""
        return RunConfig.of(apply_overrides(self.to_dict(), overrides))
