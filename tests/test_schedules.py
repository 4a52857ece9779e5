import math

import pytest
import torch

from diffplat import schedules
from diffplat.registry import UnknownNameError

ALL = schedules.names()


def test_names():
    assert set(ALL) == {"linear", "cosine", "sigmoid", "polynomial", "edm", "flow"}


@pytest.mark.parametrize("name", ALL)
def test_float32_safe_at_both_ends(name):
    sch = schedules.get(name)
    t = torch.tensor([0.0, 1e-7, 0.5, 1 - 1e-7, 1.0], dtype=torch.float32)
    a, s = sch.alpha_sigma(t)
    lam = sch.log_snr(t)
    for v in (a, s, lam, sch.noise_level(t)):
        assert v.dtype == torch.float32
        assert torch.isfinite(v).all(), (name, v)
    assert (a >= 0).all() and (s >= 0).all()
    assert (lam[:-1] >= lam[1:]).all(), "log-SNR must decrease in t"


@pytest.mark.parametrize("name", ALL)
def test_alpha_sigma_agree_with_log_snr_and_family(name):
    sch = schedules.get(name)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    a, s = sch.alpha_sigma(t)
    torch.testing.assert_close(2 * torch.log(a / s), sch.log_snr(t), rtol=1e-9, atol=1e-9)
    if sch.family == "vp":
        torch.testing.assert_close(a**2 + s**2, torch.ones_like(t))
    elif sch.family == "ve":
        torch.testing.assert_close(a, torch.ones_like(t))
    else:
        torch.testing.assert_close(a + s, torch.ones_like(t))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("options", [{}, {"shift": -1.5}])
def test_inverse(name, options):
    sch = schedules.get(name, **options)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    back = sch.t_from_log_snr(sch.log_snr(t))
    torch.testing.assert_close(back, t, rtol=0, atol=1e-7)
    torch.testing.assert_close(sch.t_from_noise_level(sch.noise_level(t)), t, rtol=0, atol=1e-7)


def test_flow_and_edm_closed_forms():
    t = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    a, s = schedules.get("flow").alpha_sigma(t)
    torch.testing.assert_close(a, 1 - t)
    torch.testing.assert_close(s, t)
    edm = schedules.get("edm")
    torch.testing.assert_close(edm.sigma(torch.tensor([0.0, 1.0], dtype=torch.float64)),
                               torch.tensor([0.002, 80.0], dtype=torch.float64))


def test_polynomial_matches_edm_molecules_formula():
    # EDM-molecules: alphas2 = (1 - 2 s) (1 - t^2)^2 + s, gamma = -log(alphas2 / sigmas2)
    s = 1e-5
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    alphas2 = (1 - 2 * s) * (1 - t**2) ** 2 + s
    gamma = -(torch.log(alphas2) - torch.log(1 - alphas2))
    torch.testing.assert_close(schedules.get("polynomial").log_snr(t), -gamma)


def test_shift_moves_log_snr():
    base, shifted = schedules.get("cosine"), schedules.get("cosine", shift=-2.0)
    t = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    torch.testing.assert_close(shifted.log_snr(t), base.log_snr(t) - 2.0)


def test_zero_terminal_snr():
    sch = schedules.get("linear", zero_terminal_snr=True)
    a = sch.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64))
    base = schedules.get("linear").alpha(torch.tensor([0.0], dtype=torch.float64))
    assert a[1] == 0.0 and math.isclose(float(a[0]), float(base[0]), rel_tol=1e-12)
    assert sch.log_snr(torch.tensor(1.0)) == -schedules.LOG_SNR_LIMIT
    with pytest.raises(ValueError, match="VP"):
        schedules.get("edm", zero_terminal_snr=True)


@pytest.mark.parametrize("ours,theirs", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_discrete_schedules_match_diffusers(ours, theirs):
    import diffusers
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs).alphas_cumprod
    sch = schedules.get(ours)
    t = torch.arange(1000, dtype=torch.float64) / 999
    ac = sch.alpha(t) ** 2
    torch.testing.assert_close(ac, ref.double(), rtol=2e-5, atol=1e-9)


def test_bad_names_and_times():
    with pytest.raises(UnknownNameError, match="valid names: cosine, edm, flow"):
        schedules.get("cosin")
    sch = schedules.get("cosine")
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            sch.alpha(torch.tensor([0.5, bad]))
    with pytest.raises(TypeError, match="cosine"):
        schedules.get("cosine", nonsense=1)
