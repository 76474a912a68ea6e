"""VP-SDE schedule and DDIM sampler (robot.diffusion), checked against closed forms and an analytic Gaussian score."""
import math

import numpy as np
import pytest
from scipy.integrate import quad

from kp_pose_ros.robot.diffusion import VPSDE, ddim_sample

SDE = VPSDE()


def gaussian_score(mu: np.ndarray, sigma: float, sde: VPSDE = SDE):
    """Exact score of p_t when the data are N(mu, sigma^2 I): p_t = N(m(t) mu, (m(t)^2 sigma^2 + std(t)^2) I)."""
    def score(x, t, cond):
        m, s = sde.mean_coef(t), sde.std(t)
        return -(x - m * mu) / (m * m * sigma * sigma + s * s)
    return score


def test_schedule_matches_paper_constants():
    assert SDE.beta(0.0) == pytest.approx(0.1)
    assert SDE.beta(1.0) == pytest.approx(20.0)
    assert SDE.beta(0.5) == pytest.approx(10.05)
    # integral of 0.1 + 19.9 s over [0, t] = 0.1 t + 9.95 t^2
    assert SDE.beta_integral(1.0) == pytest.approx(10.05)
    assert SDE.beta_integral(0.3) == pytest.approx(0.03 + 9.95 * 0.09)
    assert SDE.alpha_bar(0.0) == 1.0 and SDE.std(0.0) == 0.0 and SDE.mean_coef(0.0) == 1.0
    assert SDE.alpha_bar(1.0) == pytest.approx(math.exp(-10.05))
    assert SDE.std(1.0) == pytest.approx(math.sqrt(1.0 - math.exp(-10.05)))
    t = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(SDE.mean_coef(t) ** 2 + SDE.std(t) ** 2, 1.0, atol=1e-12)
    # std stays accurate where 1 - exp(-x) would cancel: std(eps)^2 ~ beta_min * eps.
    assert SDE.std(1e-4) ** 2 == pytest.approx(0.1 * 1e-4 + 9.95e-8, rel=1e-4)


def test_beta_integral_agrees_with_quadrature():
    sde = VPSDE(beta_min=0.5, beta_max=7.0, T=2.0)
    assert sde.beta_integral(1.3) == pytest.approx(quad(sde.beta, 0.0, 1.3)[0], rel=1e-8)


def test_diffuse_has_kernel_moments():
    rng = np.random.default_rng(0)
    x0 = np.full((200000, 1), 2.0)
    xt = SDE.diffuse(x0, 0.4, rng)
    assert xt.mean() == pytest.approx(2.0 * SDE.mean_coef(0.4), abs=5e-3)
    assert xt.std() == pytest.approx(SDE.std(0.4), rel=5e-3)


@pytest.mark.parametrize('kwargs, message', [
    (dict(beta_min=0.0), 'beta_min'), (dict(beta_max=-1.0), 'beta_max'), (dict(beta_min=5.0, beta_max=1.0), '>='),
    (dict(eps=2.0), 'eps'), (dict(T=float('nan')), 'T')])
def test_bad_schedule_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VPSDE(**kwargs)


def test_sampler_with_exact_score_recovers_gaussian():
    mu, sigma = np.array([1.5, -0.7, 0.3]), 0.2
    candidates = ddim_sample(gaussian_score(mu, sigma), np.zeros(3), 4000, 100, np.random.default_rng(1))
    assert candidates.shape == (4000, 3)
    np.testing.assert_allclose(candidates.mean(axis=0), mu, atol=0.02)
    np.testing.assert_allclose(candidates.std(axis=0), sigma, rtol=0.1)


def test_sampler_shapes_and_determinism():
    score = gaussian_score(np.zeros(6), 0.5)
    calls = []

    def counting(x, t, cond):
        calls.append((x.shape, t.shape, cond.shape))
        return score(x, t, cond)

    one = ddim_sample(counting, np.zeros(6), 10, 7, np.random.default_rng(3))
    assert one.shape == (10, 6)
    # One score call per step, all candidates at once, time as a column.
    assert calls == [((10, 6), (10, 1), (10, 6))] * 7
    again = ddim_sample(score, np.zeros(6), 10, 7, np.random.default_rng(3))
    np.testing.assert_array_equal(one, again)
    other = ddim_sample(score, np.zeros(6), 10, 7, np.random.default_rng(4))
    assert not np.allclose(one, other)
    batch = ddim_sample(score, np.zeros((3, 4)), 5, 2, np.random.default_rng(0), dim=6)
    assert batch.shape == (3, 5, 6)


def test_online_initialisation_stays_near_previous_estimate():
    # A broad prior: from noise the candidates spread over it; started from a point diffused to t = 0.2 they stay
    # close to that point.
    score = gaussian_score(np.zeros(4), 1.0)
    previous = np.array([0.8, -0.5, 0.2, 1.1])
    single = ddim_sample(score, np.zeros(4), 200, 20, np.random.default_rng(5))
    online = ddim_sample(score, np.zeros(4), 200, 5, np.random.default_rng(5), x_init=previous, t_start=0.2)
    single_move = np.linalg.norm(single - previous, axis=1).mean()
    online_move = np.linalg.norm(online - previous, axis=1).mean()
    assert online_move < 0.5 * single_move
    # For N(0, I) data the probability-flow ODE that DDIM discretises is the identity map, so the candidates keep
    # the diffused point's mean mean_coef(0.2) * previous.
    np.testing.assert_allclose(online.mean(axis=0), SDE.mean_coef(0.2) * previous, atol=0.1)


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_candidates=0), 'num_candidates'), (dict(steps=0), 'steps'), (dict(t_start=0.0), 't_start'),
    (dict(cond=np.array([np.nan, 0.0])), 'cond'), (dict(x_init=np.zeros((2, 2))), 'x_init'),
    (dict(rng=np.random.RandomState(0)), 'Generator')])
def test_sampler_refuses_bad_arguments(kwargs, message):
    args = dict(score_fn=gaussian_score(np.zeros(2), 1.0), cond=np.zeros(2), num_candidates=2, steps=3,
                rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        ddim_sample(**args)
