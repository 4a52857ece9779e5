import math

import numpy as np
import pytest
import torch

from diffplat import samplers, schedules
from diffplat.errors import NonFiniteError
from diffplat.registry import UnknownNameError
from diffplat.samplers.grids import level_range, noise_levels
from domains.toy import ExactDenoiser, GaussianMixture
from domains.toy.metrics import mmd2_to_mixture

MIX = GaussianMixture.default()


def _noise(n=256, d=2, seed=0):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _reference(sched, noise):
    """The exact probability-flow ODE endpoint, from scipy's DOP853 (an independent solver).

    In s = log(level) the ODE is dy/ds = y - D(y); y starts at level_max * noise and the
    result is D at level_min, as for the samplers on the Karras grid."""
    from scipy.integrate import solve_ivp

    lo, hi = level_range(sched)
    den = ExactDenoiser(MIX, sched)
    shape = noise.shape

    def f(s, y):
        level = math.exp(s)
        t = sched.t_from_noise_level(torch.tensor(level, dtype=torch.float64))
        yy = torch.from_numpy(y).reshape(shape)
        x0 = den(yy * sched.alpha(t), t.expand(shape[0]))
        return (yy - x0).reshape(-1).numpy()

    y0 = (noise * hi).reshape(-1).numpy()
    sol = solve_ivp(f, (math.log(hi), math.log(lo)), y0, method="DOP853",
                    rtol=1e-10, atol=1e-10)
    y = torch.from_numpy(sol.y[:, -1]).reshape(shape)
    t_end = sched.t_from_noise_level(torch.tensor(lo, dtype=torch.float64))
    return den(y * sched.alpha(t_end), t_end.expand(shape[0]))


def _err(a, b):
    return float((a - b).pow(2).sum(1).mean().sqrt())


def test_registry_names():
    assert set(samplers.names()) >= {"ddpm", "ddim", "euler", "heun", "euler_ancestral",
                                     "dpmpp_2m", "dpmpp_2m_sde", "adaptive"}
    with pytest.raises(UnknownNameError, match="valid names: adaptive, auto, ddim"):
        samplers.get("dpm++")


@pytest.mark.parametrize("name,order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_convergence_order(name, order):
    sched = schedules.get("edm")
    noise = _noise()
    ref = _reference(sched, noise)
    nfes = [32, 64, 128, 256]
    errs = []
    for nfe in nfes:
        out = samplers.get(name)(ExactDenoiser(MIX, sched), noise, sched,
                                 samplers.steps_for_nfe(name, nfe))
        errs.append(_err(out, ref))
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.3, (slope, errs)


def test_adaptive_solver_reports_nfe_and_is_accurate():
    sched = schedules.get("cosine")
    noise = _noise()
    ref = _reference(sched, noise)
    loose, tight = {}, {}
    e1 = _err(samplers.get("adaptive")(ExactDenoiser(MIX, sched), noise, sched, stats=loose,
                                       rtol=1e-3, atol=1e-3), ref)
    e2 = _err(samplers.get("adaptive")(ExactDenoiser(MIX, sched), noise, sched, stats=tight,
                                       rtol=1e-6, atol=1e-6), ref)
    assert e2 < 1e-4 and e2 < e1
    assert tight["nfe"] > loose["nfe"] > 10


@pytest.mark.parametrize("name,steps", [("euler", 200), ("heun", 60), ("ddim", 200),
                                        ("ddpm", 400), ("euler_ancestral", 400),
                                        ("dpmpp_2m", 60), ("dpmpp_2m_sde", 200),
                                        ("adaptive", 20)])
@pytest.mark.parametrize("sched_name", ["cosine", "flow"])
def test_reaches_the_target_distribution(name, steps, sched_name):
    """Unbiased MMD^2 to the exact mixture is within sampling noise of zero."""
    sched = schedules.get(sched_name)
    n = 2000
    gen = torch.Generator().manual_seed(3)
    out = samplers.get(name)(ExactDenoiser(MIX, sched), _noise(n, seed=1), sched, steps,
                             generator=gen)
    exact = [mmd2_to_mixture(MIX.sample(n, torch.Generator().manual_seed(s)), MIX)
             for s in range(8)]
    noise_scale = float(np.std(exact))
    assert mmd2_to_mixture(out, MIX) < 4 * noise_scale + 1e-4
    # and a crude sampler is measurably off, so the check has teeth
    bad = samplers.get("euler")(ExactDenoiser(MIX, sched), _noise(n, seed=1), sched, 2)
    assert mmd2_to_mixture(bad, MIX) > 10 * noise_scale


def test_ddpm_is_the_textbook_posterior():
    """Our ddpm equals Ho et al.'s Algorithm 2 written in the VP frame, noise for noise."""
    sched = schedules.get("linear")
    den = ExactDenoiser(MIX, sched)
    steps = 25
    noise = _noise(64)
    ours = samplers.get("ddpm")(den, noise, sched, steps, spacing="leading",
                                generator=torch.Generator().manual_seed(7))
    ts = (torch.arange(steps - 1, -1, -1) * (1000 // steps)).double() / 999
    g = torch.Generator().manual_seed(7)
    a_t, s_t = sched.alpha_sigma(ts[0])
    x = noise * s_t  # x_T = sigma_T * noise (the sampler starts at level sigma/alpha)
    for i, t in enumerate(ts):
        x0 = den(x, t.expand(64))
        a_t, s_t = sched.alpha_sigma(t)
        if i == steps - 1:
            x = x0
            break
        a_s, s_s = sched.alpha_sigma(ts[i + 1])
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        mean = a_ts * s_s**2 / s_t**2 * x + a_s * var_ts / s_t**2 * x0
        std = torch.sqrt(var_ts * s_s**2 / s_t**2)
        x = mean + std * torch.randn(x.shape, generator=g, dtype=x.dtype)
    torch.testing.assert_close(ours, x, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", samplers.names())
def test_seed_reproducible_and_nfe_reported(name):
    sched = schedules.get("cosine")
    den = ExactDenoiser(MIX, sched)
    outs, calls = [], []
    for _ in range(2):
        stats: dict = {}
        steps = []
        out = samplers.get(name)(den, _noise(32), sched, 6, stats=stats,
                                 generator=torch.Generator().manual_seed(5),
                                 callback=lambda info, steps=steps: steps.append(info["step"]))
        outs.append(out)
        calls.append((stats, steps))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    stats, steps = calls[0]
    if name != "adaptive":
        assert stats["nfe"] == samplers.nfe_for_steps(name, 6)
        assert steps == list(range(6))
    else:
        assert stats["nfe"] > 0 and stats["nfe"] >= 6 * stats["steps"]
    if name in samplers.STOCHASTIC:
        other = samplers.get(name)(den, _noise(32), sched, 6,
                                   generator=torch.Generator().manual_seed(6))
        assert not torch.allclose(other, outs[0])


def test_nan_denoiser_names_the_step():
    sched = schedules.get("cosine")
    den = ExactDenoiser(MIX, sched)
    calls = {"n": 0}

    def broken(x, t):
        calls["n"] += 1
        out = den(x, t)
        return out * float("nan") if calls["n"] == 4 else out

    with pytest.raises(NonFiniteError, match="step 3"):
        samplers.get("euler")(broken, _noise(8), sched, 10)

    def infinite(x, t):
        return torch.full_like(x, float("inf"))

    with pytest.raises(NonFiniteError, match="step 0"):
        samplers.get("dpmpp_2m")(infinite, _noise(8), sched, 10)


def test_bad_steps_and_spacings():
    sched = schedules.get("edm")
    den = ExactDenoiser(MIX, sched)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            samplers.get("heun")(den, _noise(4), sched, bad)
    with pytest.raises(ValueError, match="discrete schedule"):
        samplers.get("ddim")(den, _noise(4), sched, 10, spacing="trailing")
    with pytest.raises(KeyError, match="valid names"):
        samplers.get("ddim")(den, _noise(4), sched, 10, spacing="quadratic")


@pytest.mark.parametrize("spacing", ["karras", "uniform_t", "log_snr", "leading", "trailing",
                                     "linspace"])
def test_spacings_are_decreasing_and_end_at_zero(spacing):
    levels = noise_levels(schedules.get("linear"), 10, spacing)
    assert len(levels) == 11 and levels[-1] == 0
    assert (levels[:-1] > levels[1:]).all()


def test_trailing_and_leading_match_diffusers_timesteps():
    import diffusers
    sched = schedules.get("linear")
    for spacing in ("leading", "trailing", "linspace"):
        ref = diffusers.EulerDiscreteScheduler(timestep_spacing=spacing)
        ref.set_timesteps(10)
        levels = noise_levels(sched, 10, spacing)[:-1]
        torch.testing.assert_close(levels, ref.sigmas[:-1].double(), rtol=1e-4, atol=0)
