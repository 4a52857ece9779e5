"""Inference needs no training framework: ``diffplat.load``, ``Pipeline.sample`` and the
``sample``, ``export`` and ``tune-steps`` commands run in a process where importing
``lightning``, ``pytorch_lightning`` (or ``lightning_fabric``) raises ImportError (a
meta-path finder blocks them), for every shipped model and for an old-format checkpoint."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests" / "data" / "old_format_toy_ckpt.pt"

CODE = r"""
import importlib.abc, json, sys

BLOCKED = ("lightning", "pytorch_lightning", "lightning_fabric")


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: inference must not import Lightning")
        return None


sys.meta_path.insert(0, Block())

import diffplat
from benchmarks.sample_digests import request
from diffplat.cli import main
from diffplat.models import shipped

tmp = sys.argv[1]
done = []
for name in sorted(shipped()):
    req = {**request(name), "steps": 2}
    num = req.pop("num")
    diffplat.load(name).sample(num, **req)
    done.append(name)
codes = [
    main(["sample", "--model", "qm9-small", "--num", "2", "--steps", "2", "--out",
          f"{tmp}/samples", "--no-progress"]),
    main(["sample", "--ckpt", f"{tmp}/old.ckpt", "--num", "4", "--steps", "2", "--out",
          f"{tmp}/toy", "--no-progress"]),
    main(["export", "--ckpt", f"{tmp}/old.ckpt", "--out", f"{tmp}/export"]),
    main(["tune-steps", "--ckpt", f"{tmp}/old.ckpt", "--sampler", "heun", "--nfe", "5",
          "--batches", "1", "--batch-size", "16", "--reference-steps", "8",
          "--max-evals", "4"]),
]
print(json.dumps({"sampled": done, "codes": codes,
                  "lightning": [m for m in sys.modules if m.split(".")[0] in BLOCKED]}))
"""


def test_inference_imports_no_lightning(tmp_path):
    from diffplat.models import shipped

    shutil.copyfile(OLD, tmp_path / "old.ckpt")
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600,
                         env={"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
                              "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["sampled"] == sorted(shipped())
    assert result["codes"] == [0, 0, 0, 0], out.stderr[-3000:]
    assert result["lightning"] == []
    assert (tmp_path / "samples" / "molecules.sdf").is_file()
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert (tmp_path / "old.ckpt.steps.json").is_file()
