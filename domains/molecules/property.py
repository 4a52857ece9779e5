"""EDM's property-MAE protocol for conditional molecule generation (Hoogeboom et al. 2022,
sec. 5.2 and Table 3).

QM9's training split (EDM's order: cormorant's permutation) is cut in two halves with
``np.random.seed(42)`` (EDM's ``qm9_first_half`` / ``qm9_second_half``). A property
predictor, an EGNN, is trained on the first half; the conditional generator on the second
(``MoleculeDomain(train_subset="edm_second_half")``). Generated molecules are scored by the
predictor's mean absolute error against the property they were asked for, beside three
reference rows computed on the second half:

* **Naive (upper bound)**: the predictor on real molecules against shuffled labels;
* **#Atoms**: the best predictor that sees only the number of atoms (the median property per
  atom count of the first half: the L1-optimal function of the count, which EDM's
  ``NumNodes`` MLP approximates);
* **QM9 (lower bound)**: the predictor on the real molecules with their own labels.

``PropertyPredictor`` trains with ``diffplat fit -c configs/molecules/qm9-alpha-predictor.yaml``
(a LightningModule picked from the config's ``model.class_path``); ``diffplat evaluate
property`` runs the protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from domains.molecules.features import QM9_ELEMENTS
from domains.molecules.qm9 import edm_train_halves  # noqa: F401 - part of this protocol

#: QM9 properties the cache holds, with their units.
PROPERTIES = {"alpha": "Bohr^3", "gap_ev": "eV", "gap_au": "Hartree"}


class PropertyEGNN(nn.Module):
    """An E(n)-invariant property regressor: the molecule EGNN's node embeddings, an MLP per
    atom, a sum over the molecule, an MLP to one number (EDM's property EGNN's readout).

    Args:
        num_types: atom-type one-hot columns (5 for QM9: H C N O F).
        hidden, layers: EGNN width and depth (EDM: 128 and 7).

    Shapes:
        positions [N, 3], types [N] (indices), batch [N] -> [B].
    """

    def __init__(self, num_types: int = 5, hidden: int = 64, layers: int = 4):
        super().__init__()
        from domains.molecules.egnn import EGNNBackbone

        self.num_types = num_types
        self.egnn = EGNNBackbone(num_features=num_types, hidden=hidden, layers=layers)
        self.egnn.out = nn.Linear(hidden, hidden)  # node embeddings instead of features
        self.node = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.graph = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, positions: Tensor, types: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        onehot = nn.functional.one_hot(types, self.num_types).to(positions.dtype)
        x = torch.cat([positions, onehot], 1)
        out = self.egnn(x, torch.zeros(num_graphs, device=x.device), batch, num_graphs)
        h = self.node(out[:, 3:])
        pooled = h.new_zeros(num_graphs, h.shape[1]).index_add_(0, batch, h)
        return self.graph(pooled).squeeze(1)


class _Molecules(torch.utils.data.Dataset):
    def __init__(self, cache, rows: np.ndarray, values: np.ndarray):
        self.cache, self.rows, self.values = cache, rows, values
        self.index = {s: i for i, s in enumerate(QM9_ELEMENTS)}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        pos, _ = self.cache.molecule(int(self.rows[i]))
        types = [self.index[s] for s in self.cache.symbols(int(self.rows[i]))]
        pos = torch.as_tensor(pos, dtype=torch.float32)
        return pos - pos.mean(0), torch.tensor(types), float(self.values[i])


def collate(items: list) -> dict[str, Any]:
    """(positions, types, value) items -> a ragged batch."""
    pos = torch.cat([p for p, _, _ in items])
    types = torch.cat([t for _, t, _ in items])
    counts = torch.tensor([len(t) for _, t, _ in items])
    batch = torch.repeat_interleave(torch.arange(len(items)), counts)
    return {"positions": pos, "types": types, "batch": batch, "num_graphs": len(items),
            "value": torch.tensor([v for _, _, v in items], dtype=torch.float32),
            "num_atoms": counts}


def molecules_batch(molecules, values=None) -> dict[str, Any]:
    """Generated or real molecules (``Molecule`` objects) as a predictor batch; atoms
    outside QM9's elements raise ValueError."""
    index = {s: i for i, s in enumerate(QM9_ELEMENTS)}
    items = []
    for k, m in enumerate(molecules):
        bad = sorted(set(m.symbols) - set(index))
        if bad:
            raise ValueError(f"molecule {k}: elements {bad} are outside QM9's {QM9_ELEMENTS}")
        pos = torch.as_tensor(np.asarray(m.positions), dtype=torch.float32)
        items.append((pos - pos.mean(0), torch.tensor([index[s] for s in m.symbols]),
                      0.0 if values is None else float(values[k])))
    return collate(items)


class PropertyPredictor(pl.LightningModule):
    """Trains ``PropertyEGNN`` on EDM's first half of the QM9 training split to predict one
    property (L1 loss on the property normalised by the half's mean and mean absolute
    deviation, as EDM's ``main_qm9_prop.py``); validates on QM9's validation split (MAE in
    the property's units, ``val/mae``).

    Args:
        data_path: the QM9 cache (``diffplat data prepare qm9``).
        property: ``alpha`` (Bohr^3) or ``gap_ev`` (eV).
        hidden, layers: the EGNN's size.
        batch_size, lr, weight_decay: training (AdamW, cosine decay over max_steps).
        max_train, max_eval: use only the first molecules (quick runs).
    """

    def __init__(self, data_path: str = "data/qm9/qm9.npz", property: str = "alpha",
                 hidden: int = 64, layers: int = 4, batch_size: int = 96, lr: float = 1e-3,
                 weight_decay: float = 1e-16, max_train: int | None = None,
                 max_eval: int | None = 2000):
        super().__init__()
        if property not in PROPERTIES:
            raise ValueError(f"unknown property {property!r}; valid: {', '.join(PROPERTIES)}")
        self.save_hyperparameters()
        self.net = PropertyEGNN(len(QM9_ELEMENTS), hidden, layers)
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("mad", torch.ones(()))
        self._data: dict[str, Any] = {}
        self.run_config: dict[str, Any] | None = None

    def _load(self):
        if not self._data:
            from domains.molecules.qm9 import load_qm9

            cache = load_qm9(Path(self.hparams.data_path))
            values = cache.arrays[self.hparams.property]
            first = cache.edm_half(0)[: self.hparams.max_train]
            val = cache.split_indices("valid")[: self.hparams.max_eval]
            self._data = {"cache": cache, "train": (first, values[first]),
                          "val": (val, values[val])}
            train_values = torch.as_tensor(values[first], dtype=torch.float32)
            self.mean.fill_(float(train_values.mean()))
            self.mad.fill_(float((train_values - train_values.mean()).abs().mean()))
        return self._data

    def setup(self, stage: str) -> None:
        self._load()

    def _loader(self, split: str, shuffle: bool):
        data = self._load()
        rows, values = data[split]
        return torch.utils.data.DataLoader(_Molecules(data["cache"], rows, values),
                                           self.hparams.batch_size, shuffle=shuffle,
                                           drop_last=shuffle, collate_fn=collate)

    def train_dataloader(self):
        return self._loader("train", True)

    def val_dataloader(self):
        return self._loader("val", False)

    def predict_batch(self, batch: dict[str, Any]) -> Tensor:
        """The property in its units for every molecule of a batch."""
        out = self.net(batch["positions"], batch["types"], batch["batch"], batch["num_graphs"])
        return out * self.mad + self.mean

    def training_step(self, batch, batch_idx):
        pred = self.net(batch["positions"], batch["types"], batch["batch"], batch["num_graphs"])
        loss = (pred - (batch["value"] - self.mean) / self.mad).abs().mean()
        self.log("train/l1", loss, prog_bar=True, batch_size=batch["num_graphs"])
        return loss

    def validation_step(self, batch, batch_idx):
        mae = (self.predict_batch(batch) - batch["value"]).abs().mean()
        self.log("val/mae", mae, prog_bar=True, batch_size=batch["num_graphs"])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr,
                                weight_decay=self.hparams.weight_decay)
        total = max(1, int(self.trainer.max_steps if self.trainer.max_steps > 0
                           else self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["diffplat"] = {"property": self.hparams.property,
                                  "mean": float(self.mean), "mad": float(self.mad),
                                  "run_config": self.run_config}


def load_predictor(path: str | Path, device: Any = "cpu") -> PropertyPredictor:
    """A trained predictor from its checkpoint, read without unpickling."""
    from diffplat.store import read_checkpoint

    ckpt = read_checkpoint(path, device)
    hp = dict(ckpt.get("hyper_parameters") or {})
    hp.pop("_instantiator", None)
    hp.pop("_class_path", None)
    if "property" not in hp:
        raise ValueError(f"{path} is not a property predictor checkpoint")
    model = PropertyPredictor(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


@torch.no_grad()
def predict(model: PropertyPredictor, molecules, batch_size: int = 256) -> np.ndarray:
    out = []
    for start in range(0, len(molecules), batch_size):
        batch = molecules_batch(molecules[start:start + batch_size])
        batch = {k: v.to(model.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        out.append(model.predict_batch(batch).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def num_atoms_medians(cache, property: str) -> tuple[dict[int, float], float]:
    """EDM's #Atoms predictor: the median property per atom count over the first half (the
    L1-best function of the count), and the overall median for counts it never saw."""
    first = cache.edm_half(0)
    values, counts = cache.arrays[property][first], cache.arrays["n_atoms"][first]
    medians = {int(n): float(np.median(values[counts == n])) for n in np.unique(counts)}
    return medians, float(np.median(values))


def paired_against_num_atoms(found: np.ndarray, asked: np.ndarray, counts: np.ndarray,
                             medians: tuple[dict[int, float], float], resamples: int = 2000,
                             seed: int = 0) -> dict[str, float]:
    """The model's absolute error minus the #Atoms predictor's on the same generated
    molecules (its median for each molecule's atom count against the asked value), with 95%
    percentile bootstrap intervals over molecules (Efron & Tibshirani 1993) of the model's
    MAE and of the difference; negative: the molecules carry more of the asked property
    than their size alone would."""
    table, fallback = medians
    by_atoms = np.array([table.get(int(n), fallback) for n in counts])
    err = np.abs(np.asarray(found, np.float64) - asked)
    diff = err - np.abs(by_atoms - asked)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(err), size=(resamples, len(err)))
    mae_b, diff_b = err[idx].mean(1), diff[idx].mean(1)
    return {"mae": float(err.mean()), "mae_ci_low": float(np.percentile(mae_b, 2.5)),
            "mae_ci_high": float(np.percentile(mae_b, 97.5)),
            "num_atoms_mae": float(np.abs(by_atoms - asked).mean()),
            "diff": float(diff.mean()), "diff_ci_low": float(np.percentile(diff_b, 2.5)),
            "diff_ci_high": float(np.percentile(diff_b, 97.5))}


def reference_rows(model: PropertyPredictor, cache, property: str, num: int | None = None,
                   seed: int = 0) -> dict[str, float]:
    """EDM's reference rows on the second half (``num`` molecules of it, all when None):
    Naive (upper bound), #Atoms, QM9 (lower bound)."""
    from domains.molecules.features import Molecule

    second = cache.edm_half(1)
    values = cache.arrays[property]
    rng = np.random.default_rng(seed)
    rows = second if num is None else rng.choice(second, size=min(num, len(second)),
                                                 replace=False)
    mols = [Molecule(cache.molecule(int(i))[0], cache.symbols(int(i))) for i in rows]
    pred = predict(model, mols)
    truth = values[rows]
    medians, fallback = num_atoms_medians(cache, property)
    by_atoms = np.array([medians.get(int(n), fallback) for n in cache.arrays["n_atoms"][rows]])
    return {"naive_upper_bound": float(np.abs(pred - rng.permutation(truth)).mean()),
            "num_atoms": float(np.abs(by_atoms - truth).mean()),
            "qm9_lower_bound": float(np.abs(pred - truth).mean()),
            "molecules": len(rows)}
