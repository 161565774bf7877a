"""Checkpoints: atomic torch files, loaded with ``weights_only=True``.

Two kinds of file live in a training directory:

- ``checkpoint.pt``: the whole training state (R, D, optimizers, EMA, RNG states, history buffer,
  step, log rows) so ``train(..., resume=True)`` continues the same run;
- ``refiner.pt``: the model ``refine`` uses: R's weights (EMA weights when enabled), its
  architecture, the `Normalization`, pixel scale, stamp shape and noise levels it was trained at,
  and the config.

Both hold only tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
reads them (no pickled code runs on load).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import ContractError, TrainingError

__all__ = ["MODEL_FORMAT", "MODEL_VERSION", "atomic_save", "load_file", "load_model"]

MODEL_FORMAT = "refinegan-refiner"
MODEL_VERSION = 1
MODEL_KEYS = ("format", "version", "arch", "state_dict", "normalization", "pixel_scale",
              "stamp_shape", "sim_sigma_median", "real_sigma_median", "config")


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
    except Exception as err:  # unpickling errors come in many types
        raise error(f"{path}: not a readable refinegan checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise error(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def load_model(path: str | os.PathLike, device="cpu"):
    """Load ``refiner.pt``: returns ``(module in eval mode, info dict without the weights)``.

    Raises
    ------
    ContractError
        If the file is not a refinegan refiner of a supported version, or its weights do not
        fit the stored architecture.
    """
    from .model import build_refiner

    obj = load_file(path, ContractError)
    if obj.get("format") != MODEL_FORMAT:
        raise ContractError(f"{path}: not a refinegan refiner (format {obj.get('format')!r}, "
                            f"expected {MODEL_FORMAT!r}); pass refiner.pt, not checkpoint.pt")
    if obj.get("version") != MODEL_VERSION:
        raise ContractError(f"{path}: refiner file version {obj.get('version')!r}, this refinegan "
                            f"reads {MODEL_VERSION}")
    missing = [k for k in MODEL_KEYS if k not in obj]
    if missing:
        raise ContractError(f"{path}: refiner file lacks {missing}")
    module = build_refiner(obj["arch"])
    try:
        module.load_state_dict(obj["state_dict"])
    except RuntimeError as err:
        raise ContractError(f"{path}: weights do not match architecture {obj['arch']}: {err}") from None
    module.eval().requires_grad_(False).to(device)
    info = {k: v for k, v in obj.items() if k != "state_dict"}
    return module, info
