import math

import pytest
import torch

from diffplat import losses, samplers, schedules, targets
from diffplat.targets import Denoiser
from domains.toy import ExactDenoiser, GaussianMixture

MIX = GaussianMixture.default()


class OracleBackbone(torch.nn.Module):
    """Returns, for any target, the output that makes the Denoiser exact.

    It only sees what a real backbone sees (c_in * x_t and c_noise) and inverts the
    preconditioning itself, so the test exercises the whole wrapper.
    """

    def __init__(self, schedule, target, sigma_data=1.0):
        super().__init__()
        self.exact = ExactDenoiser(MIX, schedule)
        self.schedule, self.target, self.sd = schedule, target, sigma_data

    def forward(self, x_in, c_noise):
        t = self.schedule.t_from_log_snr(-8 * c_noise.double())
        a, s = self.schedule.alpha_sigma(t)
        a, s = a[:, None], s[:, None]
        x = x_in * torch.sqrt(s * s + a * a * self.sd**2)
        x0 = self.exact(x, t)
        eps = (x - a * x0) / s
        return self.target.value(x0, eps, a, s)


@pytest.mark.parametrize("sched_name", ["cosine", "edm", "flow"])
def test_every_target_gives_the_same_trajectory(sched_name):
    sched = schedules.get(sched_name)
    noise = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = samplers.get("heun")(ExactDenoiser(MIX, sched), noise, sched, 8)
    for name in targets.names():
        tgt = targets.get(name, sigma_data=0.5)
        den = Denoiser(OracleBackbone(sched, tgt, 0.5), sched, tgt, sigma_data=0.5).double()
        out = samplers.get("heun")(den, noise, sched, 8)
        torch.testing.assert_close(out, ref, rtol=1e-7, atol=1e-7, msg=name)


class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 2).double()

    def forward(self, x, c_noise):
        return self.lin(torch.cat([x, c_noise[:, None]], 1))


def _loss(target, weighting, **wopts):
    torch.manual_seed(0)
    sched = schedules.get("cosine")
    den = Denoiser(Linear(), sched, target)
    x0 = MIX.sample(256, torch.Generator().manual_seed(1))
    t = torch.linspace(0.05, 0.95, 256, dtype=torch.float64)
    loss_fn = losses.DiffusionLoss(weighting, weighting_options=wopts)
    value, _ = loss_fn(den, x0, t=t, generator=torch.Generator().manual_seed(2))
    # the same draw by hand
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=x0.dtype)
    a, s = sched.alpha_sigma(t)
    x_t = a[:, None] * x0 + s[:, None] * eps
    out, x0_hat, _, _ = den.predict(x_t, t)
    return value, out, x0_hat, x0, eps, a, s, sched.log_snr(t)


def test_uniform_is_plain_mse_on_each_target():
    for name in targets.names():
        value, out, _, x0, eps, a, s, _ = _loss(name, "uniform")
        tgt = targets.get(name).value(x0, eps, a[:, None], s[:, None])
        torch.testing.assert_close(value, ((out - tgt) ** 2).mean(1), msg=name)
        assert value.shape == (256,)


def test_min_snr_matches_hang_et_al():
    # Hang et al. 2023: eps-prediction loss weighted by min(SNR, gamma) / SNR
    value, out, _, _, eps, _, _, lam = _loss("eps", "min_snr", gamma=5.0)
    snr = torch.exp(lam)
    expected = ((out - eps) ** 2).mean(1) * torch.clamp(snr, max=5.0) / snr
    torch.testing.assert_close(value, expected)


def test_weightings_agree_in_x0_space():
    # every weighting is w(lambda) * ||x0_hat - x0||^2, whatever the target
    for weighting, w in [("edm", lambda lam: torch.exp(lam) + 1.0),
                         ("sigmoid", lambda lam: torch.exp(lam) * torch.sigmoid(-lam))]:
        for name in targets.names():
            value, _, x0_hat, x0, *_, lam = _loss(name, weighting)
            torch.testing.assert_close(value, w(lam) * ((x0_hat - x0) ** 2).mean(1),
                                       msg=f"{weighting}/{name}")


def test_edm_weighting_is_uniform_for_the_edm_target():
    assert torch.allclose(_loss("edm", "edm")[0], _loss("edm", "uniform")[0])


def test_time_samplers():
    sched = schedules.get("edm")
    g = torch.Generator().manual_seed(0)
    t = losses.sample_t("lognormal", 20000, sched, g)
    log_level = torch.log(sched.noise_level(t.double()))
    assert abs(log_level.mean() + 1.2) < 0.05 and abs(log_level.std() - 1.2) < 0.05
    t = losses.sample_t("logit_normal", 20000, schedules.get("flow"), g).double()
    z = torch.logit(t)
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    t = losses.sample_t("low_discrepancy", 8, sched, g).sort().values
    torch.testing.assert_close(t.diff(), torch.full((7,), 1 / 8), atol=1e-6, rtol=0)
    with pytest.raises(KeyError, match="valid names"):
        losses.DiffusionLoss(t_sampler="gaussian")


def _analytic_gaussian_vlb(sched, v, d, num_steps):
    """E[bound] for data N(0, v I) and the exact denoiser, whose per-dimension error at
    log-SNR lambda is v / (1 + SNR v); the log-SNR clamped to +-LOG_SNR_LIMIT as the bound
    clamps it (the flow schedule's is infinite at t = 0)."""
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    snr = torch.exp(sched.log_snr(t))
    diffusion = 0.5 * d * ((snr[:-1] - snr[1:]) * v / (1 + snr[1:] * v)).sum()
    a1, s1 = sched.alpha_sigma64(sched.log_snr64(torch.ones(1, dtype=torch.float64)))
    prior = 0.5 * (a1**2 * d * v + d * (s1**2 - 1 - torch.log(s1**2)))
    var0 = 1 / snr[0]
    recon = 0.5 * d * v / (1 + snr[0] * v) / var0 + 0.5 * d * torch.log(2 * math.pi * var0)
    return float(prior + diffusion + recon)


@pytest.mark.parametrize("sched_name", ["cosine", "polynomial", "flow"])
def test_vlb_matches_its_analytic_value_on_gaussian_data(sched_name):
    v, d, n = 0.25, 3, 20000
    sched = schedules.get(sched_name)
    mix = GaussianMixture(torch.zeros(1, d), torch.full((1,), v))
    g = torch.Generator().manual_seed(0)
    x0 = mix.sample(n, g)
    terms = losses.vlb(ExactDenoiser(mix, sched), x0, num_steps=1000, generator=g)
    estimate = terms["nll"].mean()
    stderr = terms["nll"].std() / math.sqrt(n)
    expected = _analytic_gaussian_vlb(sched, v, d, 1000)
    assert abs(estimate - expected) < 4 * stderr, (float(estimate), expected, float(stderr))
    # it is an upper bound on the true NLL, tight in the continuous-time limit where the
    # steps are small in log-SNR; uniform steps in t of the flow schedule are not near t = 0
    # (its log-SNR, 2 log((1 - t) / t), diverges there), which leaves a gap
    exact = 0.5 * d * math.log(2 * math.pi * math.e * v)
    assert math.isfinite(expected) and expected > exact
    fine = _analytic_gaussian_vlb(sched, v, d, 200_000)
    assert exact < fine < expected
    if sched_name != "flow":
        assert fine - exact < 0.02


def test_a_compiled_backbone_is_used_and_gives_the_same_estimate():
    """``Denoiser.compiled`` (set by ``--model.compile true``) is what the denoiser calls: a
    torch.compile wrapper (the eager backend, to stay fast on CPU) has no truth value of its
    own, which the choice between it and the plain backbone once tripped over."""
    from domains.toy import MLPBackbone

    torch.manual_seed(0)
    den = Denoiser(MLPBackbone(dim=2, hidden=16), "cosine", "v")
    x, t = torch.randn(8, 2), torch.rand(8)
    plain = den(x, t)
    calls = []
    compiled = torch.compile(den.backbone, backend="eager")
    compiled.register_forward_hook(lambda *a: calls.append(1))
    object.__setattr__(den, "compiled", compiled)
    torch.testing.assert_close(den(x, t), plain)
    assert calls, "the compiled backbone was not called"
