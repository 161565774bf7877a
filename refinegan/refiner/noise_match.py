"""Noise matching: give the sims the target's Gaussian noise, by physics, as PSF matching gives them
its PSF.

The sims carry white Gaussian noise of sigma ``s`` counts per pixel (after PSF matching too,
which puts back the white noise it filters away, `refinegan.refiner.psf_match`). The target's
noise is measured as its autocovariance ``C(dy, dx)`` at every lag of the stamp, on its sky pixels
(`target_noise_covariance`: outside each stamp's source mask, `refinegan.noise.sky_mask`, pairs
counted, so the estimate is unbiased at every lag), tapered beyond a quarter of the stamp
(`_lag_taper`). Its transform on
the zero-padded (2H, 2W) grid is the target's power spectrum ``P_t(k)``. Where ``P_t(k) >= s^2``
everywhere, a Gaussian field of spectrum ``P_t(k) - s^2`` drawn on that grid and cut to the stamp
(so it does not wrap around) added to each sim gives it the target's noise covariance at every
lag: its level and correlations are the target's, and the shear label stays true (the galaxy is
untouched). Where ``P_t(k) < s^2`` somewhere, no addition can match: the sims must be drawn with
less noise, and `NoiseMatch.check` says how much (``sim.noise.sigma``).

The added field is drawn per sim noise realisation (`refinegan.seeds.realisation_normals`,
stream ``noise_match``): +g / -g twins of one orientation share it, as they share the sim noise,
so shear pairs still cancel the noise; training and refine draw the same numbers for the same
stamp, in any chunking.

Units: covariance and power in counts^2; ``P(k)`` per Fourier mode of numpy's unnormalised FFT
(white noise of variance ``s^2`` has ``P(k) = s^2``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ContractError, TrainingError
from ..seeds import realisation_normals, sim_noise_fields, stream_sequence
from .noise_spread import build_bank, noise_sky, spread_stats

__all__ = ["NoiseMatch", "target_noise_covariance", "build_noise_match", "remove_sim_noise",
           "FEASIBLE_RTOL", "REMOVED_NOISE_MAX"]

FEASIBLE_RTOL = 0.02  # P_t may dip this fraction below the sims' s^2 (its own sampling scatter)


def target_noise_covariance(images: np.ndarray, border_px: int = 4, bad: np.ndarray | None = None,
                            chunk: int = 256) -> np.ndarray:
    """The noise autocovariance of stamps (N, H, W) in counts on their sky pixels, counts^2,
    at every lag of the stamp: (2H, 2W) in circular (FFT) layout, lag (dy, dx) at [dy % 2H, dx % 2W].

    Each stamp's sky pixels (`refinegan.noise.sky_mask`; the border frame when too few) minus
    their mean, zero elsewhere, zero-padded to (2H, 2W): the sum of products over pixel pairs at
    each lag (``ifft2 |fft2|^2``) over all stamps, divided by the number of sky-pixel pairs at that
    lag. Unbiased at every lag (no wrap-around pairs), unlike a periodogram of the stamp.
    """
    x = np.asarray(images, dtype=np.float64)
    n, h, w = x.shape
    num = np.zeros((2 * h, 2 * w))
    pairs = np.zeros((2 * h, 2 * w))
    for start in range(0, n, chunk):
        block = x[start:start + chunk]
        wt = noise_sky(block, border_px, None if bad is None else bad[start:start + chunk]
                       ).astype(np.float64)
        mean = (block * wt).sum(axis=(1, 2)) / wt.sum(axis=(1, 2))
        d = (block - mean[:, None, None]) * wt
        fd = np.fft.rfft2(d, s=(2 * h, 2 * w))
        fw = np.fft.rfft2(wt, s=(2 * h, 2 * w))
        num += np.fft.irfft2((fd.real**2 + fd.imag**2).sum(axis=0), s=(2 * h, 2 * w))
        pairs += np.fft.irfft2((fw.real**2 + fw.imag**2).sum(axis=0), s=(2 * h, 2 * w))
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = np.where(pairs > 0.5, num / np.maximum(pairs, 1.0), 0.0)
    # Subtracting each stamp's own mean lowers the covariance at every lag by about the variance
    # of that mean (sum_lags of the sample covariance is 0): measure the offset where short-range
    # noise has none (lags of a quarter to half the stamp) and put it back.
    far = _lag_fraction(cov.shape)
    cov -= np.median(cov[(far >= 0.25) & (far <= 0.5)])
    return cov


def _lag_fraction(shape: tuple[int, int]) -> np.ndarray:
    """max(|dy| / H, |dx| / W) on the (2H, 2W) circular lag grid."""
    fy = np.abs(np.fft.fftfreq(shape[0]) * shape[0]) / (shape[0] / 2)
    fx = np.abs(np.fft.fftfreq(shape[1]) * shape[1]) / (shape[1] / 2)
    return np.maximum(fy[:, None], fx[None, :])


LAG_FLAT, LAG_ZERO = 0.25, 0.5  # the taper: 1 to a quarter of the stamp, 0 from half of it on


def _lag_taper(shape: tuple[int, int], flat: float = LAG_FLAT, zero: float = LAG_ZERO) -> np.ndarray:
    """A window on the (2H, 2W) lag grid: 1 out to ``flat`` of the stamp size, a cosine to 0 at
    ``zero`` of it, 0 beyond (a Tukey window). Coadd and resampling noise is correlated over a few
    pixels; the far lags hold only the estimate's own noise, which would otherwise spread over
    every Fourier mode and make the weakest ones negative."""
    out = np.ones(shape)
    for axis, m in enumerate(shape):
        lag = np.abs(np.fft.fftfreq(m) * m) / (m / 2)  # |lag| / stamp size, 0 .. 1
        t = np.clip((lag - flat) / (zero - flat), 0, 1)
        win = 0.5 * (1 + np.cos(np.pi * t))
        out *= win.reshape((-1, 1) if axis == 0 else (1, -1))
    return out


@dataclass(frozen=True)
class NoiseMatch:
    """The target's noise covariance at every lag of the stamp (2H, 2W), counts^2, and the seed
    of the added fields (module docstring)."""

    covariance: np.ndarray  # (2H, 2W) float64, circular layout, tapered
    seed: int
    # The target's stamp-to-stamp spread (`refinegan.refiner.noise_spread`): K covariances like
    # ``covariance`` and their probabilities; each noise realisation draws one. None: stationary.
    bank: np.ndarray | None = None  # (K, 2H, 2W)
    bank_p: np.ndarray | None = None  # (K,)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the stamps it matches."""
        return self.covariance.shape[0] // 2, self.covariance.shape[1] // 2

    @property
    def sigma(self) -> float:
        """The target's noise sigma (counts): what matched stamps carry."""
        return float(np.sqrt(self.covariance[0, 0]))

    @property
    def power(self) -> np.ndarray:
        """The target's noise power spectrum on the padded (2H, 2W) grid, counts^2 per mode."""
        return np.fft.fft2(self.covariance).real

    def required_sim_sigma(self) -> float:
        """The largest white sim noise sigma (counts) the target's spectrum can be matched from."""
        return float(np.sqrt(max(self.power.min(), 0.0) / (1.0 + FEASIBLE_RTOL)))

    def check(self, sigma: np.ndarray, where: str = "the sims") -> None:
        """Refuse sims whose white noise (sigma per stamp, counts) exceeds the target's power
        somewhere: name both sides and the setting to change."""
        s_max = float(np.max(sigma))
        power = self.power
        floor = float(power.min())
        if s_max**2 * (1.0 + FEASIBLE_RTOL) > floor:
            ky, kx = np.unravel_index(int(np.argmin(power)), power.shape)
            freq = (np.fft.fftfreq(power.shape[0])[ky], np.fft.fftfreq(power.shape[1])[kx])
            raise TrainingError(
                f"noise matching is impossible: the target's noise power falls to {floor:.4g} "
                f"counts^2 at k = ({freq[0]:+.3f}, {freq[1]:+.3f}) cycles/pixel, below {where}' white "
                f"noise power {s_max**2:.4g} (sigma {s_max:.4g} counts); draw the sims with less "
                f"noise, sim.noise.sigma <= {self.required_sim_sigma():.4g}, or set "
                f"train.noise_match=false")

    def apply(self, images: np.ndarray, sigma: np.ndarray, labels: Mapping,
              offset: int = 0) -> np.ndarray:
        """Sims (N, H, W) counts with white noise sigma (N,) re-observed with the target's noise:
        plus a Gaussian field with the difference spectrum ``power - sigma^2``, drawn on the
        padded grid and cut to the stamp (so it does not wrap), one per noise realisation."""
        images = np.asarray(images, dtype=np.float64)
        n = images.shape[0]
        if n == 0:
            return images.astype(np.float32)
        h, w = self.shape
        if images.shape[1:] != (h, w):
            raise TrainingError(f"noise matching was built for stamps {(h, w)}, got "
                                f"{images.shape[1:]}")
        white = realisation_normals(labels, n, self.covariance.shape, self.seed, "noise_match",
                                    offset)
        classes = None
        if self.bank is not None:  # one class per noise realisation, twins alike
            u = realisation_normals(labels, n, (1,), self.seed, "noise_match_class", offset)[:, 0]
            classes = self.classes_of(u)
        return (images + self.fields(white, sigma, classes)).astype(np.float32)

    def classes_of(self, z: np.ndarray) -> np.ndarray:
        """Bank classes (N,) int of standard normal draws z (N,), with probabilities ``bank_p``."""
        from scipy.special import ndtr

        edges = np.cumsum(self.bank_p)[:-1] / np.sum(self.bank_p)
        return np.searchsorted(edges, ndtr(np.asarray(z, dtype=np.float64)), side="right")

    def fields(self, white: np.ndarray, sigma: np.ndarray | float = 0.0,
               classes: np.ndarray | None = None) -> np.ndarray:
        """Gaussian fields (N, H, W) of spectrum ``power - sigma^2`` (or the bank's class
        ``classes`` (N,) power) from standard normals (N, 2H, 2W) on the padded grid, cut to the
        stamp (so they do not wrap)."""
        h, w = self.shape
        s2 = np.asarray(sigma, dtype=np.float64).reshape(-1, 1, 1) ** 2
        if classes is None:
            power = self.power[None]
        else:
            power = np.fft.fft2(self.bank).real[np.asarray(classes)]  # (N, 2H, 2W)
        amp = np.sqrt(np.clip(power - s2, 0.0, None))  # (N or 1, 2H, 2W)
        return np.fft.ifft2(np.fft.fft2(white) * amp).real[:, :h, :w]

    def to_dict(self) -> dict:
        out = {"covariance": self.covariance.tolist(), "seed": int(self.seed)}
        if self.bank is not None:
            out["bank"], out["bank_p"] = self.bank.tolist(), self.bank_p.tolist()
        return out

    def covariance_near(self, max_lag: int = 8) -> np.ndarray:
        """The covariance at lags -max_lag..max_lag (2L+1, 2L+1), centred, counts^2 (what a
        refined file records)."""
        c = np.fft.fftshift(self.covariance)
        cy, cx = c.shape[0] // 2, c.shape[1] // 2
        return c[cy - max_lag:cy + max_lag + 1, cx - max_lag:cx + max_lag + 1].copy()

    @classmethod
    def from_dict(cls, d: Mapping | None) -> NoiseMatch | None:
        if not d:
            return None
        bank = np.asarray(d["bank"], dtype=np.float64) if d.get("bank") is not None else None
        bank_p = np.asarray(d["bank_p"], dtype=np.float64) if bank is not None else None
        return cls(np.asarray(d["covariance"], dtype=np.float64), int(d["seed"]), bank, bank_p)


N_CALIBRATION = 4096  # Gaussian fields drawn to measure the sky selection's bias (`build_noise_match`)


def build_noise_match(real_images: np.ndarray, seed: int, border_px: int = 4,
                      bad: np.ndarray | None = None, spread: bool = True,
                      spread_basis: str = "lag1") -> NoiseMatch:
    """The `NoiseMatch` to the noise of target stamps ``real_images`` (N, H, W), counts; ``bad``
    (N, H, W) non-zero marks pixels that are not noise (the file's /mask).

    The covariance measured on sky pixels is biased: the source mask takes strongly correlated
    noise's own peaks for sources, so the sky pixels left are the lower ones (COSMOS-like noise,
    lag-1 0.48: the two lowest radial bins of the power 2.5-3 % and 1.5 % low). The bias is the
    estimator's, so it is measured and divided out: `N_CALIBRATION` pure Gaussian fields of the
    measured spectrum (stream ``noise_match_calibration``) measured back the same way give
    ``P_back``, and the spectrum used is ``P^2 / P_back`` (within 1 % in every bin after it,
    tests/test_noise_match.py).

    ``spread``: where the target's stamps differ from one another in noise level or lag-1
    correlations (``spread_basis`` ``lag1``) or in their power spectra (``spectrum``) by more
    than the calibration fields' own sampling scatter, a bank of covariances carries that spread
    (`refinegan.refiner.noise_spread.build_bank`).
    """
    taper = _lag_taper((2 * real_images.shape[1], 2 * real_images.shape[2]))
    first = NoiseMatch(target_noise_covariance(real_images, border_px, bad) * taper, int(seed))
    rng = np.random.default_rng(stream_sequence(seed, "noise_match_calibration"))
    back = np.zeros_like(first.covariance)
    n_done, cal_stats = 0, []
    n_real = real_images.shape[0]
    for start in range(0, N_CALIBRATION, CALIBRATION_CHUNK):
        k = min(CALIBRATION_CHUNK, N_CALIBRATION - start)
        fields = first.fields(rng.standard_normal((k, *first.covariance.shape)))
        back += k * target_noise_covariance(fields, border_px)
        # The sampling scatter of a per-stamp statistic depends on how many sky pixels it has: each
        # field is measured through one target stamp's sky (its galaxy masked out), as the
        # target's own stamps are; on the whole field it would be ~15 % smaller, and a stationary
        # target would seem to spread (white_noise_12, session 10).
        if spread:  # only the bank uses them
            idx = (start + np.arange(k)) % n_real
            target_sky = noise_sky(real_images[idx], border_px, None if bad is None else bad[idx])
            cal_stats.append(spread_stats(fields, border_px, ~target_sky, spread_basis))
        n_done += k
    p_first = first.power
    p_back = np.fft.fft2(back / n_done * taper).real
    floor = 1e-6 * p_first.max()
    gain = np.where(p_back > floor, p_first / np.maximum(p_back, floor), 1.0)  # the selection's bias
    match = NoiseMatch(np.fft.ifft2(p_first * gain).real * taper, int(seed))
    if not spread:
        return match
    bank, bank_p = build_bank(real_images, match, gain, taper, np.concatenate(cal_stats),
                              target_noise_covariance, border_px, bad, spread_basis)
    return dataclasses.replace(match, bank=bank, bank_p=bank_p) if bank is not None else match


CALIBRATION_CHUNK = 512


REMOVED_NOISE_MAX = 0.1  # what may be left of the sims' noise sigma in the border once removed


def remove_sim_noise(images: np.ndarray, labels: Mapping, seed: int, where: str,
                     border_px: int = 4) -> np.ndarray:
    """The noiseless sims (N, H, W) float64: the stamps minus their own noise,
    `refinegan.seeds.sim_noise_fields` of the labels ``pair_id``, ``rot90``,
    ``noise_sigma`` and the file's ``seed``.

    Checked: the border frame of what is left must hold less than `REMOVED_NOISE_MAX` of the
    sims' sigma (a wrong seed or edited stamps leave sqrt(2) or 1 of it), else `ContractError`.
    """
    missing = [k for k in ("pair_id", "rot90", "noise_sigma") if k not in labels]
    if missing:
        raise ContractError(f"{where}: its noise cannot be taken out for noise matching without "
                            f"the labels {missing}")
    images = np.asarray(images, dtype=np.float64)
    sigma = np.asarray(labels["noise_sigma"], dtype=np.float64)
    clean = images - sim_noise_fields(labels["pair_id"], labels["rot90"], sigma, seed,
                                      images.shape[1:])
    noisy = sigma > 0
    if noisy.any():
        frame = np.ones(images.shape[1:], bool)
        frame[border_px:-border_px, border_px:-border_px] = False
        left = np.median(np.std(clean[noisy][:, frame], axis=1) / sigma[noisy])
        if not left < REMOVED_NOISE_MAX:
            raise ContractError(
                f"{where}: taking out the sims' own noise (seed {seed}, labels pair_id / rot90 / "
                f"noise_sigma) left {left:.2f} of their sigma in the border (at most "
                f"{REMOVED_NOISE_MAX} expected): the stamps are not those `refinegan simulate` drew "
                "with this seed; re-simulate them, or drop the file's 'noise_fields' attribute so "
                "noise matching adds to their noise instead")
    return clean
