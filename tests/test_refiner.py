"""A truncated training range (``t_options: {low, high}``): the t-samplers stay inside it, and a
model trained on t <= high < 1 is a refiner that generate() and the CLIs refuse to run from
pure noise or above its range, naming the range."""

import json

import pytest
import torch

from diffplat import losses, schedules
from diffplat.cli import main
from diffplat.sampling import generate
from diffplat.training.module import DiffusionModule
from domains.toy import ExactDenoiser, GaussianMixture, MLPBackbone
from domains.toy.domain import ToyDomain

SCHED = schedules.get("cosine")


def test_truncated_uniform_and_low_discrepancy_stay_in_their_range():
    g = torch.Generator().manual_seed(0)
    t = losses.sample_t("uniform", 20000, SCHED, g, high=0.3).double()
    assert float(t.min()) >= 0 and float(t.max()) <= 0.3
    assert abs(float(t.mean()) - 0.15) < 0.005          # U[0, 0.3]: mean 0.15
    assert abs(float(t.std()) - 0.3 / 12 ** 0.5) < 0.005  # and std 0.3 / sqrt(12)
    t = losses.sample_t("low_discrepancy", 8, SCHED, g, low=0.2, high=0.6).sort().values
    torch.testing.assert_close(t.diff(), torch.full((7,), 0.05), atol=1e-6, rtol=0)
    assert 0.2 <= float(t.min()) < 0.25 and float(t.max()) < 0.6
    # the defaults are the untruncated samplers, draw for draw
    a = losses.sample_t("uniform", 16, SCHED, torch.Generator().manual_seed(3))
    b = losses.sample_t("uniform", 16, SCHED, torch.Generator().manual_seed(3), low=0.0,
                        high=1.0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler,options,match", [
    ("uniform", {"high": 1.5}, "0 <= low < high <= 1"),
    ("uniform", {"low": 0.5, "high": 0.5}, "0 <= low < high <= 1"),
    ("lognormal", {"high": 0.5}, "not 'lognormal'"),
])
def test_bad_ranges_are_refused_naming_the_option(sampler, options, match):
    with pytest.raises(ValueError, match=match):
        losses.DiffusionLoss(t_sampler=sampler, t_options=options)


def test_the_loss_draws_its_times_inside_the_range():
    loss = losses.DiffusionLoss(t_sampler="uniform", t_options={"high": 0.25})
    assert loss.time_range == (0.0, 0.25)
    den = DiffusionModule(ToyDomain(), MLPBackbone(hidden=8, depth=1)).denoiser
    x0 = torch.randn(512, 2)
    _, t = loss(den, x0, generator=torch.Generator().manual_seed(0))
    assert float(t.max()) <= 0.25 and float(t.max()) > 0.2


def test_a_refiner_module_refuses_pure_noise_and_starts_above_its_range():
    module = DiffusionModule(ToyDomain(), MLPBackbone(hidden=8, depth=1),
                             t_options={"high": 0.3})
    assert module.denoiser.max_t == module.ema_denoiser.max_t == 0.3
    assert DiffusionModule(ToyDomain(), MLPBackbone(hidden=8, depth=1)).ema_denoiser.max_t == 1
    domain = ToyDomain()
    den = ExactDenoiser(GaussianMixture.default(), SCHED)
    den.max_t = 0.3
    with pytest.raises(ValueError, match=r"t <= 0.3 only .* cannot sample from pure noise"):
        generate(den, domain, 4, sampler="euler", steps=2)
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"cannot start at t = 0.5; use t <= 0.3"):
        generate(den, domain, 4, sampler="euler", steps=2, start=(x, 0.5))
    out, _ = generate(den, domain, 4, sampler="euler", steps=2, start=(x, 0.3))
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_conformer_refiner_fits_keeps_its_range_and_the_cli_names_it(qm9_small, tmp_path,
                                                                     capsys):
    from diffplat.training.checkpoint import load_module
    from tests.test_conformers_cli import CONFIG

    text = CONFIG.format(root=tmp_path / "run", data=qm9_small).replace(
        "  target: eps\n", "  target: eps\n  t_options: {high: 0.3}\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert load_module(ckpt).ema_denoiser.max_t == 0.3  # the range survives the checkpoint
    out = tmp_path / "eval"
    for bad, said in ((["--noise-level", "0.5", "--refine-from", "etkdg"],
                       "--noise-level 0.5 is above the t <= 0.3"),
                      ([], "is a refiner (trained on t <= 0.3 only)")):
        with pytest.raises(SystemExit):
            main(["evaluate", "conformers", "--ckpt", ckpt, "--num-mols", "2", *bad,
                  "--out", str(out)])
        assert said in capsys.readouterr().err
        assert not out.exists()  # refused before any work
    with pytest.raises(SystemExit):
        main(["conformers", "--ckpt", ckpt, "--smiles", "CCO", "--out",
              str(tmp_path / "c.sdf")])
    assert "is a refiner" in capsys.readouterr().err
    assert main(["evaluate", "conformers", "--ckpt", ckpt, "--num-mols", "2", "--steps", "2",
                 "--refine-from", "etkdg", "--noise-level", "0.3", "--scoring", "td",
                 "--out", str(out)]) == 0
    info = json.loads((out / "metrics.json").read_text())
    assert info["refine"]["t"] == 0.3 and len(info["rows"]) == 1
    # a card made from it keeps how it was sampled, refinement included
    assert main(["export", "--ckpt", ckpt, "--out", str(tmp_path / "card"), "--name", "r",
                 "--metrics", str(out / "metrics.json")]) == 0
    card = json.loads((tmp_path / "card" / "card.json").read_text())
    assert card["measured_with"]["steps"] == 2 and card["measured_with"]["sampler"]
    assert card["measured_with"]["refine"]["t"] == 0.3
    assert card["metrics"]["model_cov_r_mean"] == info["metrics"]["model_cov_r_mean"]
    # the generic sampler says why too (a one-line error, exit status 2)
    assert main(["sample", "--ckpt", ckpt, "--num", "2", "--out", str(tmp_path / "s"),
                 "--no-progress"]) != 0
    assert "cannot sample from pure noise" in capsys.readouterr().err


def test_the_python_api_refines_as_the_cli_does(tmp_path):
    """``Pipeline.sample(refine_from="etkdg")`` on the shipped refiner: the conformers of
    ``diffplat conformers --refine-from etkdg`` (same seed and noise level, read back from
    its SDF), each still the ETKDG start's molecule (RMSD to its start well below that of an
    unrelated ETKDG conformer set), and its card's noise level when none is given."""
    import numpy as np
    from rdkit import Chem

    import diffplat
    from domains.molecules.conformers.baseline import rdkit_conformers

    model = diffplat.load("conformers-qm9-refine")
    smiles = ["CCO", "OCCCC#N"]
    with pytest.raises(ValueError, match="is a refiner .* refine_from='etkdg'"):
        model.sample(4, smiles=smiles)
    with pytest.raises(ValueError, match="noise_level must be in"):
        model.sample(4, smiles=smiles, refine_from="etkdg", noise_level=1.5)
    with pytest.raises(ValueError, match="refine_from must be 'etkdg'"):
        model.sample(4, smiles=smiles, refine_from="mmff", noise_level=0.4)
    confs = model.sample(6, smiles=smiles, refine_from="etkdg", seed=3)  # the card's t
    assert model.last_stats["refine"]["t"] == model.card["measured_with"]["refine"]["t"]
    assert len(confs) == 6 and [c.graph.mol.GetNumAtoms() for c in confs[::3]] == [9, 13]
    sdf = tmp_path / "c.sdf"
    assert main(["conformers", "--model", "conformers-qm9-refine", "--smiles", smiles[0],
                 "--smiles", smiles[1], "-n", "3", "--seed", "3", "--refine-from", "etkdg",
                 "--noise-level", str(model.last_stats["refine"]["t"]), "--out",
                 str(sdf)]) == 0
    cli = [m.GetConformer().GetPositions() for m in Chem.SDMolSupplier(str(sdf), removeHs=False)]
    assert len(cli) == 6
    for c, ref in zip(confs, cli):
        np.testing.assert_allclose(c.positions - c.positions.mean(0), ref - ref.mean(0),
                                   atol=1e-3)

    def rmsd(a, b):  # after centring and the optimal rotation (Kabsch)
        a, b = a - a.mean(0), b - b.mean(0)
        u, _, vt = np.linalg.svd(a.T @ b)
        d = np.sign(np.linalg.det(u @ vt))
        r = u @ np.diag([1, 1, d]) @ vt
        return float(np.sqrt(((a @ r - b) ** 2).sum(1).mean()))

    # the flexible chain's three ETKDG starts differ (RMSD > 1 A between them); each refined
    # conformer stays nearest to the start it was refined from
    starts = rdkit_conformers(confs[3].graph.mol, 3, seed=3)
    for k, c in enumerate(confs[3:]):
        dist = [rmsd(c.positions, s) for s in starts]
        assert dist[k] < 0.5 and dist[k] == min(dist), dist


def test_the_readme_conformer_line_runs_and_other_domains_refuse_refinement():
    """The README's Python block that refines conformers gives 5 conformers of its SMILES;
    a model of a domain without refinement says so instead of sampling."""
    from pathlib import Path

    import diffplat

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    block = next(b for b in blocks if "refine_from" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    confs = scope["confs"]
    assert len(confs) == 5 and {c.graph.mol.GetNumAtoms() for c in confs} == {12}  # CC(=O)NC
    shapes = diffplat.load("shapes-procedural")
    with pytest.raises(ValueError, match="shapes.* has no refine_from"):
        shapes.sample(2, refine_from="etkdg", noise_level=0.3)


def test_the_cli_takes_the_noise_level_from_the_model_card(tmp_path, capsys):
    """``diffplat conformers --model conformers-qm9-refine --refine-from etkdg`` without
    --noise-level refines at the t its card names (read here from card.json), as the Python
    API does: the same conformers as with that --noise-level given, not those of another."""
    import numpy as np
    from rdkit import Chem

    from diffplat.models import card, find_model

    card_t = card("conformers-qm9-refine")["measured_with"]["refine"]["t"]
    args = ["conformers", "--model", "conformers-qm9-refine", "--smiles", "OCCC#N", "-n", "2",
            "--seed", "1", "--refine-from", "etkdg"]

    def run(*extra):
        out = tmp_path / f"c{len(list(tmp_path.iterdir()))}.sdf"
        assert main([*args, *extra, "--out", str(out)]) == 0
        return [m.GetConformer().GetPositions() for m in Chem.SDMolSupplier(str(out))]

    default = run()
    assert f"noise level {card_t:g} from the model card of conformers-qm9-refine" in \
        capsys.readouterr().out
    np.testing.assert_array_equal(default, run("--noise-level", str(card_t)))
    assert np.abs(np.array(default) - np.array(run("--noise-level", "0.1"))).max() > 0.01
    # a model whose card names no noise level still needs one, said in one line
    import shutil

    export = tmp_path / "export"
    shutil.copytree(find_model("conformers-qm9-refine"), export)
    (export / "card.json").unlink()
    with pytest.raises(SystemExit):
        main(["conformers", "--ckpt", str(export), "--smiles", "CCO", "--refine-from",
              "etkdg", "--out", str(tmp_path / "x.sdf")])
    assert "--refine-from etkdg needs --noise-level T" in capsys.readouterr().err
