"""The audio domain's metrics: DiffWave's classifier-based scores of a set of clips.

``score`` classifies the clips with the digit classifier named by the domain's
``classifier`` option and compares them with the classifier's view of the ``fid_reference``
split (DiffWave's training set): FID, IS, mIS, AM, NDB (domains/audio/metrics.py), and,
for labelled clips (class-conditional samples, or real data), the share that the classifier
recognises as their label. Scoring real splits with ``diffplat evaluate --reference`` gives
the ceiling rows of DiffWave's Table 2.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from domains.audio import metrics as M

NO_CLASSIFIER = ("the audio metrics (FID, IS, mIS, AM, NDB) need the digit classifier: train "
                 "it with `diffplat fit -c configs/audio/digit-classifier.yaml` and set the "
                 "domain's classifier option (model.domain.init_args.classifier) to its "
                 "checkpoint, e.g. runs/digit-classifier/checkpoints/last.ckpt")


def waveform_stats(audio: torch.Tensor) -> dict[str, float]:
    x = audio.reshape(len(audio), -1).double()
    return {"rms": float(x.square().mean(1).sqrt().mean()),
            "peak": float(x.abs().amax(1).mean()), "num": float(len(x))}


def _classifier(domain) -> Any:
    """The cached classifier state of ``domain``: network, classes, reference features."""
    state = getattr(domain, "_scorer", None)
    if state is not None:
        return state
    from domains.audio.classifier import classify, load_classifier

    if not domain.classifier or not Path(domain.classifier).is_file():
        missing = f" ({domain.classifier} does not exist)" if domain.classifier else ""
        raise ValueError(NO_CLASSIFIER + missing)
    net, classes = load_classifier(domain.classifier)
    if classes and domain.classes and list(classes) != list(domain.classes):
        raise ValueError(f"the classifier {domain.classifier} knows the classes {classes}, "
                         f"the data {domain.classes}")
    ref = domain.split(domain.fid_reference)
    waves = torch.stack([ref[i][0] for i in range(len(ref))])
    feats, probs = classify(net, waves, domain.sample_rate)
    centers = M.kmeans(feats, min(domain.ndb_bins, len(feats)), seed=0)
    domain._scorer = {"net": net, "classes": classes, "feats": feats, "probs": probs,
                      "stats": M.gaussian_stats(feats), "centers": centers}
    return domain._scorer


def score(domain, samples, split: str = "test") -> dict[str, float]:
    """Metrics of ``samples`` (``Clips``); see the module docstring. During training
    (stage fit/validate) a missing classifier only gives a warning and the waveform stats;
    elsewhere it is an error that says how to get one."""
    from domains.audio.classifier import classify

    out = waveform_stats(samples.audio)
    if not torch.isfinite(samples.audio).all():
        raise ValueError("audio samples contain NaN or Inf")
    try:
        state = _classifier(domain)
    except ValueError as err:
        if domain.stage in ("fit", "validate") and str(err).startswith(NO_CLASSIFIER[:30]):
            warnings.warn(str(err), stacklevel=2)
            return out
        raise
    feats, probs = classify(state["net"], samples.audio, samples.sample_rate)
    out["fid"] = M.frechet_distance(*M.gaussian_stats(feats), *state["stats"])
    out["is"] = M.inception_score(probs)
    out["mis"] = M.modified_inception_score(probs)
    out["am"] = M.am_score(probs, state["probs"])
    out["ndb"], out["ndb_k"] = M.ndb(feats, state["feats"], centers=state["centers"])
    out["ndb"] = float(out["ndb"])
    if samples.labels is not None:
        out["accuracy"] = float((probs.argmax(1) == samples.labels).double().mean())
    return out
