"""VEDA's recipe in the core (issue #24; Zhang et al., AAAI 2026, arXiv 2511.09568): the
arcsin grid, the VE schedule with its log-normal training levels, EDM preconditioning and the
fixed-gamma churn, each checked against the formulas of VEDA's code (models/fm.py,
data/interpolate.py) and of Karras et al. (2022) written out plainly here."""

import math

import numpy as np
import pytest
import torch

from diffplat import losses, samplers, schedules
from diffplat.samplers.grids import noise_levels
from diffplat.sampling import resolve_sampler
from diffplat.targets import Denoiser
from domains.toy import ExactDenoiser, GaussianMixture

MIX = GaussianMixture.default()
SMIN, SMAX = 0.001, 80.0
VE = schedules.get("edm", sigma_min=SMIN, sigma_max=SMAX)


def _noise(n=256, d=2, seed=0):
    return torch.randn(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def veda_grid(steps, rho, smin=SMIN, smax=SMAX):
    """VEDA's ``_create_time_schedule(steps, "arcsin")``, written out."""
    u = np.linspace(0, 1, steps + 1)
    mixed = (1 - rho) * u + rho * 2 * np.arcsin(u**0.5) / np.pi
    points = np.exp(mixed * (np.log(smax) - np.log(smin)) + np.log(smin)).tolist()
    points.reverse()
    points[-1] = 0
    return torch.tensor(points, dtype=torch.float64)


# -- 1. the arcsin grid ------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 5, 30, 100])
@pytest.mark.parametrize("rho", [0.0, 1.0, 2.0, 2.5])
def test_arcsin_grid_is_vedas(steps, rho):
    ours = noise_levels(VE, steps, "arcsin", rho, level_min=SMIN)
    torch.testing.assert_close(ours, veda_grid(steps, rho), rtol=1e-12, atol=0)
    # without the final denoise all K + 1 points stay, smin included
    free = noise_levels(VE, steps, "arcsin", rho, level_min=SMIN, denoise_final=False)
    assert free[-1] == pytest.approx(SMIN, rel=1e-12)
    torch.testing.assert_close(free[:-1], ours[:-1], rtol=1e-12, atol=0)


def test_arcsin_defaults_and_limits():
    # rho defaults to VEDA's 2 (not the Karras grid's 7); the default range is [0.002, 80]
    torch.testing.assert_close(noise_levels(VE, 20, "arcsin"),
                               veda_grid(20, 2.0, smin=0.002), rtol=1e-12, atol=0)
    # any schedule: the grid lies in its range, clipped like every continuous spacing
    cos = schedules.get("cosine")
    lv = noise_levels(cos, 20, "arcsin")
    assert (lv[:-1] > lv[1:]).all() and lv[0] == 80.0
    poly = noise_levels(schedules.get("polynomial"), 20, "arcsin", denoise_final=False)
    assert lv[-1] == 0 and poly[-1] == pytest.approx(math.sqrt(1e-5 / (1 - 1e-5)), rel=1e-6)
    with pytest.raises(ValueError, match="rho < 2.75"):
        noise_levels(VE, 10, "arcsin", 3.0)


@pytest.mark.parametrize("name", [n for n in samplers.names() if n != "adaptive"])
def test_every_sampler_runs_on_the_arcsin_grid(name):
    """Each sampler evaluates D exactly on the arcsin levels (the grid reaches the
    sampler), and the 30-step result is near the exact ODE's 400-step Heun solution."""
    seen = []
    exact = ExactDenoiser(MIX, VE)

    def den(x, t):
        seen.append(float(VE.noise_level(t[0].double())))
        return exact(x, t)

    steps = 30 if name != "auto" else 20
    out = samplers.get(name)(den, _noise(64), VE, steps, spacing="arcsin",
                             generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out).all()
    grid = set(round(v, 9) for v in noise_levels(VE, steps, "arcsin").tolist())
    if name not in ("heun", "euler_anneal", "auto"):  # heun's second point is on the grid too
        assert {round(v, 9) for v in seen} <= grid
    if name not in samplers.STOCHASTIC:
        ref = samplers.get("heun")(exact, _noise(64), VE, 200, spacing="arcsin")
        err = float((out - ref).pow(2).sum(1).mean().sqrt())
        assert err < 0.2, err


def test_auto_and_the_cli_request_take_the_arcsin_spacing():
    name, steps, options = resolve_sampler("auto", nfe=10, spacing="arcsin", schedule=VE)
    assert options["spacing"] == "arcsin" and steps == 10
    lv = noise_levels(VE, steps, "arcsin", level_max=options["level_max"],
                      denoise_final=options["denoise_final"])
    assert lv[0] == 20.0 and lv[-1] == pytest.approx(0.002)
    out = samplers.get("auto")(ExactDenoiser(MIX, VE), _noise(64), VE, 10, spacing="arcsin")
    assert torch.isfinite(out).all()


def test_tune_steps_starts_from_the_arcsin_grid():
    from diffplat.samplers.tuning import fit_levels

    den = ExactDenoiser(MIX, VE)
    batches = [(den, _noise(128, seed=4), None)]
    fit = fit_levels(samplers.get("euler"), batches, VE, 6, {"spacing": "arcsin"},
                     reference_steps=60, max_evals=30)
    start = samplers.get("euler")(den, _noise(128, seed=4), VE, 6, spacing="arcsin")
    ref = samplers.get("unipc")(den, _noise(128, seed=4), VE, 60, spacing="karras")
    assert fit["initial"] == pytest.approx(float((start - ref).pow(2).mean()), rel=1e-9)
    assert fit["objective"] <= fit["initial"]


# -- 2. the schedule and its training levels -----------------------------------------------
def _normal_cdf(z):
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def _ks(log_levels, mean, std):
    x = log_levels.sort().values
    n = len(x)
    cdf = _normal_cdf((x - mean) / std)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


def test_lognormal_t_sampler_on_the_ve_schedule_is_vedas_training_distribution():
    """VEDA draws sigma ~ LogNormal(mean, std) with mean = log sqrt(smin smax) and
    std = (log smax - log smin) / 8 (models/fm.py; -1.26 and 1.41 in scriptutil.py), so
    smin and smax sit at -4 and +4 std; our edm schedule on [0.001, 80] with the lognormal
    t-sampler given those numbers draws the same levels, up to its clip at the ends."""
    mean = math.log(math.sqrt(SMIN * SMAX))
    std = (math.log(SMAX) - math.log(SMIN)) / 8
    assert (round(mean, 2), round(std, 2)) == (-1.26, 1.41)
    n = 40000
    t = losses.sample_t("lognormal", n, VE, torch.Generator().manual_seed(0), p_mean=mean,
                        p_std=std)
    log_level = torch.log(VE.noise_level(t.double()))
    assert abs(float(log_level.mean()) - mean) < 3 * std / math.sqrt(n)
    assert abs(float(log_level.std()) / std - 1) < 3 / math.sqrt(2 * n)
    critical = 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov, 1% level
    assert _ks(log_level, mean, std) < critical
    # the same check rejects the t-sampler's defaults (Karras et al.: -1.2, 1.2)
    t0 = losses.sample_t("lognormal", n, VE, torch.Generator().manual_seed(0))
    assert _ks(torch.log(VE.noise_level(t0.double())), mean, std) > 3 * critical
    # and VEDA's own draw (torch.distributions.LogNormal) passes a two-sample test with ours
    from scipy.stats import ks_2samp

    torch.manual_seed(0)
    theirs = torch.distributions.LogNormal(-1.26, 1.41).sample((n,)).double()
    assert ks_2samp(log_level.numpy(), theirs.log().numpy()).pvalue > 0.01


# -- 3. preconditioning ----------------------------------------------------------------------
@pytest.mark.parametrize("sd", [1.0, 1.4])
def test_edm_target_is_vedas_preconditioning(sd):
    sigma = torch.tensor([0.001, 0.03, 0.5, 1.0, 3.0, 20.0, 80.0], dtype=torch.float64)
    t = VE.t_from_noise_level(sigma)
    den = Denoiser(torch.nn.Identity(), VE, "edm", sigma_data=sd)
    x = torch.ones(len(t), 3, dtype=torch.float64)
    a, s, c_in, c_noise = den.coefficients(t, x)
    assert torch.equal(a, torch.ones_like(a))
    s = s[:, 0]
    c_skip, c_out = den.target._coefs(torch.ones_like(s), s)
    # VEDA, models/fm.py _prepare_coef, with sigma the level our schedule gives at t: equal
    # to the last bit or one ulp (ours multiplies by alpha = 1, which float division by a
    # tensor can round differently)
    ulp = dict(rtol=2.3e-16, atol=0)
    torch.testing.assert_close(c_skip, sd**2 / (s**2 + sd**2), **ulp)
    torch.testing.assert_close(c_out, s * sd / (s**2 + sd**2).sqrt(), **ulp)
    torch.testing.assert_close(c_in[:, 0], 1 / (s**2 + sd**2).sqrt(), **ulp)
    # c_noise = log(sigma) / 4: ours is -log_snr / 8 computed from t, so equal to rounding
    torch.testing.assert_close(c_noise, s.log() / 4, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(s, sigma, rtol=1e-12, atol=0)
    # the edm weighting on the x0 error is VEDA's loss weight 1 / c_out^2
    w = losses.weightings.get("edm")(VE.log_snr(t), None, sigma_data=sd)
    torch.testing.assert_close(w, 1 / c_out**2, rtol=1e-12, atol=0)


def test_edm_loss_is_vedas_weighted_x0_loss():
    """Per sample: mean over elements of (1 / c_out^2) (D(x_t) - x0)^2, D = c_skip x_t +
    c_out F(c_in x_t, log(sigma) / 4), as VEDA's training step computes it."""
    torch.manual_seed(0)
    sd = 1.4
    net = torch.nn.Linear(3, 2).double()

    def backbone(x_in, c_noise):
        return net(torch.cat([x_in, c_noise[:, None]], 1))

    class Net(torch.nn.Module):
        def forward(self, x_in, c_noise):
            return backbone(x_in, c_noise)

    den = Denoiser(Net(), VE, "edm", sigma_data=sd)
    x0 = MIX.sample(64, torch.Generator().manual_seed(1))
    t = VE.t_from_noise_level(torch.logspace(-3, math.log10(80), 64, dtype=torch.float64))
    for weighting in ("edm", "uniform"):
        value, _ = losses.DiffusionLoss(weighting)(den, x0, t=t,
                                                   generator=torch.Generator().manual_seed(2))
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2),
                          dtype=torch.float64)
        s = VE.sigma(t)[:, None]
        x_t = x0 + s * eps
        c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
        d = c_skip * x_t + c_out * backbone(x_t / (s**2 + sd**2).sqrt(), s[:, 0].log() / 4)
        veda = ((d - x0) ** 2 / c_out**2).mean(1)
        torch.testing.assert_close(value, veda, rtol=1e-9, atol=0, msg=weighting)
