"""Graph-conditioned conformer generation as a Domain: diffusion over coordinates only.

The diffusion tensor of a batch is [N_atoms, 3], the centred positions of every molecule; the
graph (atoms, charges, bonds, aromaticity, stereo tags) is the condition and never noised.
Noise is ``diffplat.noise.ZeroCoMGaussian`` with no feature columns, so a molecule of n
atoms has (n - 1) x 3 degrees of freedom and every core schedule and sampler applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffplat.domain import SPLITS, Domain, Draw
from diffplat.noise import ZeroCoMGaussian
from domains.molecules.conformers.options import SAMPLING_OPTIONS
from domains.molecules.features import QM9_ELEMENTS


@dataclass
class Conformer:
    """One generated (or reference) conformer: the molecule's graph and [n, 3] positions."""

    graph: Any          # domains.molecules.conformers.graph.MolGraph
    positions: np.ndarray


class ConformerDomain(Domain):
    """Conformers of given molecular graphs (hydrogens explicit).

    Args:
        data_path: the QM9 cache (``.npz``, from ``diffplat data prepare qm9``; one DFT
            geometry per molecule, EDM's split, bonds from DetermineBonds), or an SDF file or
            folder of SDF files with several conformers per molecule (split 90/5/5 by
            molecule with ``split_seed``).
        elements: element vocabulary of the node one-hot; default H C N O F for QM9, the
            elements present for SDF data (then a checkpoint needs the data at inference
            to rebuild it: give ``elements`` to make it self-contained). The CLI rejects
            molecules outside it.
        max_train, max_eval: keep only the first molecules of the training / evaluation
            splits (QM9 order; for CPU runs).
        split_seed: seed of the SDF split.
        skip_bad: skip unreadable SDF records (counted) instead of stopping.
        group_by: group SDF records into molecules by ``"smiles"`` or ``"name"``.
        etkdg_targets: add this many ETKDG conformers per training molecule as extra
            targets (0: none); relaxed with MMFF94 when ``etkdg_mmff``.
        delta: coverage threshold of the validation metrics, in Angstrom (QM9: 0.5).
        sample_split: split whose molecules ``prior`` samples for (validation sampling).
    """

    name = "conformers"
    default_data_dir = "data/qm9"
    eval_options = ("data_path", "max_eval", "skip_bad", "delta", "sample_split")
    sampling_options = SAMPLING_OPTIONS  # options.py

    def __init__(self, data_path: str = "data/qm9/qm9.npz", elements: list[str] | None = None,
                 max_train: int | None = None, max_eval: int | None = None,
                 split_seed: int = 0, skip_bad: bool = False, group_by: str = "smiles",
                 etkdg_targets: int = 0, etkdg_mmff: bool = True, delta: float = 0.5,
                 sample_split: str = "val"):
        if sample_split not in SPLITS:
            raise ValueError(f"sample_split must be one of {SPLITS}, not {sample_split!r}")
        self.data_path = data_path
        self.elements = list(elements) if elements else None
        self.max_train, self.max_eval = max_train, max_eval
        self.split_seed, self.skip_bad, self.group_by = split_seed, skip_bad, group_by
        self.etkdg_targets, self.etkdg_mmff = etkdg_targets, etkdg_mmff
        self.delta, self.sample_split = delta, sample_split
        self.splits: dict[str, list] | None = None
        #: molecules left out, per QM9 split (or SDF path), per reason: {"test": {"bonds": 3}}
        self.skipped: dict[str, dict[str, int]] = {}
        self._targets_added = False
        self._cache = None                 # the QM9 arrays, when data_path is a cache
        self._range: dict[str, Any] | None = None  # the training graphs' range (scope.py)
        if self.elements:
            self.vocabulary = {s: i for i, s in enumerate(self.elements)}
        elif Path(data_path).suffix == ".npz":
            self.vocabulary = {s: i for i, s in enumerate(QM9_ELEMENTS)}
        else:
            self.vocabulary = None  # from the data, at setup

    # -- data ---------------------------------------------------------------------------------
    def setup(self, stage: str = "fit") -> None:
        """Check the data; SDF data is read at once, QM9 splits are built on first use
        (``graphs``), so evaluating 200 test molecules does not build 100k training graphs."""
        if self.splits is not None:
            return
        path = Path(self.data_path)
        if not path.exists():
            hint = " (create it with `diffplat data prepare qm9`)" if path.suffix == ".npz" else ""
            raise FileNotFoundError(f"conformer data not found: {path}{hint}")
        self.splits = {}
        if path.suffix == ".npz":
            from domains.molecules.qm9 import load_qm9

            self._cache = load_qm9(path)
        else:
            self._load_sdf(path)

    def _build(self, split: str) -> None:
        from domains.molecules.conformers.data import add_etkdg_targets, qm9_graphs

        if split not in self.splits:  # QM9: DetermineBonds on the split's geometries
            limit = self.max_train if split == "train" else self.max_eval
            idx = self._cache.split_indices(split)
            idx = idx if limit is None else idx[:limit]
            self.splits[split] = qm9_graphs(self._cache, idx, self.vocabulary,
                                            self.skipped.setdefault(split, {}))
        if split == "train" and not self._targets_added:
            self._targets_added = True
            if self.etkdg_targets:
                add_etkdg_targets(self.splits["train"], self.etkdg_targets, self.etkdg_mmff)
            if not self.splits["train"]:
                raise ValueError(f"{self.data_path}: no usable training molecules (skipped: "
                                 f"{self.skipped})")

    def _load_sdf(self, path: Path) -> None:
        from domains.molecules.conformers.data import sdf_graphs

        graphs = sdf_graphs(path, self.vocabulary, self.skip_bad,
                            self.skipped.setdefault(str(path), {}), self.group_by)
        if self.vocabulary is None:
            present = {}
            for g in graphs:
                for a in g.mol.GetAtoms():
                    present[a.GetSymbol()] = a.GetAtomicNum()
            self.vocabulary = {s: i for i, s in enumerate(sorted(present, key=present.get))}
        perm = torch.randperm(len(graphs), generator=torch.Generator().manual_seed(
            self.split_seed)).tolist()
        n_eval = max(1, len(graphs) // 20) if len(graphs) >= 3 else 0
        parts = {"train": perm[2 * n_eval:], "val": perm[:n_eval],
                 "test": perm[n_eval:2 * n_eval]}
        if n_eval == 0:  # too few molecules to split: evaluate on the training molecules
            parts = {"train": perm, "val": perm, "test": perm}
        self.splits = {k: [graphs[i] for i in v] for k, v in parts.items()}
        if self.max_train is not None:
            self.splits["train"] = self.splits["train"][: self.max_train]
        if self.max_eval is not None:
            for k in ("val", "test"):
                self.splits[k] = self.splits[k][: self.max_eval]

    @property
    def num_elements(self) -> int:
        if self.vocabulary is None:
            self.setup()
        return len(self.vocabulary)

    def sampling_state(self) -> dict[str, Any]:
        """The element vocabulary (the order of the node one-hot) and, once the training
        molecules are built, their range (``training_range``)."""
        from domains.molecules.conformers.scope import QM9_RANGE

        if self.vocabulary is None:
            self.setup()
        state: dict[str, Any] = {"elements": sorted(self.vocabulary, key=self.vocabulary.get)}
        rng = self.training_range()
        if rng is not None and rng is not QM9_RANGE:
            state["training_range"] = rng
        return state

    def load_sampling_state(self, state: dict[str, Any]) -> None:
        if self.vocabulary is None and state.get("elements"):
            self.vocabulary = {s: i for i, s in enumerate(state["elements"])}
        if isinstance(state.get("training_range"), dict):
            self._range = dict(state["training_range"])

    def training_range(self) -> dict[str, Any] | None:
        """The range of the molecular graphs this model was trained on (scope.py): stored
        with the model, or measured on the training split once it is built; for a model
        saved without one, QM9's range when its data is the QM9 cache, else None (then
        nothing can be checked)."""
        from domains.molecules.conformers.scope import QM9_RANGE, graph_range

        if self._range is None and self.splits and self.splits.get("train"):
            self._range = graph_range((g.mol for g in self.splits["train"]),
                                      source=str(self.data_path))
        if self._range is not None:
            return self._range
        return QM9_RANGE if Path(self.data_path).suffix == ".npz" else None

    def backbone_sizes(self) -> dict[str, Any]:
        """``node_dim`` (from the element vocabulary) and ``edge_dim``."""
        from domains.molecules.conformers.graph import PAIR_DIM, node_dim

        return {"node_dim": node_dim(self.num_elements), "edge_dim": PAIR_DIM}

    def graphs(self, split: str) -> list:
        """The molecules of a split, each a MolGraph with its reference conformers."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.setup()
        self._build(split)
        return self.splits[split]

    def _dataset(self, split: str):
        from domains.molecules.conformers.data import ConformerDataset

        return ConformerDataset(self.graphs(split), self.num_elements,
                                first_only=split != "train")

    def train_dataset(self):
        return self._dataset("train")

    def val_dataset(self):
        return self._dataset("val")

    def test_dataset(self):
        return self._dataset("test")

    def collate(self, items):
        from domains.molecules.conformers.data import collate

        return collate(items)

    def unpack(self, batch: dict[str, Any]):
        cond = {k: v for k, v in batch.items() if k != "x"}
        return batch["x"], cond, ZeroCoMGaussian(batch["batch"], batch["num_graphs"])

    # -- sampling -----------------------------------------------------------------------------
    def batch_for(self, graphs: list, generator: torch.Generator, device: Any = "cpu") -> Draw:
        """Noise, backbone kwargs and noise space to sample one conformer of each graph; the
        graphs ride along in the draw's metadata, for ``decode``."""
        from domains.molecules.conformers.data import collate, encode

        batch = collate([encode(g, np.zeros((len(g), 3)), self.num_elements) for g in graphs])
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        x, cond, space = self.unpack(batch)
        noise = space.sample_like(torch.empty_like(x), generator)
        return Draw(noise, cond, space, {"graphs": list(graphs)})

    def order(self, split: str) -> list[int]:
        """A fixed random order of a split's molecules (seed 0), used to pick molecules."""
        n = len(self.graphs(split))
        return torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()

    def prior(self, num: int, generator: torch.Generator, device: Any = "cpu",
              split: str | None = None, copies: int | None = None,
              graphs: list | None = None, smiles: str | list[str] | None = None,
              allow_out_of_range: bool = False) -> Draw:
        """What to draw conformers of, in one of three ways:

        * ``smiles``: a SMILES or a list of them (no data needed), built as ``diffplat
          conformers --smiles`` builds them (hydrogens added after the heavy atoms);
          ``copies`` conformers of each molecule in turn, ``copies = num / len(smiles)``
          when not given. A SMILES that does not parse or has an element outside the
          vocabulary (or a formal charge outside -1..+1) raises a ValueError naming it;
          so does a molecule outside the model's training range (``training_range``:
          atoms, elements, ring sizes...; an ``OutOfRangeError``), unless
          ``allow_out_of_range``, which warns (``OutOfRangeWarning``) and goes on.
        * ``graphs``: one conformer of each MolGraph (this domain's vocabulary).
        * otherwise ``num / copies`` molecules of ``split`` (default ``sample_split``) in
          the order of ``order(split)``, ``copies`` (default 1) each.
        """
        if sum(x is not None for x in (split, graphs, smiles)) > 1:
            raise ValueError("give at most one of split, graphs or smiles")
        if copies is not None and (isinstance(copies, bool) or not isinstance(copies, int)
                                   or copies < 1):
            raise ValueError(f"copies must be an integer >= 1, got {copies!r}")
        if graphs is not None:
            if len(graphs) != num:
                raise ValueError(f"num={num} but {len(graphs)} graphs were given")
            return self.batch_for(graphs, generator, device)
        if smiles is not None:
            return self.batch_for(self._smiles_graphs(num, smiles, copies, allow_out_of_range),
                                  generator, device)
        copies = copies or 1
        split = split or self.sample_split
        order = self.order(split)
        if num % copies or num // copies > len(order):
            raise ValueError(f"num={num} must be a multiple of copies={copies} and at most "
                             f"{len(order) * copies} for the {split} split")
        graphs = [self.graphs(split)[i] for i in order[: num // copies] for _ in range(copies)]
        return self.batch_for(graphs, generator, device)

    def _smiles_graphs(self, num: int, smiles: str | list[str], copies: int | None,
                       allow_out_of_range: bool = False) -> list:
        """The graph of every sample of ``prior(num, smiles=..., copies=...)``, each checked
        against the training range."""
        from domains.molecules.conformers.io import smiles_graphs
        from domains.molecules.conformers.scope import check_graphs

        if self.vocabulary is None:
            self.setup()
        mols = smiles_graphs(smiles, self.vocabulary)
        check_graphs(mols, self.training_range(), allow_out_of_range)
        if copies is None and num % len(mols) == 0:
            copies = num // len(mols)
        if copies is None or num != len(mols) * copies:
            raise ValueError(f"num={num} must be len(smiles) * copies = {len(mols)} * "
                             f"{copies if copies is not None else 'copies'}")
        return [g for g in mols for _ in range(copies)]

    def sample_chunks(self, num: int, batch_size: int | None,
                      options: dict[str, Any]) -> list[tuple[int, dict[str, Any]]] | None:
        """With ``smiles``: the graphs are built once and each sampler call of ``batch_size``
        gets its own consecutive part of them (so chunking does not change what is drawn)."""
        if options.get("smiles") is None:
            return None
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        graphs = self._smiles_graphs(num, options["smiles"], options.get("copies"),
                                     bool(options.get("allow_out_of_range")))
        size = batch_size or len(graphs)
        return [(len(graphs[i:i + size]), {"graphs": graphs[i:i + size], "smiles": None,
                                            "copies": None})
                for i in range(0, len(graphs), size)]

    def sample(self, model, num: int, request, options: dict[str, Any], draw,
               card: dict[str, Any] | None = None) -> tuple[list[Conformer], dict[str, Any]]:
        """Conformers refined from RDKit ETKDG when ``options`` say ``refine_from="etkdg"``
        (refine.py), else the core's sampling (``draw``) with the other options."""
        from domains.molecules.conformers.refine import sample_conformers

        return sample_conformers(self, model, num, request, options, draw, card)

    def decode(self, x0: Tensor, cond: dict[str, Any], meta=None) -> list[Conformer]:
        graphs = (meta or {}).get("graphs")
        if graphs is None or len(graphs) != cond["num_graphs"]:
            raise ValueError("decode() needs the graphs of its draw (Draw.meta['graphs'])")
        pos = x0.detach().cpu().double().numpy()
        batch = cond["batch"].cpu().numpy()
        return [Conformer(g, pos[batch == k]) for k, g in enumerate(graphs)]

    # -- scoring and output -------------------------------------------------------------------
    def reference(self, num: int, split: str = "test") -> list[Conformer]:
        order = self.order(split)[:num]
        return [Conformer(self.graphs(split)[i], self.graphs(split)[i].conformers[0])
                for i in order]

    def metrics(self, samples: list[Conformer], split: str = "test") -> dict[str, float]:
        """COV/MAT (at ``delta``) and stereo agreement of samples against their molecules'
        reference conformers (samples of one molecule are pooled)."""
        from domains.molecules.conformers.metrics import ensemble_metrics

        groups: dict[int, list[Conformer]] = {}
        for s in samples:
            groups.setdefault(id(s.graph), []).append(s)
        graphs = [g[0].graph for g in groups.values()]
        return ensemble_metrics([g.mol for g in graphs], [g.conformers for g in graphs],
                                [[s.positions for s in g] for g in groups.values()],
                                self.delta)

    def write(self, samples: list[Conformer], out_dir: Path) -> list[Path]:
        """``conformers.sdf``, as ``diffplat conformers`` writes it: the conformers of each
        molecule together (properties ``molecule`` and ``conformer``), molecules in the
        order they first appear in ``samples``."""
        from domains.molecules.conformers.io import write_conformers

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "conformers.sdf"
        # one multi-conformer entry per molecule (samples sharing a graph), in first-seen order
        groups: dict[int, tuple[Any, list[np.ndarray]]] = {}
        for s in samples:
            groups.setdefault(id(s.graph), (s.graph, []))[1].append(s.positions)
        write_conformers(path, [(g.mol, g.name, confs) for g, confs in groups.values()])
        return [path]

    def read(self, path: Path):
        raise NotImplementedError("conformer samples are scored against their molecules' "
                                  "references by `diffplat evaluate conformers`, not "
                                  "`diffplat evaluate --samples`")

    def preview(self, samples: list[Conformer], path: Path) -> Path:
        from domains.molecules.features import Molecule
        from domains.molecules.render import render_grid

        mols = [Molecule(s.positions, [a.GetSymbol() for a in s.graph.mol.GetAtoms()],
                         s.graph.name) for s in samples[:16]]
        bonds = {id(m): [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(),
                          min(int(b.GetBondTypeAsDouble()), 3))
                         for b in s.graph.mol.GetBonds()] for m, s in zip(mols, samples)}
        return render_grid(mols, path, lambda m: bonds[id(m)], [m.name for m in mols])
