"""benchmarks/card_metrics.py: a card's figures over several sampling seeds with 95%
intervals (issue #24: a headline over at least two seeds, not one seed's draw)."""

import json
import math

import pytest
from scipy import stats

from benchmarks import card_metrics as cm
from diffplat.cli import main
from tests.helpers import write_config


@pytest.mark.parametrize("values", [[0.223, 0.197], [0.227, 0.197, 0.153],
                                    [0.9, 0.91, 0.905, 0.92, 0.899]])
def test_the_interval_is_students_t_over_the_seeds(values):
    mean, low, high = cm.interval(values)
    k = len(values)
    want = stats.t.interval(0.95, k - 1, loc=sum(values) / k, scale=stats.sem(values))
    assert mean == pytest.approx(sum(values) / k)
    assert (low, high) == pytest.approx(want, abs=1e-4)


def test_combine_keeps_each_seed_and_the_sampling_settings():
    runs = {s: {"metrics": {"w2": w, "n": 10, "name": "x"}, "sampler": "heun", "steps": 5,
                "spacing": "arcsin", "sampler_options": {"level_min": 0.01}, "seed": s,
                "seconds": 1.0} for s, w in ((0, 0.2), (3, 0.4))}
    out = cm.combine(runs)
    m = out["metrics"]
    assert m["w2"] == pytest.approx(0.3) and m["w2_seed0"] == 0.2 and m["w2_seed3"] == 0.4
    half = 12.706 * math.sqrt(0.02) / math.sqrt(2)
    assert (m["w2_ci_low"], m["w2_ci_high"]) == pytest.approx((0.3 - half, 0.3 + half))
    assert "name" not in m and out["seeds"] == [0, 3]
    assert {k: out[k] for k in ("sampler", "steps", "spacing", "sampler_options")} == {
        "sampler": "heun", "steps": 5, "spacing": "arcsin",
        "sampler_options": {"level_min": 0.01}}
    assert "seed" not in out and "seconds" not in out


def test_end_to_end_on_a_toy_model_and_into_a_card(tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", tmp_path / "run", max_steps=20)
    assert main(["fit", "-c", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "card.json"
    assert cm.main(["--ckpt", str(ckpt), "--seeds", "0", "1", "--num", "64", "--json",
                    str(out), "--", "--sampler", "heun", "--steps", "4"]) == 0
    got = json.loads(out.read_text())
    singles = []
    for seed in (0, 1):
        one = tmp_path / f"s{seed}.json"
        assert main(["evaluate", "--ckpt", str(ckpt), "--num", "64", "--seed", str(seed),
                     "--sampler", "heun", "--steps", "4", "--json", str(one)]) == 0
        singles.append(json.loads(one.read_text())["metrics"])
    key = next(k for k, v in singles[0].items() if isinstance(v, float))
    assert got["metrics"][f"{key}_seed0"] == singles[0][key]
    assert got["metrics"][f"{key}_seed1"] == singles[1][key]
    assert got["metrics"][key] == pytest.approx((singles[0][key] + singles[1][key]) / 2)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "m"), "--name", "m",
                 "--metrics", str(out)]) == 0
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["metrics"][f"{key}_ci_low"] <= card["metrics"][key]
    assert card["measured_with"]["sampler"] == "heun"
