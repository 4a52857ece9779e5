"""Every shipped model samples what it sampled when ``tests/data/sample_digests.json`` was
recorded (``benchmarks/sample_digests.py``): the proof that a restructuring changed nothing.

Per model the test checks, in this order:

* the weights file is the one recorded (its SHA-256): a retrained or replaced model fails
  here with the command that records its new entry, so a model change is never silently
  accepted;
* when this machine's torch version and CPU model are those the file was recorded with, the
  SHA-256 of the sampled states equals the recorded one (bit-identical samples);
* otherwise (another CPU or torch may pick other kernels and sum in another order) the first
  recorded values agree to rtol 1e-3 (atol 1e-3 of their largest magnitude). Measured
  2026-12-08: the digests recorded on an AMD EPYC, rerun on an Intel Xeon with the same
  torch, differ by up to 2.7e-4 relative (2.0e-4 absolute) on the qm9 models (float32 EGNN,
  a stochastic sampler), by under 1e-6 on the others; a change of sampler, grid or weights
  moves them by 1e-2 or more.
"""

import json

import pytest
import torch

from benchmarks import sample_digests as sd

RECORD = json.loads(sd.OUT.read_text()) if sd.OUT.is_file() else {"models": {}}
RERUN = "OMP_NUM_THREADS=1 python benchmarks/sample_digests.py --only {name}"


def test_every_shipped_model_has_a_digest():
    from diffplat.models import shipped

    missing = sorted(set(shipped()) - set(RECORD["models"]))
    assert not missing, ("no recorded digest for " + ", ".join(missing) + "; run "
                         + " && ".join(RERUN.format(name=n) for n in missing))


@pytest.mark.parametrize("name", sorted(RECORD["models"]))
def test_samples_match_the_recorded_digest(name):
    want = RECORD["models"][name]
    weights = sd.weights_sha256(name)
    assert weights == want["weights_sha256"], (
        f"the weights of {name} changed since its digest was recorded; if that is intended "
        f"(a retrained model), run `{RERUN.format(name=name)}` and commit "
        "tests/data/sample_digests.json")
    assert sd.request(name) == want["request"], (
        f"the request sampled for {name} changed; rerun `{RERUN.format(name=name)}`")
    got, _ = sd.digest(name)
    assert got["numel"] == want["numel"]
    env, recorded = sd.environment(), RECORD["environment"]
    if (env["torch"], env["cpu"], env["machine"]) == (recorded["torch"], recorded["cpu"],
                                                       recorded["machine"]):
        assert got["sha256"] == want["sha256"], (
            f"{name}: the samples differ from the recorded ones (first values "
            f"{got['first'][:3]} vs {want['first'][:3]})")
    else:
        stored = torch.tensor(want["first"], dtype=torch.float64)
        torch.testing.assert_close(torch.tensor(got["first"], dtype=torch.float64), stored,
                                   rtol=1e-3, atol=1e-3 * float(stored.abs().max()))
