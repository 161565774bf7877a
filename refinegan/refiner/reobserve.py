"""The sims re-observed by physics before R: through the target's PSF (`psf_match`), then with
the target's Gaussian noise (`noise_match`), in training and in refine alike.

With noise matching, sims whose noise is known (files of ``refinegan simulate``: their attribute
``noise_fields`` says the noise is `refinegan.seeds.sim_noise_fields` of their labels and
seed) have it taken out and the target's whole noise put in its place (`remove_sim_noise`): any
target noise can then be matched from sims of any noise level, and the PSF matching acts on
noiseless stamps (no whitening noise). Other sims keep their white noise and get the difference
spectrum added, which `NoiseMatch.check` refuses where the target has less power than they do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..seeds import NOISE_FIELDS, NOISE_FIELDS_ATTR
from .noise_match import NoiseMatch, remove_sim_noise
from .psf_match import PsfMatch

__all__ = ["Reobserve", "known_noise_seed", "CHUNK_STAMPS"]

CHUNK_STAMPS = 1024  # stamps re-observed at once (`Reobserve.apply`): ~0.5 GB of temporaries


def known_noise_seed(attrs: Mapping) -> int | None:
    """The seed of a sims file's own noise fields when they can be taken out again, else None."""
    return int(attrs["seed"]) if attrs.get(NOISE_FIELDS_ATTR) == NOISE_FIELDS else None


@dataclass(frozen=True)
class Reobserve:
    """PSF matching, then noise matching; ``sim_seed`` not None: the sims' own noise (drawn with
    that seed) is replaced by the target's rather than added to."""

    match: PsfMatch | None = None
    noise: NoiseMatch | None = None
    sim_seed: int | None = None
    where: str = "the sims"

    @property
    def replaces_noise(self) -> bool:
        return self.noise is not None and self.sim_seed is not None

    def apply(self, images: np.ndarray, sigma: np.ndarray, labels: Mapping,
              offset: int = 0, chunk: int = CHUNK_STAMPS) -> tuple[np.ndarray, np.ndarray]:
        """Re-observed stamps (N, H, W) float32 from sims in counts with white noise sigma (N,),
        and the noise sigma they carry afterwards (N,) float64: the sims' own, or with noise
        matching the target's.

        Worked in blocks of ``chunk`` stamps (labels sliced alike, ``offset`` advanced), so the
        matchings' float64 / complex temporaries (the noise fields are drawn on the padded
        (2H, 2W) grid: 150 kB a stamp of 48 x 48) stay bounded: all 65,536 stamps of a
        campaign fraction at once took more than 24 GB. Every stamp's result depends only on
        its own pixels and labels, so the blocks give the same bytes as one pass
        (tests/test_reobserve.py)."""
        images = np.asarray(images)
        sigma = np.asarray(sigma, dtype=np.float64)
        n = images.shape[0]
        out = np.empty(images.shape, dtype=np.float32)
        sigma_out = np.empty(sigma.shape, dtype=np.float64)
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            sub = {k: np.asarray(v)[sl] for k, v in labels.items()}
            out[sl], sigma_out[sl] = self._apply(images[sl], sigma[sl], sub, offset + start)
        return out, sigma_out

    def _apply(self, images: np.ndarray, sigma: np.ndarray, labels: Mapping,
               offset: int) -> tuple[np.ndarray, np.ndarray]:
        """`apply` on one block."""
        if self.replaces_noise:
            images = remove_sim_noise(images, labels, self.sim_seed, self.where)
            sigma = np.zeros_like(sigma)
        if self.match is not None:
            images = self.match.apply(images, sigma, labels, offset)
        if self.noise is not None:
            images = self.noise.apply(images, sigma, labels, offset)
            sigma = np.full(sigma.shape, self.noise.sigma)
        return np.asarray(images, dtype=np.float32), sigma
