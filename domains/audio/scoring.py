"""The audio domain's metrics: label-free statistics of any sounds, and DiffWave's
classifier-based scores where a classifier for the data's classes exists.

``score`` always compares the clips with the ``fid_reference`` split (DiffWave's training
set) through their log-mel statistics, which need no weights (``fd_mel``, ``mmd_mel``:
domains/audio/melstats.py). When the domain's ``classifier`` option names a checkpoint
trained on the data's classes, it adds FID, IS, mIS, AM and NDB (domains/audio/metrics.py)
and, for labelled clips (class-conditional samples, or real data), the share that the
classifier recognises as their label. A classifier that is not set gives the label-free
metrics alone; one that is set but missing, or trained on other classes, gives them with a
one-line note on stderr saying why the classifier metrics are left out. Scoring real splits
with ``diffplat evaluate --reference`` gives the ceiling rows of DiffWave's Table 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from domains.audio import metrics as M
from domains.audio.melstats import label_free_scores, log_mel_stats

CLASSIFIER_METRICS = "FID, IS, mIS, AM, NDB, accuracy"
HOW_TO_TRAIN = ("train one with `diffplat fit -c configs/audio/digit-classifier.yaml` (the "
                "digits) or configs/audio/wav-classifier.yaml (your labelled folder, "
                "docs/audio.md) and set the domain's classifier option to its checkpoint")


class NoClassifier(Exception):
    """No classifier applies to this data; the message says why (one line)."""


def waveform_stats(audio: torch.Tensor) -> dict[str, float]:
    x = audio.reshape(len(audio), -1).double()
    return {"rms": float(x.square().mean(1).sqrt().mean()),
            "peak": float(x.abs().amax(1).mean()), "num": float(len(x))}


def _reference_waves(domain) -> torch.Tensor:
    ref = domain.split(domain.fid_reference)
    return torch.stack([ref[i][0] for i in range(len(ref))])


def _mel_reference(domain) -> dict[str, Any]:
    """The cached log-mel statistics of the reference split."""
    state = getattr(domain, "_mel_ref", None)
    if state is None:
        feats = log_mel_stats(_reference_waves(domain), domain.sample_rate)
        state = domain._mel_ref = {"feats": feats, "stats": M.gaussian_stats(feats)}
    return state


def _classifier(domain) -> dict[str, Any]:
    """The cached classifier state of ``domain``: network, classes, reference features.
    Raises ``NoClassifier`` when none is set, its file is missing or it knows other
    classes than the data."""
    state = getattr(domain, "_scorer", None)
    if state is not None:
        return state
    from domains.audio.classifier import classify, load_classifier

    if not domain.classifier:
        raise NoClassifier("no classifier set")
    if not Path(domain.classifier).is_file():
        raise NoClassifier(f"the classifier {domain.classifier} does not exist: "
                           f"{CLASSIFIER_METRICS} are left out; {HOW_TO_TRAIN}")
    net, classes = load_classifier(domain.classifier)
    data_classes = domain.class_names()
    if classes and list(classes) != list(data_classes):
        raise NoClassifier(f"the classifier {domain.classifier} knows the classes "
                           f"{', '.join(classes)}, not the data's ({', '.join(data_classes)}): "
                           f"{CLASSIFIER_METRICS} are left out; {HOW_TO_TRAIN}")
    feats, probs = classify(net, _reference_waves(domain), domain.sample_rate)
    centers = M.kmeans(feats, min(domain.ndb_bins, len(feats)), seed=0)
    domain._scorer = {"net": net, "classes": classes, "feats": feats, "probs": probs,
                      "stats": M.gaussian_stats(feats), "centers": centers}
    return domain._scorer


def score(domain, samples, split: str = "test") -> dict[str, float]:
    """Metrics of ``samples`` (``Clips``); see the module docstring."""
    from domains.audio.classifier import classify

    out = waveform_stats(samples.audio)
    if not torch.isfinite(samples.audio).all():
        raise ValueError("audio samples contain NaN or Inf")
    if samples.sample_rate != domain.sample_rate:
        raise ValueError(f"samples at {samples.sample_rate} Hz, the reference at "
                         f"{domain.sample_rate} Hz")
    ref = _mel_reference(domain)
    out.update(label_free_scores(log_mel_stats(samples.audio, samples.sample_rate),
                                 ref["feats"], ref["stats"]))
    try:
        state = _classifier(domain)
    except NoClassifier as why:
        if domain.classifier and not getattr(domain, "_noted", False):
            print(f"diffplat: note: {why}", file=sys.stderr)
            domain._noted = True
        return out
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
