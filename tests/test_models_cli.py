"""``diffplat models`` and ``diffplat.models`` after a bare ``import diffplat``."""

import json
import subprocess
import sys
from pathlib import Path

from diffplat.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _cards() -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted((ROOT / "models").glob("*/card.json"))}


def test_models_is_reachable_after_import_diffplat():
    code = "import diffplat, json; print(json.dumps(sorted(diffplat.models.shipped())))"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == sorted(_cards())


def test_every_card_names_headline_metrics_it_has():
    for name, card in _cards().items():
        assert card["headline"], name
        assert set(card["headline"]) <= set(card["metrics"]), name


def test_models_lists_each_shipped_model_with_its_card_figures(capsys):
    assert main(["models", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    cards = _cards()
    assert set(listed) == set(cards)
    for name, card in cards.items():
        assert listed[name]["domain"] == card["domain"]
        assert listed[name]["headline"] == {k: card["metrics"][k] for k in card["headline"]}
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name, card in cards.items():
        assert name in text
        first = card["headline"][0]
        assert f"{first} {card['metrics'][first]:.4g}" in text
        m = card["metrics"]
        for key in card["headline"]:   # a 95% interval where the card has one
            if f"{key}_ci_low" in m:
                assert (f"{key} {m[key]:.4g} [{m[key + '_ci_low']:.4g}, "
                        f"{m[key + '_ci_high']:.4g}]") in text


def test_models_lists_without_importing_torch():
    code = ("import sys; from diffplat.cli import main; main(['models']); "
            "print('torch' in sys.modules, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stderr.strip().splitlines()[-1] == "False", res.stderr
