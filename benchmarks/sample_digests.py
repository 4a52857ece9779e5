"""Digests of every shipped model's samples at a fixed seed: the proof that a restructuring
changed nothing (issue #25). ``tests/test_sample_digests.py`` recomputes them.

For each model in ``models/`` (``diffplat models``) a small batch is sampled with few steps
through ``diffplat.load(name).sample(...)`` (the sampler the model's card was measured
with; the conformer refiner from RDKit ETKDG starts of two fixed SMILES, at its card's
noise level; the audio model with a label and its card's guidance). What is hashed is the
denoised states x0 every ``generate`` chunk hands the domain's ``decode`` (float32, in
order), so the digest covers the weights, the configuration, the sampler and the domain's
prior, whatever the domain decodes them into. Recorded per model: the SHA-256 of those
bytes, the first values (float64) for a tolerance check on other machines, and the SHA-256
of the weights file, so that a retrained model is never accepted silently.

    OMP_NUM_THREADS=1 python benchmarks/sample_digests.py            # every model
    OMP_NUM_THREADS=1 python benchmarks/sample_digests.py --only qm9-small

The file also records the environment (torch version, machine, CPU model): the test asks
for bit equality only where the environment matches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "sample_digests.json"
FIRST = 8  # values stored for the tolerance check

#: what each shipped model samples (``Pipeline.sample`` keywords); a model not listed
#: samples 4 items at the sampler of its card
REQUESTS: dict[str, dict[str, Any]] = {
    "conformers-qm9-refine": {"num": 2, "smiles": ["CCO", "CC(=O)OC"], "refine_from": "etkdg",
                              "steps": 3},
    "digits-small": {"num": 2, "label": "seven", "steps": 3, "guidance": 3.0},
    "qm9-alpha-small": {"num": 4, "steps": 3},
    "qm9-small": {"num": 4, "steps": 3},
    "shapes-procedural": {"num": 2, "steps": 3},
}


def environment() -> dict[str, str]:
    import torch

    from diffplat.store.cards import cpu_name

    return {"torch": torch.__version__, "machine": platform.machine(), "cpu": cpu_name()}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_sha256(name: str) -> str:
    from diffplat.models import find_model

    return file_sha256(find_model(name) / "model.safetensors")


def request(name: str) -> dict[str, Any]:
    from diffplat.models import card

    how = dict(card(name).get("measured_with") or {})
    req = {"num": 4, "steps": 3, **REQUESTS.get(name, {})}
    req.setdefault("sampler", how.get("sampler") or card(name).get("sampler"))
    if how.get("spacing"):  # the card's grid, as its metrics were measured
        req.setdefault("spacing", how["spacing"])
    if how.get("sampler_options"):
        req.setdefault("options", dict(how["sampler_options"]))
    req["seed"] = 0
    return req


def sample_states(name: str) -> list[Any]:
    """The x0 tensors that ``decode`` receives while sampling ``request(name)``."""
    import torch

    import diffplat

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # another thread count may sum in another order
    pipe = diffplat.load(name)
    states: list[torch.Tensor] = []
    domain = pipe.domain
    decode = domain.decode

    def recording(x0, *args, **kwargs):
        states.append(x0.detach().cpu().clone())
        return decode(x0, *args, **kwargs)

    domain.decode = recording  # the instance attribute shadows the method
    try:
        req = request(name)
        pipe.sample(req.pop("num"), **req)
    finally:
        del domain.decode
        torch.set_num_threads(threads)
    return states


def digest(name: str) -> tuple[dict[str, Any], float]:
    """(the entry recorded for ``name``, seconds it took)."""
    import torch

    t0 = time.perf_counter()
    states = sample_states(name)
    h = hashlib.sha256()
    for x in states:
        x = x.contiguous()
        h.update(str((tuple(x.shape), str(x.dtype))).encode())
        h.update(x.numpy().tobytes())
    flat = torch.cat([x.reshape(-1) for x in states]).double()
    return {"sha256": h.hexdigest(), "first": flat[:FIRST].tolist(),
            "numel": int(flat.numel()), "weights_sha256": weights_sha256(name),
            "request": request(name)}, round(time.perf_counter() - t0, 2)


def main(argv: list[str] | None = None) -> int:
    from diffplat.models import shipped

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", action="append", help="regenerate this model's entry only "
                   "(repeatable); the others stay as recorded")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    names = sorted(shipped())
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        p.error(f"not shipped: {', '.join(unknown)} (shipped: {', '.join(names)})")
    data = {"environment": environment(), "models": {}}
    if args.only and args.out.is_file():
        data = json.loads(args.out.read_text())
        if data.get("environment") != environment():
            print(f"note: {args.out} was recorded in {data.get('environment')}, this is "
                  f"{environment()}; regenerate every model for exact digests",
                  file=sys.stderr)
    for name in args.only or names:
        entry, seconds = digest(name)
        data["models"][name] = entry
        print(f"{name}: {entry['sha256'][:16]}... ({entry['numel']} values, {seconds} s)")
    data["models"] = dict(sorted(data["models"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
