"""Checkpoints: atomic torch files, loaded with ``weights_only=True``.

Two kinds of file live in a training directory, each a dataclass whose fields are its keys:

- ``checkpoint.pt`` (`TrainCheckpoint`): the whole training state (R, D, optimizers, EMA, RNG
  states, history buffer, step), the log rows and the settings a resume must match, so
  ``train(..., resume=True)`` continues the same run;
- ``refiner.pt`` (`RefinerFile`): the model ``refine`` uses: R's weights (EMA weights when
  enabled), its architecture, the `Normalization`, pixel scale, stamp shape and noise levels it
  was trained at, the config and the provenance.

Both hold only tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
reads them (no pickled code runs on load).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import ContractError, TrainingError
from .model import build_refiner

__all__ = ["MODEL_FORMAT", "MODEL_VERSION", "RefinerFile", "TrainCheckpoint", "atomic_save",
           "load_file", "load_model"]

MODEL_FORMAT = "refinegan-refiner"
MODEL_VERSION = 1


def atomic_save(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` written atomically (`refinegan.atomic`): a file that exists is complete.

    The archive is serialised in memory first, so its bytes do not depend on the file's name
    (``torch.save`` to a path names the archive's records after it).
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)


def load_file(path: str | os.PathLike, error=TrainingError) -> dict:
    """``torch.load(path, weights_only=True, map_location='cpu')``; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's message advises weights_only=False: never
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if not found:  # not a pickle of objects at all: garbage or a truncated file
            raise error(f"{path}: not a readable refinegan checkpoint (not a torch file of "
                        "tensors, numbers, strings, lists and dicts)") from None
        what = f" (it holds {found.group(1)})" if found else ""
        raise error(f"{path}: refused: not a refinegan checkpoint{what}; refinegan loads only "
                    "tensors, numbers, strings, lists and dicts, so no code in a file can run "
                    "(write the file with refinegan train)") from None
    except Exception as err:  # a truncated or foreign file: zip, EOF and OS errors
        raise error(f"{path}: not a readable refinegan checkpoint ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


@dataclasses.dataclass(kw_only=True)
class RefinerFile:
    """``refiner.pt``: the model `refinegan.refiner.refine` uses, one field per key of the file.

    `write` stores the fields in this order; `read` validates the format, version and keys. The
    last five fields are provenance: files without them read as None.

    Attributes
    ----------
    format : str
        `MODEL_FORMAT` [default].
    version : int
        `MODEL_VERSION` [default].
    arch : dict
        R's architecture (`refinegan.refiner.settings.TrainSettings.arch`).
    state_dict : dict of str to torch.Tensor
        R's weights (EMA weights when enabled), float32 on the CPU.
    normalization : dict
        The `refinegan.refiner.normalize.Normalization` (``to_dict``).
    pixel_scale : float
        Pixel scale the model was trained at, in arcsec / pixel.
    stamp_shape : list of int
        (H, W) of the training stamps, in pixels.
    sim_sigma_median, real_sigma_median : float
        Median noise sigma of the training sims and of the target, in counts.
    config : dict
        The resolved run config (`refinegan.config.RunConfig.to_dict`).
    step : int or None
        Global steps trained.
    versions : dict or None
        Package versions (`refinegan.io.package_versions`).
    sim_files : list of str or None
        The sim stamp files trained on.
    real_file : str or None
        The target stamp file.
    psf_match : dict or None
        The PSF matching kernel, with its residual and the bound it was accepted under
        (`refinegan.refiner.psf_match.PsfMatch.to_dict`); None without.
    noise_match : dict or None
        The noise matching (`refinegan.refiner.noise_match.NoiseMatch.to_dict`); None without.
    """

    format: str = MODEL_FORMAT
    version: int = MODEL_VERSION
    arch: dict
    state_dict: dict
    normalization: dict
    pixel_scale: float
    stamp_shape: list
    sim_sigma_median: float
    real_sigma_median: float
    config: dict
    step: int | None = None
    versions: dict | None = None
    sim_files: list | None = None
    real_file: str | None = None
    psf_match: dict | None = None
    noise_match: dict | None = None

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The file's keys, in the order `write` stores them."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        """The keys a file must hold (the fields without a default, and format and version)."""
        return tuple(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING or f.name in ("format", "version"))

    def to_dict(self) -> dict:
        """The fields as the file's dict (shallow: the tensors are not copied)."""
        return {name: getattr(self, name) for name in self.keys()}

    def info(self) -> dict:
        """Every field but the weights (what `load_model` returns next to the module)."""
        return {k: v for k, v in self.to_dict().items() if k != "state_dict"}

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``path`` atomically (`atomic_save`)."""
        return atomic_save(self.to_dict(), path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> RefinerFile:
        """Read and check ``refiner.pt`` (``weights_only=True``).

        Raises
        ------
        ContractError
            If the file is missing or unreadable, not a refinegan refiner, of another version, or
            lacks a required key (the message names the file).
        """
        obj = load_file(path, ContractError)
        if obj.get("format") != MODEL_FORMAT:
            raise ContractError(f"{path}: not a refinegan refiner (format {obj.get('format')!r}, "
                                f"expected {MODEL_FORMAT!r}); pass refiner.pt, not checkpoint.pt")
        if obj.get("version") != MODEL_VERSION:
            raise ContractError(f"{path}: refiner file version {obj.get('version')!r}, this refinegan "
                                f"reads {MODEL_VERSION}")
        missing = [k for k in cls.required_keys() if k not in obj]
        if missing:
            raise ContractError(f"{path}: refiner file lacks {missing}")
        return cls(**{k: obj[k] for k in cls.keys() if k in obj})

    def build(self, device="cpu", where: str | os.PathLike = "refiner.pt"):
        """R with these weights, in eval mode and without gradients, on ``device``.

        Raises
        ------
        ContractError
            If the weights do not fit `arch` (the message names ``where``).
        """
        module = build_refiner(self.arch)
        try:
            module.load_state_dict(self.state_dict)
        except RuntimeError as err:
            raise ContractError(f"{where}: weights do not match architecture {self.arch}: {err}") from None
        return module.eval().requires_grad_(False).to(device)


def load_model(path: str | os.PathLike, device="cpu"):
    """Load ``refiner.pt``: returns ``(module in eval mode, info dict without the weights)``.

    Raises
    ------
    ContractError
        If the file is not a refinegan refiner of a supported version, or its weights do not
        fit the stored architecture.
    """
    model = RefinerFile.read(path)
    return model.build(device, path), model.info()


@dataclasses.dataclass
class TrainCheckpoint:
    """``checkpoint.pt``: the whole training state, one field per key of the file.

    Attributes
    ----------
    trainer : dict
        `refinegan.refiner.trainer.Trainer.state_dict` (networks, optimizers, EMA, generator
        states, history buffer, step).
    log_rows : torch.Tensor
        (n, len(LOG_COLUMNS)) float64: the train_log.h5 rows of the steps done.
    arch_settings : dict
        `refinegan.refiner.settings.TrainSettings.resume_settings` of the run.
    """

    trainer: dict
    log_rows: torch.Tensor
    arch_settings: dict

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The file's keys, in the order `write` stores them."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def write(self, path: str | os.PathLike) -> Path:
        """Write ``path`` atomically (`atomic_save`)."""
        return atomic_save({name: getattr(self, name) for name in self.keys()}, path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> TrainCheckpoint:
        """Read ``checkpoint.pt`` (``weights_only=True``).

        Raises
        ------
        TrainingError
            If the file is missing, unreadable or lacks a key (the message names the file).
        """
        obj = load_file(path)
        missing = [k for k in cls.keys() if k not in obj]
        if missing:
            raise TrainingError(f"{path}: checkpoint file lacks {missing}")
        return cls(**{k: obj[k] for k in cls.keys()})
