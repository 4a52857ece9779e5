"""3D molecule generation as a Domain: QM9 (EDM's protocol) or the user's SDF/XYZ files."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from diffplat.checks import positive_int
from diffplat.domain import SPLITS, Domain, Draw, SamplingOption
from diffplat.noise import ZeroCoMGaussian
from domains.molecules.features import SYMBOL_TO_Z, Featurizer, Molecule


class _Encoded(Dataset):
    def __init__(self, molecules: list[tuple[Tensor, Tensor]], featurizer: Featurizer,
                 context: Tensor | None = None):
        self.molecules, self.featurizer, self.context = molecules, featurizer, context

    def __len__(self) -> int:
        return len(self.molecules)

    def __getitem__(self, i: int):
        x = self.featurizer.encode(*self.molecules[i])
        return x if self.context is None else (x, self.context[i])


class MoleculeDomain(Domain):
    """Unconditional 3D molecules: atom types and coordinates, hydrogens included.

    Args:
        data_path: the QM9 cache written by ``diffplat data prepare qm9`` (``.npz``), or an
            SDF/XYZ file or a folder of them (split 90/5/5 with ``split_seed``).
        elements: element vocabulary; default: H C N O F for QM9, the elements present in
            the data for SDF/XYZ input.
        include_charges: append the atomic-number feature (EDM's QM9 setting).
        max_train, max_eval: use only the first molecules of the training / evaluation
            splits (for quick CPU runs; None = all).
        split_seed: seed of the split of SDF/XYZ input.
        skip_bad: skip unreadable SDF/XYZ records (counted) instead of stopping.
        context: QM9 properties to condition on, e.g. ``["alpha"]`` or ``["gap_ev"]``
            (EDM's property-conditional setting); each is normalised with the training
            mean and mean absolute deviation, and the backbone needs ``context_dim`` equal
            to their number. Sampling draws (size, properties) pairs from the training set
            unless values are given (``diffplat sample --prior alpha=80``).
        train_subset: ``"edm_first_half"`` or ``"edm_second_half"``: train on EDM's half
            of QM9's training split (its property-MAE protocol trains the conditional
            generator on the second half and the property predictor on the first,
            domains/molecules/property.py).
        onehot_scale: the atom-type one-hot enters the diffusion tensor divided by this
            (EDM's normalisation factor 4: at a given noise level the types are then far
            noisier than the positions, so the reverse process settles them late); the
            charge column keeps EDM's factor 10.
        property_predictor: a ``PropertyPredictor`` checkpoint that ``diffplat evaluate
            property`` scores this model's molecules with when ``--predictor`` is left out;
            an export carries a copy (``Domain.assets``), so a shipped conditional model is
            scored with the predictor of its card.
        stability_protocol: ``"auto"`` (default), ``"edm"`` or ``"drugs"``: how atom and
            molecule stability are scored (``domains.molecules.druglike``). ``auto`` takes
            EDM's tables for data within QM9's elements and sizes (H, C, N, O, F, at most 29
            atoms) and the drug-like protocol of Nikitin et al. 2025 otherwise; the metrics
            name the one applied.
    """

    name = "molecules"
    default_data_dir = "data/qm9"
    eval_options = ("data_path", "max_eval", "skip_bad", "stability_protocol")

    @property
    def sampling_options(self) -> tuple[SamplingOption, ...]:
        """``num_atoms``, and for a property-conditional model each property by name (raw
        units, ``--prior alpha=80``)."""
        return (SamplingOption("num_atoms", int, check=positive_int,
                               help="atoms of every molecule (default: drawn from the "
                                    "training sizes)"),
                *(SamplingOption(c, float, help=f"the {c} the molecules are asked for (raw "
                                 "units; default: drawn with the sizes)")
                  for c in self.context))
    #: ``reference`` also takes "all" (``evaluate --reference --data`` scores the whole data)
    reference_splits = (*SPLITS, "all")

    def __init__(self, data_path: str = "data/qm9/qm9.npz", elements: list[str] | None = None,
                 include_charges: bool = True, max_train: int | None = None,
                 max_eval: int | None = None, split_seed: int = 0, skip_bad: bool = False,
                 context: list[str] | None = None, train_subset: str | None = None,
                 property_predictor: str | None = None, onehot_scale: float = 4.0,
                 stability_protocol: str = "auto"):
        from domains.molecules.druglike import choose_protocol

        choose_protocol(stability_protocol, (), None)    # a bad name fails here, not later
        self.stability_protocol = stability_protocol
        if not onehot_scale > 0:
            raise ValueError(f"onehot_scale must be positive, got {onehot_scale}")
        self.data_path = data_path
        self.onehot_scale = float(onehot_scale)
        self.property_predictor = property_predictor
        self.elements = list(elements) if elements else None
        self.include_charges = include_charges
        self.max_train, self.max_eval = max_train, max_eval
        self.split_seed, self.skip_bad = split_seed, skip_bad
        self.featurizer: Featurizer | None = None
        self._splits: dict[str, list[tuple[Tensor, Tensor]]] | None = None
        self._train_smiles: set[str] | None = None
        self.size_histogram: Tensor | None = None
        self.context = list(context or [])
        if train_subset not in (None, "edm_first_half", "edm_second_half"):
            raise ValueError(f"train_subset must be edm_first_half or edm_second_half, not "
                             f"{train_subset!r}")
        self.train_subset = train_subset
        self._ctx: dict[str, Tensor] = {}            # per split: raw property values
        self._ctx_stats: tuple[Tensor, Tensor] | None = None
        #: (size, raw properties) of every training molecule, for conditional sampling
        self._ctx_pairs: Tensor | None = None
        self.skipped = 0

    # -- data ---------------------------------------------------------------------------------
    def setup(self, stage: str = "fit") -> None:
        if self._splits is not None:
            return
        path = Path(self.data_path)
        if not path.exists():
            hint = (" (create it with `diffplat data prepare qm9`)" if path.suffix == ".npz"
                    else "")
            raise FileNotFoundError(f"molecule data not found: {path}{hint}")
        if path.suffix == ".npz":
            self._load_qm9(path)
        else:
            self._load_files(path)
        sizes = torch.tensor([len(t) for _, t in self._splits["train"]])
        self.size_histogram = torch.bincount(sizes).float()
        if self.context:
            self._ctx_pairs = torch.cat([sizes[:, None].float(), self._ctx["train"]], 1)

    # -- what sampling needs, without the data ------------------------------------------------
    def assets(self) -> dict[str, Path]:
        """The property predictor ``evaluate property`` uses, when one is named."""
        if self.property_predictor:
            return {"property_predictor": Path(self.property_predictor)}
        return {}

    def sampling_state(self) -> dict[str, Any]:
        self._ready_to_sample()  # a loaded export's state needs no data
        f = self.featurizer
        state: dict[str, Any] = {
            "elements": list(f.elements), "include_charges": f.include_charges,
            "onehot_scale": f.onehot_scale, "charge_scale": f.charge_scale,
            "size_histogram": self.size_histogram.clone(), "context": list(self.context)}
        if self.context:
            mean, mad = self._ctx_stats
            state.update(context_pairs=self._ctx_pairs.clone(), context_mean=mean.clone(),
                         context_mad=mad.clone())
        return state

    def load_sampling_state(self, state: dict[str, Any]) -> None:
        if self._splits is not None:
            return  # the data is loaded: it is the state
        self.featurizer = Featurizer(tuple(state["elements"]), bool(state["include_charges"]),
                                     float(state["onehot_scale"]), float(state["charge_scale"]))
        self.size_histogram = torch.as_tensor(state["size_histogram"]).float()
        if list(state.get("context") or []) != self.context:
            raise ValueError(f"the stored sampling state conditions on {state.get('context')}"
                             f", the model's domain on {self.context}")
        if self.context:
            self._ctx_pairs = torch.as_tensor(state["context_pairs"]).float()
            self._ctx_stats = (torch.as_tensor(state["context_mean"]).float(),
                               torch.as_tensor(state["context_mad"]).float())

    def _ready_to_sample(self) -> None:
        if self.featurizer is None or self.size_histogram is None:
            self.setup()

    def backbone_sizes(self) -> dict[str, Any]:
        """``num_features`` (atom types + charge column) and ``context_dim``."""
        if self.featurizer is None and (self.elements or Path(self.data_path).suffix ==
                                        ".npz"):
            f = self._featurizer(self.elements or ("H", "C", "N", "O", "F"))
        else:
            self.setup()
            f = self.featurizer
        return {"num_features": f.num_features, "context_dim": len(self.context)}

    def _featurizer(self, elements) -> Featurizer:
        return Featurizer(tuple(elements), self.include_charges, self.onehot_scale)

    def _load_qm9(self, path: Path) -> None:
        from domains.molecules.qm9 import load_qm9

        cache = load_qm9(path)
        self.featurizer = self._featurizer(self.elements or ("H", "C", "N", "O", "F"))
        limits = {"train": self.max_train, "val": self.max_eval, "test": self.max_eval}
        self._splits = {}
        for split in SPLITS:
            idx = cache.split_indices(split)
            if split == "train" and self.train_subset:
                idx = cache.edm_half(0 if self.train_subset == "edm_first_half" else 1)
            if limits[split] is not None:
                idx = idx[: limits[split]]
            mols = []
            for i in idx:
                pos = cache.molecule(int(i))[0]
                types = self.featurizer.type_indices(cache.symbols(int(i)),
                                                     f"{path} molecule {i}: ")
                mols.append((torch.as_tensor(pos, dtype=torch.float32), types))
            self._splits[split] = mols
            for name in self.context:
                if name not in cache.arrays or cache.arrays[name].shape != (len(cache),):
                    raise ValueError(f"unknown QM9 property {name!r} for model.domain.context;"
                                     " valid: alpha, gap_ev, gap_au")
            if self.context:
                vals = np.stack([cache.arrays[n][idx] for n in self.context], 1)
                self._ctx[split] = torch.as_tensor(vals, dtype=torch.float32)
        if self.context:
            train = self._ctx["train"]
            mean = train.mean(0)
            self._ctx_stats = (mean, (train - mean).abs().mean(0))
        self._train_smiles = cache.train_smiles()

    def _load_files(self, path: Path) -> None:
        from domains.molecules.io import read_molecules

        if self.context:
            raise ValueError("model.domain.context needs the QM9 cache (properties come "
                             f"from it), not {path}")
        result = read_molecules(path, skip_bad=self.skip_bad, elements=self.elements)
        mols = result[0] if isinstance(result, tuple) else result
        self.skipped = sum(result.skipped.values())
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(result.skipped.items()))
            print(f"diffplat: {path}: skipped {self.skipped} bad molecule records ({reasons}), "
                  f"e.g. {result.errors[0]}", file=sys.stderr)
        if not mols:
            raise ValueError(f"no molecules found in {path}")
        present = sorted({s for _, syms, _ in mols for s in syms}, key=SYMBOL_TO_Z.get)
        self.featurizer = self._featurizer(self.elements or present)
        encoded = [(torch.as_tensor(p, dtype=torch.float32),
                    self.featurizer.type_indices(s, f"{path} record {name}: "))
                   for p, s, name in mols]
        perm = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(
            self.split_seed)).tolist()
        n_val = n_test = max(1, len(encoded) // 20)
        n_train = len(encoded) - n_val - n_test
        if n_train < 1:
            raise ValueError(f"{path}: {len(encoded)} molecules are too few to split")
        parts = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val],
                 "test": perm[n_train + n_val:]}
        self._splits = {k: [encoded[i] for i in v] for k, v in parts.items()}
        if self.max_train is not None:
            self._splits["train"] = self._splits["train"][: self.max_train]

    def normalise_context(self, raw: Tensor) -> Tensor:
        mean, mad = self._ctx_stats
        return (raw - mean.to(raw.device)) / mad.to(raw.device)

    def _dataset(self, split: str) -> Dataset:
        self.setup()
        ctx = self.normalise_context(self._ctx[split]) if self.context else None
        return _Encoded(self._splits[split], self.featurizer, ctx)

    def train_dataset(self):
        return self._dataset("train")

    def val_dataset(self):
        return self._dataset("val")

    def test_dataset(self):
        return self._dataset("test")

    def collate(self, items: list[Any]) -> dict[str, Any]:
        if not self.context:
            return self.featurizer.collate(items)
        out = self.featurizer.collate([x for x, _ in items])
        out["context"] = torch.stack([c for _, c in items])
        return out

    @staticmethod
    def _cond(batch: Tensor, num_graphs: int) -> dict[str, Any]:
        """Backbone kwargs; the fully connected edges are built once per batch, not per
        sampler step."""
        from domains.molecules.egnn import fully_connected_edges

        return {"batch": batch, "num_graphs": num_graphs,
                "edge_index": fully_connected_edges(batch, num_graphs)}

    def unpack(self, batch: dict[str, Any]):
        cond = self._cond(batch["batch"], batch["num_graphs"])
        if self.context:
            cond["context"] = batch["context"]
        return batch["x"], cond, ZeroCoMGaussian(batch["batch"], batch["num_graphs"])

    def likelihood(self, denoiser, batch, generator=None):
        """EDM's NLL estimate per molecule (domains/molecules/nll.py)."""
        from domains.molecules.nll import edm_nll

        x0, cond, space = self.unpack(batch)
        hist = self.size_histogram
        size_log_prob = torch.log(hist / hist.sum())
        f = self.featurizer
        return edm_nll(denoiser, x0, cond, space, len(f.elements), f.include_charges,
                       size_log_prob, f.onehot_scale, f.charge_scale, generator=generator)

    # -- sampling -----------------------------------------------------------------------------
    def prior(self, num: int, generator: torch.Generator, device: Any = "cpu",
              num_atoms: int | None = None, **values: Any):
        """Molecule sizes (and, when conditioning, property values) for ``num`` samples,
        then noise. Sizes come from the training histogram, or all ``num_atoms``; with
        ``context`` the (size, properties) pairs of random training molecules are drawn
        jointly, and property values given by name (raw units) override them."""
        self._ready_to_sample()
        unknown = set(values) - set(self.context)
        if unknown:
            raise ValueError(f"unknown sampling option(s) {sorted(unknown)}; this model takes "
                             f"num_atoms{''.join(', ' + c for c in self.context)}")
        cpu_gen = generator
        if generator.device.type != "cpu":  # the tables live on the CPU
            seed = torch.randint(2**62, (1,), generator=generator, device=generator.device)
            cpu_gen = torch.Generator().manual_seed(int(seed))
        context = None
        if self.context:
            pick = torch.randint(len(self._ctx_pairs), (num,), generator=cpu_gen)
            sizes = self._ctx_pairs[pick, 0].long()
            raw = self._ctx_pairs[pick, 1:].clone()
            for k, name in enumerate(self.context):
                if name in values:
                    raw[:, k] = float(values[name])
            context = self.normalise_context(raw).to(device)
        else:
            sizes = torch.multinomial(self.size_histogram, num, replacement=True,
                                      generator=cpu_gen)
        if num_atoms is not None:
            sizes = torch.full((num,), int(num_atoms))
        batch = torch.repeat_interleave(torch.arange(num), sizes).to(device)
        space = ZeroCoMGaussian(batch, num)
        template = torch.empty(len(batch), 3 + self.featurizer.num_features, device=device)
        noise = space.project(space.sample_like(template, generator))
        cond = self._cond(batch, num)
        meta = {}
        if context is not None:
            cond["context"] = context
            meta["properties"] = {n: raw[:, k].tolist() for k, n in enumerate(self.context)}
        return Draw(noise, cond, space, meta)

    def decode(self, x0: Tensor, cond: dict[str, Any], meta=None) -> list[Molecule]:
        """Molecules; a conditional model's carry the property values they were asked for
        (``Molecule.properties``, written into the SDF as data fields)."""
        mols = self.featurizer.decode(x0, cond["batch"], cond["num_graphs"])
        asked = (meta or {}).get("properties") or {}
        for k, m in enumerate(mols):
            m.properties = {n: float(v[k]) for n, v in asked.items()}
        return mols

    # -- scoring and output -------------------------------------------------------------------
    def reference(self, num: int, split: str = "test") -> list[Molecule]:
        """``num`` random molecules of a split (seed 0); ``split="all"``: of the whole data,
        every molecule when it holds fewer than ``num``."""
        self.setup()
        if split == "all":
            mols = [m for part in SPLITS for m in self._splits[part]]
            num = min(num, len(mols))
        elif split in self._splits:
            mols = self._splits[split]
        else:
            raise ValueError(f"unknown split {split!r}; one of {', '.join(SPLITS)}, all")
        if num > len(mols):
            raise ValueError(f"the {split} split holds {len(mols)} molecules, asked for {num} "
                             "(--split all scores the whole data)")
        order = torch.randperm(len(mols), generator=torch.Generator().manual_seed(0))[:num]
        return [Molecule(mols[i][0].double().numpy(),
                         [self.featurizer.elements[t] for t in mols[i][1].tolist()])
                for i in order.tolist()]

    def metrics(self, samples: list[Molecule], split: str = "test") -> dict[str, float]:
        """EDM's metrics; novelty needs the training SMILES, so without the data it is left
        out with a note naming the data (stability and validity need no data)."""
        from domains.molecules.metrics import edm_metrics

        try:
            self.setup()
            train = self._train_smiles
        except FileNotFoundError as err:
            print(f"diffplat: novelty not scored: {err}", file=sys.stderr)
            train = None
        pairs = [(m.positions, m.symbols) for m in samples]
        protocol = self.protocol(samples)
        if protocol == "drugs":  # EDM-derived training SMILES would make everything novel
            from domains.molecules.druglike import drugs_metrics

            out = drugs_metrics(pairs, None)
        else:
            out = edm_metrics(pairs, train)
        return {**out, "stability_protocol": protocol}

    def protocol(self, samples: list[Molecule] | None = None) -> str:
        """The stability protocol that applies: ``"edm"`` or ``"drugs"``, chosen by
        ``stability_protocol`` and, for ``auto``, by the model's elements and largest
        training molecule (or, without them, by the molecules scored)."""
        from domains.molecules.druglike import choose_protocol

        if self.stability_protocol != "auto":
            return self.stability_protocol
        with contextlib.suppress(FileNotFoundError):  # no data: judge by the molecules
            self._ready_to_sample()
        if self.featurizer is not None and self.size_histogram is not None:
            return choose_protocol("auto", self.featurizer.elements,
                                   len(self.size_histogram) - 1)
        samples = samples or []
        return choose_protocol("auto", {s for m in samples for s in m.symbols},
                               max((len(m) for m in samples), default=None))

    def bonds(self, molecule: Molecule) -> list[tuple[int, int, float]]:
        """The bonds the applicable protocol reads from a molecule's coordinates: EDM's
        tables, or the perceived graph of the drug-like protocol (aromatic bonds 1.5)."""
        if self.protocol([molecule]) == "drugs":
            from domains.molecules.druglike import perceive

            mol, _ = perceive(molecule.positions, molecule.symbols)
            return [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(),
                     1.5 if b.GetIsAromatic() else int(b.GetBondTypeAsDouble()))
                    for b in mol.GetBonds()]
        from domains.molecules.metrics import infer_bonds

        return infer_bonds(molecule.positions, molecule.symbols)

    def is_stable(self, molecule: Molecule) -> bool:
        """Molecule stability of one molecule under the applicable protocol."""
        if self.protocol([molecule]) == "drugs":
            from domains.molecules.druglike import perceive, stable_atoms

            return bool(stable_atoms(perceive(molecule.positions, molecule.symbols)[0]).all())
        from domains.molecules.metrics import check_stability

        return check_stability(molecule.positions, molecule.symbols)[0]

    def write(self, samples: list[Molecule], out_dir: Path) -> list[Path]:
        from domains.molecules.io import write_sdf, write_xyz

        out_dir.mkdir(parents=True, exist_ok=True)
        records = [(m.positions, m.symbols, self.bonds(m)) for m in samples]
        sdf, xyz = out_dir / "molecules.sdf", out_dir / "molecules.xyz"
        write_sdf(sdf, records)
        write_xyz(xyz, records)
        (out_dir / "elements.json").write_text(json.dumps(list(self.featurizer.elements)))
        written = [sdf, xyz]
        if any(m.properties for m in samples):  # what a conditional model was asked for
            props = out_dir / "properties.json"
            props.write_text(json.dumps([m.properties for m in samples]))
            written.append(props)
        return written

    def read(self, path: Path) -> list[Molecule]:
        from domains.molecules.io import read_molecules

        path = Path(path)
        file = path / "molecules.sdf" if path.is_dir() else path
        result = read_molecules(file)
        mols = result[0] if isinstance(result, tuple) else result
        out = [Molecule(np.asarray(p), list(s), n) for p, s, n in mols]
        props = file.parent / "properties.json"
        if props.is_file():
            for m, p in zip(out, json.loads(props.read_text())):
                m.properties = dict(p)
        return out

    def preview(self, samples: list[Molecule], path: Path) -> Path:
        from domains.molecules.render import render_grid

        titles = [f"{len(m)} atoms{' (stable)' if self.is_stable(m) else ''}"
                  for m in samples[:16]]
        return render_grid(samples, path, self.bonds, titles)

    # -- diffplat data prepare|info -----------------------------------------------------------
    @classmethod
    def prepare(cls, out_dir: Path) -> list[Path]:
        from domains.molecules.qm9 import prepare_qm9

        return prepare_qm9(out_dir)

    @classmethod
    def describe(cls, path: Path) -> dict[str, Any]:
        """The QM9 cache's statistics, or a summary of the user's SDF / XYZ file or folder
        (``domains.molecules.io.describe_files``)."""
        from domains.molecules.io import EXTENSIONS, describe_files
        from domains.molecules.qm9 import describe_qm9

        path = Path(path)
        if path.is_dir() and (path / "qm9.npz").is_file():
            return describe_qm9(path / "qm9.npz")
        if path.suffix == ".npz" or not (path.exists() or path.suffix.lower() in EXTENSIONS):
            return describe_qm9(path)
        return describe_files(path)

