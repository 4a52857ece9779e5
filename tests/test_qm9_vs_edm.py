"""benchmarks/qm9_vs_edm.py: our QM9 molecules in EDM's batch format and back, and a few
seconds of EDM's side with a tiny model. Needs a copy of EDM's code
(../shared/anchors/edm next to the repository root, or $DIFFPLAT_EDM_DIR)."""

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import qm9_vs_edm as bench
from domains.molecules.features import Featurizer
from domains.molecules.metrics import edm_metrics
from domains.molecules.qm9 import load_qm9

EDM_DIR = bench.default_edm_dir()
needs_edm = pytest.mark.skipif(
    bool(bench.edm_missing(EDM_DIR)),
    reason=f"EDM's reference code not found at {EDM_DIR} (clone github.com/ehoogeboom/"
           "e3_diffusion_for_molecules there or set DIFFPLAT_EDM_DIR)")

TINY = ["--edm-layers", "1", "--edm-hidden", "16", "--edm-steps", "50", "--threads", "1",
        "--max-train", "100", "--batch-size", "16"]


@pytest.fixture(scope="module")
def edm():
    return bench.import_edm(EDM_DIR)


@needs_edm
def test_edm_batch_round_trips_to_the_cache_molecules(edm, qm9_small):
    """Our loader -> EDM's collate -> EDM's sample converter gives back the cache's own
    molecules exactly (read straight from the npz), and our metric the same answer."""
    domain = bench.qm9_domain(str(qm9_small), 40)
    mols = bench.training_molecules(domain)
    cache = load_qm9(qm9_small)
    rows = cache.split_indices("train")[:40]
    truth = [(cache.molecule(int(i))[0], cache.symbols(int(i))) for i in rows]
    assert len({len(s) for _, s in truth}) > 3          # padding and masks are exercised

    batch = bench.edm_batch(edm, mols)
    n_max = max(len(s) for _, s in truth)
    assert batch["positions"].shape == (40, n_max, 3)
    assert batch["one_hot"].shape == (40, n_max, 5)
    assert batch["edge_mask"].shape == (40 * n_max * n_max, 1)
    z = batch["charges"][..., 0]
    for k, i in enumerate(rows):
        n = len(truth[k][1])
        assert batch["atom_mask"][k].sum() == n
        assert z[k, :n].tolist() == cache.molecule(int(i))[1].astype(int).tolist()
    back = bench.edm_to_molecules(batch["one_hot"], batch["positions"], batch["atom_mask"])
    for m, (pos, sym) in zip(back, truth):
        assert m.symbols == sym
        np.testing.assert_array_equal(m.positions.astype(np.float32), pos)
    assert edm_metrics([(m.positions, m.symbols) for m in back]) == edm_metrics(truth)
    hist = np.bincount([len(s) for _, s in truth])
    assert bench.dataset_info(mols)["n_nodes"] == {n: int(c) for n, c in enumerate(hist) if c}


@needs_edm
def test_edm_normalisation_matches_our_features(edm, qm9_small):
    """EDM's model, built at the size asked, normalises the batch to our featurizer's
    encoding (centred positions, one-hot / 4, atomic number / 10)."""
    domain = bench.qm9_domain(str(qm9_small), 8)
    mols = bench.training_molecules(domain)
    args = bench.edm_args(layers=2, hidden=16, steps=20, lr=1e-4, ema=0.999)
    info = bench.dataset_info(mols)
    model, _, _ = edm.models.get_model(args, "cpu", info, None)
    egnn = model.dynamics.egnn
    assert egnn.n_layers == 2 and egnn.hidden_nf == 16 and model.T == 20
    assert [n for n, _ in egnn.named_children() if n.startswith("e_block")] == [
        "e_block_0", "e_block_1"]
    batch = bench.edm_batch(edm, mols)
    node_mask = batch["atom_mask"].float().unsqueeze(2)
    x = edm.utils.remove_mean_with_mask(batch["positions"], node_mask)
    h = {"categorical": batch["one_hot"].float(), "integer": batch["charges"].float()}
    x, h, _ = model.normalize(x, h, node_mask)
    feat = Featurizer()
    for k, (pos, typ) in enumerate(domain._splits["train"]):
        ours = feat.encode(pos, typ)
        n = len(typ)
        theirs = torch.cat([x[k, :n], h["categorical"][k, :n], h["integer"][k, :n]], 1)
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def _fake_run(path, seconds, steps, metrics, nfe):
    (path / "checkpoints").mkdir(parents=True)
    (path / "samples").mkdir()
    torch.save({"state_dict": {}, "diffplat": {"train_record": {"steps": steps,
                                                                "seconds": seconds}}},
               path / "checkpoints" / "last.ckpt")
    (path / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    (path / "samples" / "meta.json").write_text(json.dumps({"nfe": nfe, "seconds": 1.0}))
    return path


@needs_edm
def test_script_trains_samples_and_compares(qm9_small, tmp_path, capsys):
    ours_metrics = {"atom_stability": 0.5, "mol_stability": 0.02, "validity": 0.25,
                    "uniqueness": 1.0, "valid_and_unique": 0.25, "n_molecules": 4}
    run = _fake_run(tmp_path / "ours", seconds=3.0, steps=7, metrics=ours_metrics, nfe=100)
    out = tmp_path / "cmp.json"
    rc = bench.main(["--edm-dir", str(EDM_DIR), "--ours", str(run), "--num", "5",
                     "--data", str(qm9_small), "--json", str(out), *TINY])
    assert rc == 0
    res = json.loads(out.read_text())
    e, o = res["edm"], res["ours"]
    assert res["minutes"] == pytest.approx(0.05)        # our run's 3 s, by default
    assert e["steps"] >= 1 and e["num"] == 5
    assert e["nfe"] == 51                  # 50 ancestral steps + p(x, h | z0)
    assert e["edm_dir"] == str(EDM_DIR.resolve())
    for k in bench.METRICS:
        assert 0.0 <= e["metrics"][k] <= 1.0
        want = ours_metrics[k] / e["metrics"][k] if e["metrics"][k] else None
        assert res["ratio"][k] == (pytest.approx(want) if want is not None else None)
    assert o["steps"] == 7 and o["nfe"] == 100
    assert res["ratio"]["steps"] == pytest.approx(7 / e["steps"])
    assert res["ratio"]["nfe"] == pytest.approx(100 / 51)
    printed = capsys.readouterr().out
    assert "EDM (reference code)" in printed and "ratio ours / EDM" in printed
    row = next(r for r in printed.splitlines() if r.startswith("ratio ours / EDM"))
    assert f"{7 / e['steps']:.2f}" in row.split()
    assert not math.isnan(e["train_minutes"])


def test_default_edm_dir_is_next_to_the_repository(monkeypatch):
    monkeypatch.delenv("DIFFPLAT_EDM_DIR", raising=False)
    assert bench.default_edm_dir() == bench.ROOT.parent / "shared" / "anchors" / "edm"
    monkeypatch.setenv("DIFFPLAT_EDM_DIR", "/somewhere/edm")
    assert str(bench.default_edm_dir()) == "/somewhere/edm"
    assert bench.edm_missing("/somewhere/edm")
