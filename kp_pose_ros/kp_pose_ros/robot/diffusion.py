"""Variance-preserving SDE (Song et al. 2021) and a DDIM sampler over it, in numpy.

RoboKeyGen (Tian et al., §III-B) models the 3D keypoints given their normalised 2D projections with a score network
trained on the VP-SDE dX = -beta(t) X / 2 dt + sqrt(beta(t)) dw, beta linear from beta(0) = 0.1 to beta(1) = 20, and
samples it with DDIM. The network runs in ONNX Runtime; this module holds the schedule and the sampling loop so the
same code serves any backend (and can be tested with an analytic score).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

# score_fn(x (M, D), t (M, 1), cond (M, D_cond)) -> score (M, D), all float arrays.
ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _positive(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite number > 0, got {value}')
    return value


class VPSDE:
    """Schedule of the VP-SDE with linear beta(t) on [0, T].

    Its transition kernel is p_0t(x_t | x_0) = N(sqrt(alpha_bar(t)) x_0, (1 - alpha_bar(t)) I) with
    alpha_bar(t) = exp(-integral_0^t beta), the continuous counterpart of DDPM's cumulative alpha.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, eps: float = 1e-4) -> None:
        self.beta_min = _positive(beta_min, 'beta_min')
        self.beta_max = _positive(beta_max, 'beta_max')
        self.T = _positive(T, 'T')
        self.eps = _positive(eps, 'eps')
        if self.beta_max < self.beta_min:
            raise ValueError(f'beta_max ({beta_max}) must be >= beta_min ({beta_min})')
        if self.eps >= self.T:
            raise ValueError(f'eps ({eps}) must be smaller than T ({T})')

    def beta(self, t: ArrayLike) -> np.ndarray:
        """beta(t) = beta_min + t / T (beta_max - beta_min)."""
        t = np.asarray(t, dtype=np.float64)
        return self.beta_min + t / self.T * (self.beta_max - self.beta_min)

    def beta_integral(self, t: ArrayLike) -> np.ndarray:
        """integral_0^t beta(s) ds."""
        t = np.asarray(t, dtype=np.float64)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t / self.T

    def alpha_bar(self, t: ArrayLike) -> np.ndarray:
        """Signal variance fraction exp(-integral_0^t beta): 1 at t = 0, ~4.3e-5 at t = 1 for the paper's betas."""
        return np.exp(-self.beta_integral(t))

    def mean_coef(self, t: ArrayLike) -> np.ndarray:
        """sqrt(alpha_bar(t)): the factor the kernel's mean applies to x_0."""
        return np.exp(-0.5 * self.beta_integral(t))

    def std(self, t: ArrayLike) -> np.ndarray:
        """sqrt(1 - alpha_bar(t)): the kernel's standard deviation."""
        return np.sqrt(-np.expm1(-self.beta_integral(t)))

    def diffuse(self, x0: ArrayLike, t: float, rng: np.random.Generator) -> np.ndarray:
        """A draw from p_0t(x_t | x_0)."""
        x0 = np.asarray(x0, dtype=np.float64)
        return self.mean_coef(t) * x0 + self.std(t) * rng.standard_normal(x0.shape)


def ddim_sample(score_fn: ScoreFn, cond: ArrayLike, num_candidates: int, steps: int, rng: np.random.Generator,
                x_init: ArrayLike | None = None, t_start: float = 1.0, sde: VPSDE | None = None,
                dim: int | None = None) -> np.ndarray:
    """Deterministic DDIM (eta = 0) samples of x given ``cond``: K = ``num_candidates`` per condition.

    ``cond`` is one condition (D_cond,) or a batch (B, D_cond); every step makes one ``score_fn`` call over all
    B * K candidates. Without ``x_init`` the candidates start from N(0, I) at t = T (``dim`` gives D; default the
    condition's length). With ``x_init`` ((D,) or (B, D), e.g. the previous frame's estimate, standardised) they
    start from that point diffused to ``t_start`` with fresh noise per candidate, so fewer steps suffice. Times run
    evenly from ``t_start`` down to the SDE's eps; the last step goes to t = 0, i.e. returns the denoised estimate.
    The noise comes from ``rng`` only, so a seeded generator gives repeatable candidates.
    Returns (K, D) for one condition, (B, K, D) for a batch.
    """
    sde = sde or VPSDE()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f'rng must be a numpy.random.Generator, got {type(rng).__name__}')
    if int(num_candidates) != num_candidates or num_candidates < 1:
        raise ValueError(f'num_candidates must be a positive integer, got {num_candidates}')
    if int(steps) != steps or steps < 1:
        raise ValueError(f'steps must be a positive integer, got {steps}')
    t_start = float(t_start)
    if not sde.eps < t_start <= sde.T:
        raise ValueError(f't_start must be in ({sde.eps}, {sde.T}], got {t_start}')
    cond = np.asarray(cond, dtype=np.float64)
    if cond.ndim not in (1, 2) or not np.all(np.isfinite(cond)):
        raise ValueError(f'cond must be a finite (D_cond,) or (B, D_cond) array, got shape {cond.shape}')
    single = cond.ndim == 1
    cond = cond[None] if single else cond
    batch, K = cond.shape[0], int(num_candidates)

    if x_init is None:
        D = cond.shape[1] if dim is None else int(dim)
        x = rng.standard_normal((batch, K, D))
        t_start = sde.T
    else:
        x_init = np.asarray(x_init, dtype=np.float64)
        x_init = x_init[None] if x_init.ndim == 1 else x_init
        if x_init.ndim != 2 or x_init.shape[0] != batch or not np.all(np.isfinite(x_init)):
            raise ValueError(f'x_init must be a finite array with one row per condition, got shape {x_init.shape} '
                             f'for {batch} condition(s)')
        x = sde.diffuse(np.broadcast_to(x_init[:, None], (batch, K, x_init.shape[1])), t_start, rng)
    D = x.shape[2]

    flat_cond = np.repeat(cond, K, axis=0)
    times = np.linspace(t_start, sde.eps, int(steps))
    for i, t in enumerate(times):
        a_t = float(sde.alpha_bar(t))
        a_next = float(sde.alpha_bar(times[i + 1])) if i + 1 < len(times) else 1.0
        std_t = math.sqrt(1.0 - a_t)
        score = np.asarray(score_fn(x.reshape(batch * K, D), np.full((batch * K, 1), t), flat_cond),
                           dtype=np.float64).reshape(batch, K, D)
        noise = -std_t * score
        x0 = (x - std_t * noise) / math.sqrt(a_t)
        x = math.sqrt(a_next) * x0 + math.sqrt(1.0 - a_next) * noise
    return x[0] if single else x
