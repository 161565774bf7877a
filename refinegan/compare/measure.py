"""Per-image measurements of a stamp set, and the galaxy-group bookkeeping compare subsamples with."""

from __future__ import annotations

import numpy as np

from ..io import StampSet
from .params import CompareParams
from .stats import image_stats

__all__ = ["truncate", "measure", "groups_of", "pick_groups"]


def truncate(s: StampSet, n_max: int | None) -> StampSet:
    """First ``n_max`` stamps, cut back to whole galaxy groups."""
    if n_max is None or n_max >= len(s):
        return s
    k = n_max
    pair = s.labels.get("pair_id")
    if pair is not None:
        while 0 < k < len(s) and pair[k - 1] == pair[k]:
            k -= 1
    psf = s.psf[:k] if s.psf is not None and s.psf.ndim == 3 else s.psf
    mask = s.mask[:k] if s.mask is not None else None
    return StampSet(s.images[:k], {n: v[:k] for n, v in s.labels.items()}, psf, mask, s.attrs)


def measure(s: StampSet, p: CompareParams, progress: bool = False, desc: str = "") -> dict:
    """Per-image statistics of a whole set, in chunks. Returns scalars, power (N, K), acf."""
    from tqdm import tqdm

    parts, powers, acfs = [], [], []
    for start in tqdm(range(0, len(s), p.chunk_stamps), disable=not progress, desc=desc, leave=False):
        sl = slice(start, min(start + p.chunk_stamps, len(s)))
        bad = s.mask[sl] != 0 if s.mask is not None else None
        sc, pw, ac = image_stats(s.images[sl], bad, p.mask, ps_bins=p.power_spectrum_bins,
                                 acf_lag=p.acf_max_lag)
        parts.append(sc)
        powers.append(pw)
        acfs.append(ac)
    scalars = {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}
    return {"scalars": scalars, "power": np.concatenate(powers), "acf": np.concatenate(acfs)}


def groups_of(s: StampSet) -> np.ndarray:
    return np.asarray(s.labels["pair_id"]) if "pair_id" in s.labels else np.arange(len(s))


def pick_groups(groups: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ~n_max stamps made of whole random groups."""
    if len(groups) <= n_max:
        return np.arange(len(groups))
    uniq = np.unique(groups)
    per = len(groups) / len(uniq)
    chosen = rng.choice(uniq, max(1, int(n_max / per)), replace=False)
    return np.flatnonzero(np.isin(groups, chosen))
