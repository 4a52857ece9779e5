"""The digit classifier that scores generated audio (DiffWave's metrics need one).

DiffWave (Kong et al. 2021, Sec. 5.2) scores SC09 samples with a ResNeXt trained on SC09;
here a small CNN on log-mel spectrograms is trained on the training voices of the digits set
by ``diffplat fit -c configs/audio/digit-classifier.yaml`` (``DigitClassifier`` is a plain
LightningModule, not a diffusion model; the CLI picks it from the config's
``model.class_path``). Its penultimate layer gives the features of FID and NDB, its softmax
the class probabilities of IS, mIS and the AM score.

The checkpoint is a Lightning checkpoint read with ``torch.load(weights_only=True)``:
:func:`load_classifier` rebuilds ``MelCNN`` from the stored hyperparameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MelCNN(nn.Module):
    """Log-mel spectrogram -> conv blocks (conv-BN-ReLU-maxpool) -> global average pool ->
    features -> logits.

    The log-mel image is shifted so that its maximum is 0 dB, which makes the network blind
    to the clip's gain.

    Args:
        num_classes: output classes.
        sample_rate: the rate the network expects (other rates are resampled by callers).
        n_mels, n_fft, hop: mel front end (torchaudio.transforms.MelSpectrogram).
        channels: conv channels of the blocks; the last is the feature width.
        dropout: before the linear classifier.

    Shapes:
        wave [B, 1, T] or [B, T] -> logits [B, num_classes]; ``features`` -> [B, channels[-1]].
    """

    def __init__(self, num_classes: int = 10, sample_rate: int = 16000, n_mels: int = 40,
                 n_fft: int = 1024, hop: int = 256, channels: list[int] = (16, 32, 48, 64),
                 dropout: float = 0.2):
        super().__init__()
        import torchaudio

        self.sample_rate = sample_rate
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft,
                                                        hop_length=hop, n_mels=n_mels)
        layers, c = [], 1
        for width in channels:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c = width
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(c, num_classes)

    def log_mel(self, wave: Tensor) -> Tensor:
        wave = wave.reshape(wave.shape[0], -1).float()
        spec = 10 * torch.log10(self.mel(wave) + 1e-10)
        return (spec - spec.amax(dim=(1, 2), keepdim=True)).clamp_min(-80.0)[:, None] / 20

    def features(self, wave: Tensor) -> Tensor:
        return self.body(self.log_mel(wave)).mean(dim=(2, 3))

    def forward(self, wave: Tensor) -> Tensor:
        return self.head(self.drop(self.features(wave)))


class DigitClassifier(pl.LightningModule):
    """Trains ``MelCNN`` on a WAV folder's train split, validates on its val voices and
    tests on its test voices (accuracy logged as ``val/acc``, ``test/acc``). Despite the
    name, any labelled sounds: the labels are the sub-folder names
    (``configs/audio/wav-classifier.yaml``).

    Args:
        data_path: a folder with train/val/test sub-folders in the ``<label>/*.wav`` layout
            (``diffplat data prepare digits``), or one folder of ``<label>/`` sub-folders,
            split at random as the diffusion domain splits it (5% test, 5% val, seeded
            with ``split_seed``), so its metrics' reference clips are the same.
        sample_rate, seconds: clip format.
        classes: class names (default: the folder names, digits in numeric order).
        network: keyword arguments of ``MelCNN``.
        batch_size, lr, weight_decay, num_workers: training settings (AdamW, cosine decay
            over the trainer's max_steps).
        augment: random gain (-12..0 dB), circular shift (up to 0.25 s) and white noise
            (SNR 10..50 dB) on training clips, so that the classifier does not rely on the
            exact conditions of the synthetic data.
        split_seed: the seed of the random split of a folder without split sub-folders.
    """

    def __init__(self, data_path: str = "data/digits", sample_rate: int = 16000,
                 seconds: float = 1.0, classes: list[str] | None = None,
                 network: dict[str, Any] | None = None, batch_size: int = 64,
                 lr: float = 2e-3, weight_decay: float = 1e-2, num_workers: int = 0,
                 augment: bool = True, split_seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self._data: dict[str, Any] = {}
        self.classes = list(classes) if classes else None
        net = dict(network or {})
        self.net = MelCNN(num_classes=len(self.classes) if self.classes else
                          net.pop("num_classes", 10), sample_rate=sample_rate, **net)
        self.run_config: dict[str, Any] | None = None

    def _split(self, split: str):
        from domains.audio.data import WavFolder, random_splits

        if split not in self._data:
            hp = self.hparams
            root, length = Path(hp.data_path), int(round(hp.sample_rate * hp.seconds))
            if not root.is_dir():
                raise FileNotFoundError(f"classifier data folder not found: {root}")
            if (root / "train").is_dir():  # a missing val or test split: as the domain does
                sub = next(root / s for s in (split, "val", "test", "train")
                           if (root / s).is_dir())
                folder = WavFolder(sub, hp.sample_rate, length, self.classes)
                self._data[split] = folder
            else:  # one folder of <label>/ sub-folders: the domain's random split
                folder = WavFolder(root, hp.sample_rate, length, self.classes)
                self._data.update(random_splits(folder, hp.split_seed))
            if self.classes is None:
                self.classes = folder.classes
        return self._data[split]

    def _loader(self, split: str, shuffle: bool):
        return torch.utils.data.DataLoader(self._split(split), self.hparams.batch_size,
                                           shuffle=shuffle, drop_last=shuffle,
                                           num_workers=self.hparams.num_workers)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False)

    def test_dataloader(self):
        return self._loader("test", False)

    def _augment(self, wave: Tensor) -> Tensor:
        b, dev = wave.shape[0], wave.device
        gain = 10 ** (-12 * torch.rand(b, 1, 1, device=dev) / 20)
        shifts = torch.randint(-wave.shape[-1] // 4, wave.shape[-1] // 4 + 1, (b,))
        wave = torch.stack([w.roll(int(s), -1) for w, s in zip(wave, shifts)]) * gain
        rms = wave.square().mean(-1, keepdim=True).sqrt()
        snr = 10 + 40 * torch.rand(b, 1, 1, device=dev)
        return wave + rms * 10 ** (-snr / 20) * torch.randn_like(wave)

    def training_step(self, batch, batch_idx):
        wave, label = batch
        if self.hparams.augment:
            wave = self._augment(wave)
        logits = self.net(wave)
        loss = F.cross_entropy(logits, label)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", (logits.argmax(1) == label).float().mean())
        return loss

    def _eval(self, batch, split: str) -> None:
        wave, label = batch
        logits = self.net(wave)
        self.log(f"{split}/loss", F.cross_entropy(logits, label))
        self.log(f"{split}/acc", (logits.argmax(1) == label).float().mean(), prog_bar=True)

    def validation_step(self, batch, batch_idx):
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx):
        self._eval(batch, "test")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.hparams.lr, total_steps=total,
                                                    pct_start=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["diffplat"] = {"run_config": self.run_config, "classes": self.classes,
                                  "kind": "digit-classifier"}


def load_classifier(path: str | Path, device: Any = "cpu") -> tuple[MelCNN, list[str] | None]:
    """The ``MelCNN`` of a ``DigitClassifier`` checkpoint (read with weights_only=True) and
    its class names, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint not found: {path} (train it with "
                                "`diffplat fit -c configs/audio/digit-classifier.yaml`)")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read classifier checkpoint {path}: {err}") from None
    info = ckpt.get("diffplat") or {}
    if info.get("kind") != "digit-classifier":
        raise ValueError(f"{path} is not a digit-classifier checkpoint")
    hp, classes = ckpt["hyper_parameters"], info.get("classes")
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    net_args = dict(hp.get("network") or {})
    net_args["num_classes"] = state["head.weight"].shape[0]
    net = MelCNN(sample_rate=hp["sample_rate"], **net_args)
    net.load_state_dict(state)
    return net.to(device).eval(), classes


@torch.no_grad()
def classify(net: MelCNN, wave: Tensor, sample_rate: int,
             batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Features [N, F] and softmax probabilities [N, C] of clips [N, 1, T] at
    ``sample_rate`` (resampled to the network's rate when they differ)."""
    from domains.audio.data import resample_waves

    device = next(net.parameters()).device
    feats, probs = [], []
    for s in range(0, len(wave), batch_size):
        x = wave[s:s + batch_size].to(device).float().reshape(-1, wave.shape[-1])
        if sample_rate != net.sample_rate:
            x = resample_waves(x.cpu(), sample_rate, net.sample_rate).to(device)
        f = net.features(x)
        feats.append(f.double().cpu())
        probs.append(net.head(f).double().softmax(-1).cpu())
    return torch.cat(feats), torch.cat(probs)
