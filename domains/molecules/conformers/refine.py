"""Conformers refined from RDKit ETKDG starts (``Pipeline.sample(refine_from="etkdg")``).

Each ETKDG conformer is noised to schedule time ``noise_level`` and the reverse process runs
from there (SDEdit, Meng et al. 2022), as ``diffplat conformers --refine-from etkdg`` does.
ETKDG's own seconds are counted in the record. ``refine_settings`` is the one rule for the
refinement options (``refine_from``, ``noise_level``, ``mmff``; options.py) that the Python
API and both conformer commands apply: the noise level of the model card when none is
given, and a refiner (a model trained on t <= max_t < 1 only) refused without a start.
"""

from __future__ import annotations

import time
from typing import Any


def card_refine(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """How a model card says its model refines (``measured_with``'s ``refine``: ``t`` and
    maybe ``mmff``), or None."""
    refine = ((card or {}).get("measured_with") or {}).get("refine")
    return refine if isinstance(refine, dict) and "t" in refine else None


def refine_settings(options: dict[str, Any], max_t: float, card: dict[str, Any] | None,
                    model: str = "this model", cli: bool = False
                    ) -> tuple[str | None, float | None, bool, bool]:
    """Take ``refine_from``, ``noise_level`` and ``mmff`` out of ``options`` (already
    checked against options.py) and return ``(refine_from, noise_level, mmff, from_card)``:
    the noise level (and MMFF relaxation) of ``card`` when none is given, ``from_card``
    saying so. ValueError, naming the options as Python keywords or, with ``cli``, as
    ``diffplat conformers`` flags: a noise level without a start; a model trained on
    t <= ``max_t`` < 1 only without a start (it cannot sample from pure noise) or with a
    noise level above ``max_t``; a start without a noise level anywhere. With ``cli``,
    ``mmff`` alone is allowed (it relaxes ``--baseline rdkit`` conformers)."""

    def say(name: str, value: Any = None) -> str:
        if cli:
            flag = "--" + name.replace("_", "-")
            return flag if value is None else f"{flag} {value}"
        return name if value is None else f"{name}={value!r}"

    start = options.pop("refine_from", None)
    t = options.pop("noise_level", None)
    mmff = bool(options.pop("mmff", None))
    if start is None:
        if t is not None or (mmff and not cli):
            lone = say("noise_level") if t is not None else say("mmff")
            raise ValueError(f"{lone} belongs to refinement: give {say('refine_from', 'etkdg')}"
                             " too")
        if max_t < 1.0:
            known = card_refine(card)
            raise ValueError(
                f"{model} is a refiner (trained on t <= {max_t:g} only) and cannot sample from "
                f"pure noise: give {say('refine_from', 'etkdg')} and {say('noise_level')} <= "
                f"{max_t:g}" + (f" (its card: {known['t']})" if known else ""))
        return None, None, mmff, False
    from_card = t is None
    if from_card:
        known = card_refine(card)
        if known is None:
            raise ValueError(f"{say('refine_from', start)} needs {say('noise_level')} T "
                             f"(schedule time in (0, 1] of the start): {model} has no model "
                             "card naming one")
        t = float(known["t"])
        mmff = mmff or bool(known.get("mmff"))
    if float(t) > max_t + 1e-9:
        raise ValueError(f"{say('noise_level', t)} is above the t <= {max_t:g} that {model} "
                         "was trained on")
    return start, float(t), mmff, from_card


def sample_conformers(domain, model, num: int, request, options: dict[str, Any], draw,
                      card: dict[str, Any] | None = None) -> tuple[list, dict[str, Any]]:
    """``ConformerDomain.sample``: refined from ETKDG when ``options`` name ``refine_from``
    (``refine_settings``), else the core's sampling ``draw`` with the prior options."""
    options = dict(options)
    start, t, mmff, _ = refine_settings(options, float(model.ema_denoiser.max_t), card)
    if start is None:
        return draw(**options)
    if request.nfe is not None or request.options:
        raise ValueError("refinement takes sampler and steps (not nfe or options)")
    return refine_conformers(domain, model, num, start=start, noise_level=t, mmff=mmff,
                             sampler=request.sampler or model.hparams.sampler,
                             steps=request.steps or model.hparams.sample_steps,
                             seed=request.seed, prior=options)


def refine_conformers(domain, module, num: int, *, start: str, noise_level: float,
                      mmff: bool, sampler: str, steps: int, seed: int,
                      prior: dict[str, Any]) -> tuple[list, dict[str, Any]]:
    """``num`` conformers of ``prior["smiles"]`` (``copies`` each), refined from ETKDG
    (``mmff``: relaxed with MMFF94 first); returns them with the sampling record. A molecule
    outside the model's training range raises an ``OutOfRangeError`` before anything runs,
    or with ``prior["allow_out_of_range"]`` warns and goes on (scope.py)."""
    from domains.molecules.conformers.baseline import rdkit_conformers
    from domains.molecules.conformers.domain import Conformer
    from domains.molecules.conformers.io import smiles_graphs
    from domains.molecules.conformers.sample import model_conformers
    from domains.molecules.conformers.scope import check_graphs

    if start != "etkdg":
        raise ValueError(f"refine_from must be 'etkdg', got {start!r}")
    extra = set(prior) - {"smiles", "copies", "allow_out_of_range"}
    if "smiles" not in prior or extra:
        raise ValueError("refinement takes smiles= (and copies=, allow_out_of_range=)"
                         + (f", not {sorted(extra)}" if extra else ""))
    smiles = prior["smiles"]
    mols = smiles_graphs(smiles, domain.vocabulary)
    check_graphs(mols, domain.training_range(), bool(prior.get("allow_out_of_range")))
    copies = prior.get("copies")
    if copies is None and num % len(mols) == 0:
        copies = num // len(mols)
    if copies is None or num != len(mols) * copies:
        raise ValueError(f"num={num} must be len(smiles) * copies = {len(mols)} * "
                         f"{copies if copies is not None else 'copies'}")
    names = [smiles] if isinstance(smiles, str) else list(smiles)
    t0 = time.perf_counter()
    starts = [rdkit_conformers(g.mol, copies, mmff, seed) for g in mols]
    etkdg_seconds = time.perf_counter() - t0
    failed = [names[k] for k, s in enumerate(starts) if not s]
    if failed:
        raise ValueError("RDKit could not embed " + ", ".join(map(repr, failed))
                         + " (no ETKDG start to refine)")
    t0 = time.perf_counter()
    out = model_conformers(module, mols, copies, sampler, steps, seed,
                           device=str(module.device), starts=starts, start_t=noise_level)
    stats = {"sampler": sampler, "steps": steps,
             "refine": {"from": "etkdg", "t": noise_level, "mmff": mmff},
             "etkdg_seconds": etkdg_seconds,
             "seconds": etkdg_seconds + time.perf_counter() - t0}
    return [Conformer(g, pos) for g, confs in zip(mols, out) for pos in confs], stats
