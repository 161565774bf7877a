"""The paired twin target: the mock's effects, PSF and noise drawn on the sims' own galaxies.

For evaluation only (training keeps the independent mock of `refinegan.target.mock`). The twin
has the sims' galaxies exactly: the same groups (``pair_id``), stamp ids, intrinsic shapes,
sizes, fluxes, Sersic indices, applied shears, 90-degree rotations and +/-g twins (the
population parameters are drawn as `refinegan.sim.simulate` draws them: `sample_population` on
stream ``sim`` with the master seed, the layout of ``sim.pairs``, all ``sim.n`` stamps in one
file). On top come the mock's effects (``real.mock``: knots, bulge, neighbours, cosmic rays, hot
pixels; their draws on the mock's ``mock_effects`` streams keyed by the group id, so they are
deterministic), the target PSF (``real.psf``) and the target noise (``real.noise``) from its own
stream ``twin_noise``: never the sims' noise, nor the mock's.

compare (``--twin``) then measures m_refined - m_twin paired over the same galaxy groups with
the same bootstrap draws: the galaxies' shape noise cancels, and what is left is the difference
the target's effects make to the estimator's response (docs/compare.md).

The file is a ``real``-domain stamp file (the data contract's domains are fixed) with the file
attributes ``is_twin: True`` and ``is_mock: True``; its labels are the mock's (the sims' columns
plus the effect labels), with ``psf_fwhm``, ``noise_sigma`` and ``snr`` the target's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..errors import ConfigError
from ..sim.population import sample_population
from .mock import MockParams, mock_groups, write_mock_file
from .prepare_real import single_thread_blas

__all__ = ["twin_params", "prepare_twin", "COPIED_LABELS"]

logger = logging.getLogger(__name__)

# Labels the twin copies from the sims' population exactly (plus bulge_frac / cosmos_index where
# the population has them); psf_fwhm, noise_sigma and snr are the target's own.
COPIED_LABELS = ("id", "pair_id", "rot90", "shear_sign", "g1", "g2", "e1_int", "e2_int", "flux",
                 "hlr", "sersic_n")
TWIN_NOISE_STREAM = "twin_noise"


def twin_params(config: Mapping) -> MockParams:
    """The mock's parameters with the sims' size and pairs (``sim.n``, ``sim.pairs``)."""
    base = MockParams.from_config(config)
    pairs = config["sim"]["pairs"]
    return dataclasses.replace(base, n=config["sim"]["n"], rot90=bool(pairs["rot90"]),
                               shear_sign=bool(pairs["shear_sign"]))


def prepare_twin(config: RunConfig | dict, out: str | os.PathLike, progress: bool = False,
                 method: str = "kspace", shear_scale: float = 1.0) -> Path:
    """Write the paired twin of the sims (see the module docstring) to ``out``.

    Parameters
    ----------
    config : RunConfig or dict
        Run configuration: a `RunConfig`, or a dict (validated once, defaults filled).
    out : str or Path
        Output stamp file, domain ``real`` with ``is_twin``, written atomically.
    progress : bool
        Show a progress bar [default: False].
    method : {'kspace', 'galsim'}
        Renderer, as in refinegan.sim.simulate.simulate [default: 'kspace'].
    shear_scale : float
        Draw the galaxies with ``shear_scale * g`` and label them ``g``: a known multiplicative
        bias m = shear_scale - 1 injected into the twin, for tests [default: 1, none].

    Returns
    -------
    Path of the written file.
    """
    config = RunConfig.of(config)
    if not (np.isfinite(shear_scale) and shear_scale > 0):
        raise ConfigError(f"shear_scale must be a positive number, got {shear_scale!r}")
    with single_thread_blas():
        return _write_twin(config, Path(out), progress, method, float(shear_scale))


def _write_twin(config: RunConfig, out: Path, progress: bool, method: str,
                shear_scale: float) -> Path:
    p = twin_params(config)
    k = len(p.layout)

    def draw(pop, renderer, batch, fwhm):
        params = sample_population(pop, config.seed, batch, stream="sim")  # the sims' galaxies
        drawn = params
        if shear_scale != 1.0:
            drawn = {**params, "g1": params["g1"] * shear_scale, "g2": params["g2"] * shear_scale}
        images, mask, labels = mock_groups(p, pop, renderer, batch, fwhm, params=drawn,
                                           noise_stream=TWIN_NOISE_STREAM)
        if drawn is not params:  # label the true shear g, as the sims do
            for name in ("g1", "g2"):
                labels[name] = np.repeat(params[name], k) * labels["shear_sign"]
        return images, mask, labels

    return write_mock_file(config, p, out, progress, method, draw, "paired twin target",
                           "the sims' galaxies with the mock's effects", "prepare-twin",
                           {"is_twin": True, "shear_scale": shear_scale})
