"""The ``prepare-real`` stage: write the target ("real") stamp file of ``config['real']``.

``real.source`` picks the builder:

- ``mock`` (`refinegan.target.mock`): the sim population plus the effects sims miss, with known
  truth (the default; not real data);
- ``cosmos`` (`refinegan.target.cosmos`): GalSim RealGalaxyCatalog galaxies through the target PSF;
- ``fits`` (`refinegan.target.fits`) and ``hdf5`` (`refinegan.target.hdf5`): the user's own
  cutouts, through the shared cutout toolkit (`refinegan.target.cutouts`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..config import RunConfig
from ..errors import ConfigError

__all__ = ["prepare_real", "single_thread_blas"]


def prepare_real(config: RunConfig | dict, out: str | os.PathLike, progress: bool = False) -> Path:
    """Write the target stamp file of ``config['real']`` to ``out`` (domain ``real``).

    Parameters
    ----------
    config : RunConfig or dict
        Run configuration: a `RunConfig`, or a dict (validated once, defaults filled).
    out : str or Path
        Output stamp file, written atomically; nothing is written if the run fails.
    progress : bool
        Show a progress bar [default: False].

    Returns
    -------
    Path of the written file.
    """
    config = RunConfig.of(config)
    source = config["real"]["source"]
    if source == "mock":
        from .mock import prepare_mock as run
    elif source == "cosmos":
        from .cosmos import prepare_cosmos as run
    elif source == "fits":
        from .fits import prepare_fits as run
    elif source == "hdf5":
        from .hdf5 import prepare_hdf5 as run
    else:  # pragma: no cover - the schema's enum refuses it first
        raise ConfigError(f"real.source must be mock, cosmos, fits or hdf5, got {source!r}")
    with single_thread_blas():
        return run(config, out, progress=progress)


def single_thread_blas():
    """One BLAS thread while the stage runs (restored after).

    The per-stamp matrix products (mock knots, 144 x 20 x 73 complex) are far too small for
    threads: multi-threaded OpenBLAS made a 2-core run 3x slower (6.4 s -> 18.4 s wall for 1024
    mock stamps). The stage is parallel across processes, not threads.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
