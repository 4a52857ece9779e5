"""Typed sampler options (diffplat.samplers.options): every sampler declares what it takes,
the declaration matches the function, and a call's options are checked against it."""

import inspect
import math

import pytest
import torch

from diffplat import samplers, schedules
from diffplat.samplers.base import VEModel, setup
from diffplat.samplers.grids import noise_levels
from diffplat.samplers.options import COMMON, GRID_OPTIONS
from diffplat.samplers.tuning import GRID_OPTIONS as TUNING_GRID
from diffplat.sampling import check_sampler_options, sampler_options
from domains.toy import ExactDenoiser, GaussianMixture

MIX = GaussianMixture.default()
#: what the pipeline passes itself: the call's, not the user's, so not declared
CALL = {"generator", "noise_space", "callback", "stats", "start"}


def _keywords(fn) -> dict[str, object]:
    """A function's keyword options and their defaults (the positional contract aside)."""
    skip = {"self", "denoise", "noise", "schedule", "steps"}
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in skip}


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


@pytest.mark.parametrize("name", samplers.names())
def test_each_samplers_declaration_matches_its_signature(name):
    """Every keyword the function names is declared, with the function's default; the
    declaration names nothing the sampler would refuse (its own keywords, or the grid's and
    the model view's, which ``setup`` takes)."""
    own = {o.name: o.default for o in samplers.options(name, common=False)}
    keywords = _keywords(samplers.get(name))
    assert set(keywords) <= set(own), set(keywords) - set(own)
    for key, default in keywords.items():
        assert _same(own[key], default), (key, own[key], default)
    assert set(own).isdisjoint(GRID_OPTIONS) and "check_finite" not in own
    assert set(sampler_options(name)) == set(own) | {o.name for o in COMMON}


def test_the_common_options_are_what_setup_and_the_model_view_take():
    taken = (set(_keywords(setup)) | set(_keywords(VEModel.__init__))) - CALL
    assert taken == {o.name for o in COMMON}
    grid = set(_keywords(noise_levels)) | {"levels"}
    assert set(GRID_OPTIONS) == grid and TUNING_GRID == GRID_OPTIONS
    defaults = {o.name: o.default for o in COMMON}
    assert defaults["check_finite"] is True and all(
        defaults[k] is None for k in GRID_OPTIONS)  # None: the schedule's or the sampler's


@pytest.mark.parametrize("family", ["cosine", "edm"])
@pytest.mark.parametrize("name", samplers.names())
def test_calling_with_each_declared_default_is_calling_without_it(name, family):
    """Each declared option accepts its declared default, and the default is the sampler's
    (per-sampler VP grids included: a None default leaves SAMPLER_DEFAULTS in charge)."""
    sched = schedules.get(family)
    den = ExactDenoiser(MIX, sched)
    noise = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def run(**options):
        check_sampler_options(name, options)
        gen = torch.Generator().manual_seed(2)
        return samplers.get(name)(den, noise, sched, 4, generator=gen, **options)

    plain = run()
    assert torch.isfinite(plain).all()
    for option in samplers.options(name):
        got = run(**{option.name: option.default})
        assert torch.equal(got, plain), (option.name, option.default)


@pytest.mark.parametrize("name,options,message", [
    ("ddim", {"eta": "half"}, "sampler 'ddim': eta must be a number >= 0, got 'half'"),
    ("ddim", {"eta": -0.5}, "sampler 'ddim': eta must be a number >= 0, got -0.5"),
    ("euler", {"s_churn": float("nan")}, "sampler 'euler': s_churn must be a number >= 0"),
    ("unipc", {"order": 4}, "sampler 'unipc': order must be an integer from 1 to 3, got 4"),
    ("deis", {"order": 2.0}, "sampler 'deis': order must be an integer from 1 to 4, got 2.0"),
    ("ipndm", {"order": True}, "sampler 'ipndm': order must be an integer from 1 to 4"),
    ("unipc", {"variant": "bh3"}, "sampler 'unipc': variant must be one of 'bh1', 'bh2'"),
    ("deis", {"variable": "t"}, "variable must be one of 'log_rho', 'rho', got 't'"),
    ("dpmpp_3m", {"coefficients": 1}, "coefficients must be one of 'taylor', 'dpm_solver'"),
    ("heun", {"denoise_final": "yes"}, "sampler 'heun': denoise_final must be true or false"),
    ("heun", {"level_max": 0}, "sampler 'heun': level_max must be a number > 0, got 0"),
    ("euler_anneal", {"gamma": -1}, "sampler 'euler_anneal': gamma must be a number >= 0"),
    ("adaptive", {"max_nfe": 0}, "sampler 'adaptive': max_nfe must be an integer >= 1, got 0"),
    ("adaptive", {"rtol": 0}, "sampler 'adaptive': rtol must be a number > 0, got 0"),
    ("dpmpp_2m", {"spacing": "even"}, "sampler 'dpmpp_2m': spacing: unknown step spacing "
                                      "'even'; valid names: arcsin, karras"),
])
def test_a_wrong_type_or_range_is_refused_naming_the_option_and_the_sampler(name, options,
                                                                            message):
    with pytest.raises(ValueError) as err:
        check_sampler_options(name, options)
    assert message in str(err.value)


def test_an_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        check_sampler_options("ddim", {"colour": 3, "eta": 0.5})
    assert str(err.value) == ("unknown option(s) colour for sampler 'ddim'; valid: "
                              "check_finite, denoise_final, eta, level_max, level_min, "
                              "levels, rho, s_noise, spacing")
    with pytest.raises(ValueError, match="valid: .*order.*variant"):
        samplers.check_options("UniPC", {"orders": 2})
    with pytest.raises(ValueError, match="unknown sampler 'dpm\\+\\+'; valid names"):
        samplers.options("dpm++")


def test_allowed_values_pass_unchanged():
    import numpy as np

    check_sampler_options("unipc", {"order": np.int64(2), "variant": "bh1", "corrector": False,
                                    "lower_order_final": None, "level_max": math.inf,
                                    "level_min": 0, "spacing": "Log-SNR", "rho": 7,
                                    "denoise_final": None, "levels": [80.0, 1.0, 0.0]})
    check_sampler_options("euler_anneal", {"gamma": None, "s_tmax": 3})


def test_the_listing_shows_types_defaults_and_the_per_schedule_grid():
    text = samplers.describe("heun")
    assert "s_churn (a number >= 0; default 0.0)" in text
    assert "level_max (a number > 0; default not set, on vp schedules 20.0)" in text
    # euler_anneal samples on euler's grid: its listing says so
    assert "spacing (a step spacing's name; default not set, on vp schedules 'uniform_t')" \
        in samplers.describe("euler_anneal")
    assert len(samplers.describe("dpmpp_2m").splitlines()) == len(COMMON)
