"""The higher-order multistep samplers (UniPC, DPM-Solver++ 3M, DEIS, iPNDM) and auto.

Answers they are checked against: the exact probability-flow ODE endpoint of a Gaussian
mixture (scipy DOP853 on its exact denoiser), diffusers' UniPCMultistepScheduler and
DPMSolverMultistepScheduler run on the same timesteps and denoiser, and the samplers' own
separate calls (statelessness).
"""

import math

import numpy as np
import pytest
import torch

from diffplat import guidance, samplers, schedules
from diffplat.errors import NonFiniteError
from diffplat.samplers.adams import deis_weights
from diffplat.samplers.auto import TABLE, choose
from diffplat.samplers.grids import level_range, noise_levels, sampler_defaults
from domains.toy import ExactDenoiser, GaussianMixture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MIX = GaussianMixture.default()
NEW = ["unipc", "dpmpp_3m", "dpmpp_3m_sde", "deis", "ipndm", "auto"]


def _noise(n=128, d=2, seed=0):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def reference():
    """Exact ODE endpoint on the EDM schedule from level 80 down to 0.002, then D there."""
    from scipy.integrate import solve_ivp

    sched = schedules.get("edm")
    lo, hi = level_range(sched)
    noise = _noise()

    def f(s, y):
        yy = torch.from_numpy(y).reshape(noise.shape)
        return (yy - MIX.posterior_mean(yy, 1.0, math.exp(s))).reshape(-1).numpy()

    sol = solve_ivp(f, (math.log(hi), math.log(lo)), (noise * hi).reshape(-1).numpy(),
                    method="DOP853", rtol=1e-11, atol=1e-11)
    y = torch.from_numpy(sol.y[:, -1]).reshape(noise.shape)
    return sched, noise, MIX.posterior_mean(y, 1.0, lo)


def _err(a, b):
    return float((a - b).pow(2).sum(1).mean().sqrt())


@pytest.mark.parametrize("name,options,order", [
    ("unipc", {"order": 2, "variant": "bh2"}, 3),   # UniC raises UniP-2 to third order
    ("unipc", {"order": 2, "variant": "bh1"}, 3),
    ("unipc", {"order": 1, "corrector": False}, 1),
    ("dpmpp_3m", {}, 3),
    ("dpmpp_3m", {"coefficients": "dpm_solver"}, 2),  # the reference code's halved D2 weight
    ("deis", {"order": 3}, 3),
    ("deis", {"order": 3, "variable": "rho"}, 3),
    # iPNDM's fixed weights assume equal steps in rho; the log-SNR grid's steps shrink
    # geometrically, which costs one order (DEIS's exact weights keep it)
    ("ipndm", {"order": 3}, 2),
])
def test_convergence_order(reference, name, options, order):
    """Slope of log error against log NFE on the log-SNR grid (where the steps are equal in
    lambda, the variable the exponential integrators are exact in)."""
    sched, noise, ref = reference
    nfes = [40, 80, 160]
    errs = [_err(samplers.get(name)(ExactDenoiser(MIX, sched), noise, sched, n,
                                    spacing="log_snr", **options), ref) for n in nfes]
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.35, (slope, errs)


def test_deis_weights_are_exact_for_polynomials():
    """The weights integrate eps exactly when eps is a polynomial of the chosen variable."""
    rhos, nxt = [2.0, 3.0, 4.5, 7.0], 1.2
    for variable, v in (("rho", lambda r: r), ("log_rho", math.log)):
        poly = np.poly1d([0.3, -1.0, 0.5, 2.0])  # cubic in v
        c = deis_weights(rhos, nxt, variable)
        from scipy.integrate import quad

        exact = quad(lambda r, poly=poly, v=v: poly(v(r)), rhos[0], nxt, epsabs=1e-13)[0]
        assert sum(ck * poly(v(r)) for ck, r in zip(c, rhos)) == pytest.approx(exact, rel=1e-9)


def _diffusers_run(cls_name, steps, noise, sched, **options):
    """A diffusers scheduler in its usual loop on the exact epsilon, our float64 table and
    our start x_T = sigma_T * noise; returns the sample in the VE frame."""
    import diffusers

    cls = getattr(diffusers, cls_name)
    peer = cls(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
               beta_schedule="linear", timestep_spacing="trailing", **options)
    peer.alphas_cumprod = sched.alphas_cumprod.clone()  # float64: only the solver differs
    peer.set_timesteps(steps)
    ab = sched.alphas_cumprod
    x = noise * (1 - ab[int(peer.timesteps[0])]).sqrt()
    for t in peer.timesteps:
        a = ab[int(t)]
        x0 = MIX.posterior_mean(x, a.sqrt(), (1 - a).sqrt())
        x = peer.step((x - a.sqrt() * x0) / (1 - a).sqrt(), t, x).prev_sample.double()
    last = float(peer.sigmas[-1])
    return x * math.sqrt(1 + last**2)


@pytest.mark.parametrize("steps", [6, 20])
@pytest.mark.parametrize("peer,options,ours,our_options", [
    ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"},
     "unipc", {"order": 3, "variant": "bh2", "denoise_final": True}),
    ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh1",
                                 "final_sigmas_type": "sigma_min"},
     "unipc", {"order": 2, "variant": "bh1", "denoise_final": False}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3},
     "dpmpp_3m", {"coefficients": "dpm_solver", "denoise_final": True}),
])
def test_agrees_with_diffusers(steps, peer, options, ours, our_options):
    sched = schedules.get("linear")
    noise = _noise(200)
    theirs = _diffusers_run(peer, steps, noise, sched, **options)
    if ours == "dpmpp_3m":  # diffusers lowers the order of the last steps below 15 steps only
        our_options = {**our_options, "lower_order_final": steps < 15}
    mine = samplers.get(ours)(ExactDenoiser(MIX, sched), noise, sched, steps,
                              spacing="trailing", **our_options)
    assert float((mine - theirs).abs().max()) < 1e-5


@pytest.mark.parametrize("name", NEW)
def test_stateless_interleaved_calls(name):
    """Two samplers driven step by step in alternation give what two separate calls give."""
    sched = schedules.get("cosine")
    den = ExactDenoiser(MIX, sched)
    a, b = _noise(16, seed=1), _noise(16, seed=2)
    separate = [samplers.get(name)(den, n, sched, 6, generator=torch.Generator().manual_seed(4))
                for n in (a, b)]
    import threading

    turns = [threading.Semaphore(1), threading.Semaphore(0)]
    outs = [None, None]

    def run(k, n):
        def denoise(x, t):
            turns[k].acquire()  # take our turn, evaluate, hand over to the other run
            try:
                return den(x, t)
            finally:
                turns[1 - k].release()

        outs[k] = samplers.get(name)(denoise, n, sched, 6,
                                     generator=torch.Generator().manual_seed(4))

    threads = [threading.Thread(target=run, args=(k, n)) for k, n in enumerate((a, b))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for got, want in zip(outs, separate):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("name", NEW)
def test_guidance_and_inpainting_wrappers(name):
    sched = schedules.get("cosine")
    den = ExactDenoiser(MIX, sched)
    noise = _noise(64)
    gen = torch.Generator().manual_seed(0)
    same = guidance.ClassifierFreeGuidance(den, den, 3.0)  # equal branches: no change
    plain = samplers.get(name)(den, noise, sched, 8, generator=torch.Generator().manual_seed(1))
    guided = samplers.get(name)(same, noise, sched, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(guided, plain, rtol=1e-9, atol=1e-9)
    known = torch.full_like(noise, 2.0)
    mask = torch.tensor([1.0, 0.0], dtype=torch.float64)
    wrapped = guidance.Inpainting(den, known, mask, sched, generator=gen)
    out = samplers.get(name)(wrapped, noise, sched, 8, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out).all()
    if name == "auto" or not sampler_defaults(name, sched).get("denoise_final", True):
        # ends at the smallest level without denoising: within its noise
        assert float((out[:, 0] - known[:, 0]).abs().max()) < 5 * level_range(sched)[0] * 4
    else:  # the last step returns the wrapped x0 estimate, exact on the known part
        assert torch.equal(out[:, 0], known[:, 0])


@pytest.mark.parametrize("name", NEW)
def test_nan_names_the_step(name):
    sched = schedules.get("cosine")
    den = ExactDenoiser(MIX, sched)
    calls = {"n": 0}

    def broken(x, t):
        calls["n"] += 1
        out = den(x, t)
        return out * float("nan") if calls["n"] == 3 else out

    with pytest.raises(NonFiniteError, match="step 2"):
        samplers.get(name)(broken, _noise(8), sched, 6)


def test_denoise_final_and_explicit_levels():
    sched = schedules.get("linear")
    grid = noise_levels(sched, 5, "log_snr", denoise_final=False)
    assert len(grid) == 6 and grid[-1] == level_range(sched)[0]
    assert noise_levels(sched, 5, "trailing", denoise_final=False)[-1] == pytest.approx(0.01,
                                                                                         rel=1e-3)
    den = ExactDenoiser(MIX, sched)
    levels = noise_levels(sched, 5, "karras")
    a = samplers.get("unipc")(den, _noise(8), sched, 5, levels=levels)
    b = samplers.get("unipc")(den, _noise(8), sched, 5, spacing="karras", level_max=80.0,
                              denoise_final=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs 6 noise levels"):
        samplers.get("unipc")(den, _noise(8), sched, 5, levels=levels[:-1])
    with pytest.raises(ValueError, match="strictly decreasing"):
        samplers.get("deis")(den, _noise(8), sched, 5, levels=levels.flip(0))
    for bad in ({"order": 4}, {"variant": "bh3"}):
        with pytest.raises(ValueError, match="unipc"):
            samplers.get("unipc")(den, _noise(8), sched, 5, **bad)


def test_nfe_bookkeeping_and_auto_table():
    for name in ("unipc", "dpmpp_3m", "deis", "ipndm", "auto"):
        assert samplers.steps_for_nfe(name, 7) == 7 == samplers.nfe_for_steps(name, 7)
    assert samplers.nfe_for_steps("heun", 5, denoise_final=False) == 10
    with pytest.raises(ValueError, match="NFE must be an integer >= 1"):
        samplers.steps_for_nfe("unipc", 0)
    for sched in (schedules.get("linear"), schedules.get("edm"), None):
        for nfe in (1, 5, 7, 10, 20, 50):
            name, options = choose(nfe, sched)
            assert name in samplers.names() and name != "auto"
    assert all(set(TABLE[f]) >= {5, 10, 20} for f in ("vp", "ve"))
    assert choose(7, schedules.get("cosine")) == choose(5, schedules.get("linear"))
    stats: dict = {}
    samplers.get("auto")(ExactDenoiser(MIX, schedules.get("edm")), _noise(8),
                         schedules.get("edm"), 10, stats=stats)
    assert stats["nfe"] == 10
