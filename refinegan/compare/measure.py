"""Per-image measurements of a stamp set (`Measurement`), and the galaxy-group bookkeeping
compare subsamples with."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..io import StampSet
from .params import CompareParams
from .stats import image_stats

__all__ = ["Measurement", "truncate", "measure", "groups_of", "group_label", "pick_groups",
           "GROUP_LABELS"]

# Labels naming a stamp's galaxy group, first found wins: ``group_id`` (copies of one user
# cutout, real.fits / real.hdf5 ``augment`` or ``group_dataset``), ``cat_index`` (cosmos: one
# catalog galaxy drawn in many rot90 / +-g groups, so it comes before their ``pair_id``),
# ``pair_id`` (sims and mock: rotated and +/-g twins of one galaxy).
GROUP_LABELS = ("group_id", "cat_index", "pair_id")


@dataclass(frozen=True)
class Measurement:
    """Per-image statistics of one domain's stamp set (N stamps).

    Attributes
    ----------
    scalars : dict of str -> ndarray (N,)
        The `refinegan.compare.params.SCALAR_STATS` and the HSM extras (``hsm_dx``, ``hsm_dy``)
        and ``flags`` (`refinegan.compare.stats` FLAG_* bits); units in docs/compare.md.
    power : ndarray (N, K)
        Noise power spectrum per stamp in K annuli of |k|, counts^2.
    acf : ndarray (N, 2L+1, 2L+1)
        Noise autocorrelation per stamp for lags -L..L (dimensionless, 1 at lag 0).
    morph : dict of str -> ndarray (M,), optional
        statmorph statistics (`refinegan.compare.params.MORPH_STATS`, ``morph_flag``, ...) of
        the M-stamp subsample ``morph_index`` [default: None, morphology not measured].
    morph_index : ndarray (M,) of int, optional
        Sorted stamp indices the morphology was measured on [default: None].
    """

    scalars: dict[str, np.ndarray]
    power: np.ndarray
    acf: np.ndarray
    morph: dict[str, np.ndarray] | None = None
    morph_index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.power)

    @property
    def has_morph(self) -> bool:
        """Whether the statmorph statistics were measured (on ``morph_index``)."""
        return self.morph is not None

    def values(self, name: str) -> np.ndarray:
        """Float values of a scalar (N,) or statmorph (M,) statistic ``name``."""
        if name in self.scalars:
            return np.asarray(self.scalars[name], float)
        if self.morph is None:
            raise KeyError(f"statistic {name!r} was not measured (morphology not run)")
        return np.asarray(self.morph[name], float)

    def with_morphology(self, morph: dict[str, np.ndarray], index: np.ndarray) -> Measurement:
        """A copy with the statmorph statistics ``morph`` of the stamps ``index`` (M,)."""
        return replace(self, morph=morph, morph_index=index)


def truncate(s: StampSet, n_max: int | None) -> StampSet:
    """First ``n_max`` stamps, cut back to whole galaxy groups."""
    if n_max is None or n_max >= len(s):
        return s
    k = n_max
    label = group_label(s)
    pair = s.labels[label] if label is not None else None
    if pair is not None:
        while 0 < k < len(s) and pair[k - 1] == pair[k]:
            k -= 1
    psf = s.psf[:k] if s.psf is not None and s.psf.ndim == 3 else s.psf
    mask = s.mask[:k] if s.mask is not None else None
    return StampSet(s.images[:k], {n: v[:k] for n, v in s.labels.items()}, psf, mask, s.attrs,
                    s.units)


def measure(s: StampSet, p: CompareParams, progress: bool = False, desc: str = "") -> Measurement:
    """Per-image statistics of a whole set, in chunks of ``p.chunk_stamps`` stamps.

    Parameters
    ----------
    s : StampSet
        N stamps (N, H, W) in counts; its ``mask`` (non-zero = bad pixel) is honoured.
    p : CompareParams
        Source mask, power-spectrum bins and ACF lags.
    progress : bool
        Show a tqdm bar [default: False].
    desc : str
        The bar's label [default: ""].

    Returns
    -------
    Measurement
        Scalars (N,), power (N, K), acf (N, 2L+1, 2L+1); no morphology.
    """
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
    return Measurement(scalars, np.concatenate(powers), np.concatenate(acfs))


def group_label(s: StampSet) -> str | None:
    """The label holding the set's galaxy groups (`GROUP_LABELS`), or None (each stamp its own)."""
    return next((name for name in GROUP_LABELS if name in s.labels), None)


def groups_of(s: StampSet) -> np.ndarray:
    """Galaxy group of each stamp (N,): its `group_label`, or the stamp index without one.

    Copies of one galaxy share a group, so splits, subsamples and bootstraps keep them together.
    """
    label = group_label(s)
    return np.asarray(s.labels[label]) if label is not None else np.arange(len(s))


def pick_groups(groups: np.ndarray, n_max: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ~n_max stamps made of whole random groups.

    All stamps when there are at most ``n_max`` (``rng`` untouched); otherwise one
    ``rng.choice`` of ``n_max / (stamps per group)`` groups.
    """
    if len(groups) <= n_max:
        return np.arange(len(groups))
    uniq = np.unique(groups)
    per = len(groups) / len(uniq)
    chosen = rng.choice(uniq, max(1, int(n_max / per)), replace=False)
    return np.flatnonzero(np.isin(groups, chosen))
