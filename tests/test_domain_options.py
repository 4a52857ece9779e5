"""A domain's own sampling options reach it through one generic path (issue #25): the
domain declares them (``Domain.sampling_options``), ``Pipeline.sample(num, **options)``,
``diffplat sample --prior KEY=VALUE`` and a domain command's flags check them against the
declaration, and ``Domain.sample`` receives them; the core names none of them. The request
itself is checked and resolved once (``diffplat.request``)."""

import argparse

import pytest
import torch

from diffplat import Pipeline
from diffplat.checks import positive_int
from diffplat.cli import main
from diffplat.domain import SamplingOption
from diffplat.domain_options import add_option_flags, check_option_flags, check_options
from diffplat.model import DiffusionModel
from diffplat.request import SamplingRequest, resolve_sampler
from diffplat.tune import tune_resolve
from domains.toy import MLPBackbone, ToyDomain


def _positive(value, label):
    if value <= 0:
        raise ValueError(f"{label} must be > 0, got {value}")


class SpreadToy(ToyDomain):
    """The toy mixture with a declared option: ``spread`` scales the starting noise."""

    sampling_options = (
        SamplingOption("spread", float, check=_positive, help="scale of the starting noise"),
        SamplingOption("repeats", int, check=positive_int, help="unused, for the check"),
    )

    def prior(self, num, generator, device="cpu", spread=1.0, repeats=None):
        self.seen = {"spread": spread, "repeats": repeats}
        draw = super().prior(num, generator, device)
        draw.noise = draw.noise * spread
        return draw


class Undeclared(ToyDomain):
    sampling_options = None  # the older contract: every keyword reaches prior

    def prior(self, num, generator, device="cpu", **options):
        self.seen = options
        return super().prior(num, generator, device)


class Routing(SpreadToy):
    """A domain that samples its own way when an option asks (as conformers refine)."""

    sampling_options = (*SpreadToy.sampling_options, SamplingOption("mode", str,
                                                                   choices=("plain", "zeros")))

    def sample(self, model, num, request, options, draw, card=None):
        mode = options.pop("mode", "plain")
        self.request = request
        if mode == "zeros":
            return torch.zeros(num, self.dim), {"sampler": "none", "steps": 0}
        return draw(**options)


def _pipe(domain):
    torch.manual_seed(0)
    return Pipeline(DiffusionModel(domain, MLPBackbone(hidden=8, depth=1)), "toy-test")


def test_a_declared_option_reaches_the_domain_and_changes_the_samples():
    pipe = _pipe(SpreadToy())
    plain = pipe.sample(6, sampler="euler", steps=2, seed=1)
    assert pipe.domain.seen == {"spread": 1.0, "repeats": None}  # not given: not passed
    wide = pipe.sample(6, sampler="euler", steps=2, seed=1, spread=3.0, repeats=2)
    assert pipe.domain.seen == {"spread": 3.0, "repeats": 2}
    assert not torch.allclose(plain, wide)


@pytest.mark.parametrize("options, needle", [
    ({"spread": -1.0}, "spread must be > 0, got -1.0"),
    ({"spread": "wide"}, "spread must be a number, got 'wide'"),
    ({"spread": True}, "spread must be a number, got True"),
    ({"repeats": 0}, "repeats must be an integer >= 1, got 0"),
    ({"repeats": 2.5}, "repeats must be an integer, got 2.5"),
    ({"colour": 3}, "the 'toy' domain has no colour (unknown sampling option; its options: spread, "
                     "repeats)"),
])
def test_a_bad_option_is_refused_naming_it_before_any_sampling(options, needle):
    pipe = _pipe(SpreadToy())
    with pytest.raises(ValueError) as err:
        pipe.sample(4, sampler="euler", steps=2, **options)
    assert needle in str(err.value)
    assert not hasattr(pipe.domain, "seen")  # refused before the prior was drawn


def test_a_domain_may_sample_its_own_way_and_undeclared_options_pass_through():
    pipe = _pipe(Routing())
    out = pipe.sample(3, steps=4, seed=2, mode="zeros")
    assert torch.equal(out, torch.zeros(3, 2)) and pipe.last_stats["sampler"] == "none"
    assert pipe.domain.request.steps == 4 and pipe.domain.request.seed == 2
    with pytest.raises(ValueError, match="mode must be one of 'plain', 'zeros', got 'x'"):
        pipe.sample(3, mode="x")
    assert pipe.sample(3, sampler="euler", steps=2, mode="plain").shape == (3, 2)
    loose = _pipe(Undeclared())
    loose.sample(2, sampler="euler", steps=2, anything=1)
    assert loose.domain.seen == {"anything": 1}


def test_toy_declares_no_options_so_any_is_refused():
    with pytest.raises(ValueError, match="has no label .*its options: none"):
        _pipe(ToyDomain()).sample(2, label=1)


def test_command_line_flags_come_from_the_declaration(capsys):
    p = argparse.ArgumentParser(prog="toy-cmd")
    options = (*SpreadToy.sampling_options,
               SamplingOption("smiles", str, many=True), SamplingOption("fast", bool))
    add_option_flags(p, options)
    args = p.parse_args(["--spread", "2", "--smiles", "CCO", "--smiles", "CO", "--fast"])
    check_option_flags(p, args, options)
    assert (args.spread, args.smiles, args.fast, args.repeats) == (2.0, ["CCO", "CO"], True,
                                                                   None)
    with pytest.raises(SystemExit):
        check_option_flags(p, p.parse_args(["--spread", "-2"]), options)
    assert "toy-cmd: error: --spread must be > 0, got -2.0" in capsys.readouterr().err
    assert check_options(options, {"smiles": "CCO"}, "x") == {"smiles": "CCO"}
    with pytest.raises(ValueError, match="--prior spread must be > 0"):
        check_options(options, {"spread": 0}, "x", lambda k: f"--prior {k}")


def test_the_generic_sample_command_checks_and_routes_domain_options(tmp_path, capsys):
    """`diffplat sample --prior` reaches the conformer domain's own refinement (declared in
    its plug-in) and a bad or unknown option is one line naming it."""
    for prior, needle in ((["noise_level=2", "refine_from=etkdg", "smiles=CCO"],
                           "--prior noise_level must be in (0, 1], got 2"),
                          (["colour=red"], "has no --prior colour")):
        argv = ["sample", "--model", "conformers-qm9-refine", "--num", "2", "--no-progress",
                "--out", str(tmp_path / "bad")]
        assert main([*argv, *[a for p in prior for a in ("--prior", p)]]) == 1
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    out = tmp_path / "refined"
    assert main(["sample", "--model", "conformers-qm9-refine", "--num", "2", "--steps", "2",
                 "--prior", "smiles=CCO", "--prior", "refine_from=etkdg", "--no-progress",
                 "--out", str(out)]) == 0
    assert (out / "conformers.sdf").is_file()


def test_one_integer_rule_and_one_resolver():
    with pytest.raises(ValueError, match="--nfe must be an integer >= 1, got 0"):
        positive_int(0, "--nfe")
    with pytest.raises(ValueError, match="x must be an integer >= 1, got True"):
        positive_int(True, "x")
    assert positive_int(torch.tensor(3).item(), "x") == 3
    with pytest.raises(ValueError, match="give --steps or --nfe, not both"):
        SamplingRequest(steps=2, nfe=3).check({"steps": "--steps", "nfe": "--nfe"})
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        SamplingRequest(batch_size=0).check()
    for name in ("auto", "unipc", "dpmpp-2m"):
        assert tune_resolve(name, 10, {}) == resolve_sampler(name, nfe=10)
