"""3D shapes as point clouds: mesh folders in, PointFlow-protocol metrics out."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from diffplat.domain import SPLITS, Domain, Draw, SamplingOption
from diffplat.noise import GaussianNoise

NORMALIZATIONS = ("global", "unit_sphere", "unit_box")


@dataclass
class Clouds:
    """Decoded samples: points in data coordinates and, for conditional models, class names.

    Shapes:
        points [B, N, 3] float32 (CPU); labels: B names or None.
    """

    points: Tensor
    labels: list[str | None]
    #: for completed clouds, [B, N] True for the points kept from the input
    kept: Tensor | None = None

    def __len__(self) -> int:
        return len(self.points)


class _Split(Dataset):
    def __init__(self, points: Tensor, labels: Tensor):
        self.points, self.labels = points, labels

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int):
        return self.points[i], self.labels[i]


def normalize_per_shape(points: Tensor, mode: str) -> Tensor:
    """unit_sphere: centroid to the origin, farthest point at radius 1; unit_box: bounding-
    box centre to the origin, longest side 2 (inside [-1, 1]^3). [M, N, 3] -> [M, N, 3]."""
    if mode == "unit_sphere":
        p = points - points.mean(1, keepdim=True)
        return p / p.norm(dim=-1).amax(1).clamp_min(1e-12)[:, None, None]
    lo, hi = points.amin(1, keepdim=True), points.amax(1, keepdim=True)
    return (points - (lo + hi) / 2) / ((hi - lo).amax(-1, keepdim=True) / 2).clamp_min(1e-12)


class ShapeDomain(Domain):
    """Point clouds sampled from a folder of meshes (docs/shapes.md).

    Args:
        data_path: the mesh folder (``diffplat data prepare shapes`` writes one), in the
            ModelNet or ShapeNet layout (domains/shapes/meshes.py).
        num_points: points per cloud, sampled area-weighted from each mesh and cached.
        normalize: "global" (PointFlow: one mean per axis and one standard deviation over
            all training coordinates; samples and metrics in the meshes' own units),
            "unit_sphere" or "unit_box" (per shape; samples and metrics in that frame).
        classes: use only these class folders (default: all).
        conditional: class-conditional model (``diffplat sample --prior label=chair``);
            otherwise every cloud gets the null label -1.
        skip_bad: skip unreadable, empty or zero-area meshes (counted in ``skipped``)
            instead of stopping at the first.
        seed, split_seed: seeds of the surface sampling and of the split of unsplit layouts.
        max_train, max_eval: keep only the first clouds of a split after a fixed shuffle.
        emd: EMD metrics: "exact", "sinkhorn", "subsample" (exact on ``emd_points`` random
            points of each cloud) or "none" (domains/shapes/metrics.py; errors of the
            approximations in docs/shapes.md).
        emd_max: score EMD on the first ``emd_max`` clouds of each set (CPU cost).
        emd_points: points per cloud for ``emd: subsample``.
        cache_dir: where sampled points are cached (default ``<data_path>/.cache``).
    """

    name = "shapes"
    default_data_dir = "data/shapes"
    eval_options = ("data_path", "max_eval", "emd", "emd_max", "emd_points", "cache_dir",
                    "skip_bad")
    sampling_options = (SamplingOption(
        "label", (str, int), metavar="LABEL",
        help="a class-conditional model's class, by name or index; default: drawn with the "
             "training class frequencies"),)

    def __init__(self, data_path: str = "data/shapes", num_points: int = 2048,
                 normalize: str = "global", classes: list[str] | None = None,
                 conditional: bool = False, skip_bad: bool = False, seed: int = 0,
                 split_seed: int = 0, max_train: int | None = None,
                 max_eval: int | None = None, emd: str = "exact", emd_max: int | None = 100,
                 emd_points: int = 512, cache_dir: str | None = None):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize {normalize!r}; valid: "
                             f"{', '.join(NORMALIZATIONS)}")
        if emd not in ("exact", "sinkhorn", "subsample", "none"):
            raise ValueError(f"unknown emd {emd!r}; valid: exact, sinkhorn, subsample, none")
        self.data_path, self.num_points, self.normalize = data_path, num_points, normalize
        self.classes_wanted = list(classes) if classes else None
        self.conditional, self.skip_bad = conditional, skip_bad
        self.seed, self.split_seed = seed, split_seed
        self.max_train, self.max_eval = max_train, max_eval
        self.emd, self.emd_max, self.cache_dir = emd, emd_max, cache_dir
        self.emd_points = emd_points
        self.classes: list[str] = []
        self.mean = torch.zeros(3)
        self.std = torch.ones(())
        self.skipped: list[str] = []
        self._points: dict[str, Tensor] | None = None   # model space
        self._labels: dict[str, Tensor] = {}
        self._class_freq: Tensor | None = None          # training clouds per class

    # -- data ---------------------------------------------------------------------------------
    def setup(self, stage: str = "fit") -> None:
        if self._points is not None:
            return
        from domains.shapes.meshes import load_point_cache

        cache = load_point_cache(Path(self.data_path), self.num_points, self.seed,
                                 self.skip_bad, self.split_seed, self.cache_dir)
        self.skipped = cache["skipped"]
        if self.skipped:
            print(f"diffplat: {self.data_path}: skipped {len(self.skipped)} bad meshes, e.g. "
                  f"{self.skipped[0]}", file=sys.stderr)
        present = sorted(set(cache["labels"]["train"]))
        if self.classes_wanted:
            missing = sorted(set(self.classes_wanted) - set(present))
            if missing:
                raise ValueError(f"classes {missing} not in {self.data_path}; present: "
                                 f"{', '.join(present)}")
        self.classes = self.classes_wanted or present
        limits = {"train": self.max_train, "val": self.max_eval, "test": self.max_eval}
        raw, self._labels = {}, {}
        for split in SPLITS:
            names = cache["labels"][split]
            keep = [i for i, n in enumerate(names) if n in self.classes]
            order = np.random.default_rng(self.split_seed).permutation(len(keep))
            keep = [keep[i] for i in order][: limits[split]]
            if not keep:
                raise ValueError(f"{self.data_path}: the {split} split has no clouds of "
                                 f"classes {self.classes}")
            raw[split] = torch.from_numpy(cache["points"][split][keep]).float()
            self._labels[split] = torch.tensor([self.classes.index(names[i]) for i in keep])
        self._class_freq = torch.bincount(self._labels["train"], minlength=len(self.classes))
        if self.normalize == "global":
            # PointFlow (datasets.py, normalize_per_shape=False): one mean per axis and one
            # standard deviation of all training coordinates
            train = raw["train"].double()
            self.mean = train.reshape(-1, 3).mean(0).float()
            self.std = train.reshape(-1).std().float()
            self._points = {k: (v - self.mean) / self.std for k, v in raw.items()}
        else:
            self._points = {k: normalize_per_shape(v, self.normalize) for k, v in raw.items()}

    # -- what sampling needs, without the data ------------------------------------------------
    def sampling_state(self) -> dict[str, Any]:
        self._ready_to_sample()  # a loaded export's state needs no data
        return {"classes": list(self.classes), "mean": self.mean.clone(),
                "std": self.std.reshape(1).clone(), "class_freq": self._class_freq.clone(),
                "normalize": self.normalize, "num_points": self.num_points}

    def load_sampling_state(self, state: dict[str, Any]) -> None:
        if self._points is not None:
            return  # the data is loaded: it is the state
        for key in ("normalize", "num_points"):
            if state[key] != getattr(self, key):
                raise ValueError(f"the stored sampling state has {key}={state[key]!r}, the "
                                 f"model's domain {getattr(self, key)!r}")
        self.classes = list(state["classes"])
        self.mean = torch.as_tensor(state["mean"]).float()
        self.std = torch.as_tensor(state["std"]).float().reshape(())
        self._class_freq = torch.as_tensor(state["class_freq"]).long()

    def _ready_to_sample(self) -> None:
        if self._class_freq is None:
            self.setup()

    def backbone_sizes(self) -> dict[str, Any]:
        """``num_classes`` of a class-conditional model (from the class folders)."""
        if not self.conditional:
            return {}
        if self.classes_wanted:
            return {"num_classes": len(self.classes_wanted)}
        from domains.shapes.meshes import scan_folder

        labels = {f.label for f in scan_folder(Path(self.data_path), self.split_seed)
                  if f.split == "train"}
        return {"num_classes": len(labels)}

    def _split(self, split: str) -> _Split:
        self.setup()
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return _Split(self._points[split], self._labels[split])

    def train_dataset(self):
        return self._split("train")

    def val_dataset(self):
        return self._split("val")

    def test_dataset(self):
        return self._split("test")

    def unpack(self, batch):
        x0, labels = batch
        if not self.conditional:
            labels = torch.full_like(labels, -1)
        return x0, {"labels": labels}, GaussianNoise()

    # -- coordinates --------------------------------------------------------------------------
    def to_data(self, x: Tensor) -> Tensor:
        """Model space -> data space (undoes the global normalisation)."""
        if self.normalize != "global":
            return x
        return x * self.std.to(x) + self.mean.to(x)

    def to_model(self, x: Tensor) -> Tensor:
        if self.normalize != "global":
            return x
        return (x - self.mean.to(x)) / self.std.to(x)

    def normalization(self) -> dict[str, Any]:
        return {"normalize": self.normalize, "mean": self.mean.tolist(),
                "std": float(self.std), "num_points": self.num_points}

    # -- sampling -----------------------------------------------------------------------------
    def label_index(self, label: Any) -> int:
        self._ready_to_sample()
        if isinstance(label, int) and 0 <= label < len(self.classes):
            return label
        if str(label) in self.classes:
            return self.classes.index(str(label))
        raise ValueError(f"unknown label {label!r}; valid: {', '.join(self.classes)} "
                         f"(or 0..{len(self.classes) - 1})")

    def prior(self, num, generator, device="cpu", label: Any = None, **options):
        """Gaussian noise [num, num_points, 3]; class labels from ``label`` (a name or an
        index) or drawn with the training class frequencies for a conditional model."""
        self._ready_to_sample()
        if options:
            raise ValueError(f"unknown sampling option(s) {sorted(options)}; the shapes domain "
                             "takes label=NAME")
        if label is not None and not self.conditional:
            raise ValueError("--prior label=... needs a class-conditional model "
                             "(model.domain.init_args.conditional: true)")
        if self.conditional:
            if label is not None:
                labels = torch.full((num,), self.label_index(label), dtype=torch.long)
            else:
                cpu_gen = generator
                if generator.device.type != "cpu":
                    seed = torch.randint(2**62, (1,), generator=generator,
                                         device=generator.device)
                    cpu_gen = torch.Generator().manual_seed(int(seed))
                labels = torch.multinomial(self._class_freq.double(), num, replacement=True,
                                           generator=cpu_gen)
        else:
            labels = torch.full((num,), -1, dtype=torch.long)
        noise = torch.randn(num, self.num_points, 3, generator=generator, device=device)
        return Draw(noise, {"labels": labels.to(device)}, GaussianNoise())

    def null_condition(self, cond):
        if not self.conditional:
            raise NotImplementedError("the shapes model is unconditional: it has no null "
                                      "condition, so no classifier-free guidance")
        return {**cond, "labels": torch.full_like(cond["labels"], -1)}

    def inpaint_source(self, path, mask, like, cond):
        from domains.shapes.completion import partial_cloud

        return partial_cloud(self, Path(path), str(mask), like)

    def decode(self, x0: Tensor, cond: dict[str, Any], meta=None) -> Clouds:
        names = [self.classes[i] if i >= 0 else None for i in cond["labels"].tolist()]
        kept = (meta or {}).get("kept")
        return Clouds(self.to_data(x0.float()).cpu(), names,
                      None if kept is None else kept[..., 0])

    def concat(self, parts: list[Clouds]) -> Clouds:
        kept = [p.kept for p in parts]
        return Clouds(torch.cat([p.points for p in parts]), [n for p in parts for n in p.labels],
                      None if any(k is None for k in kept) else torch.cat(kept))

    # -- scoring and output -------------------------------------------------------------------
    def reference(self, num: int, split: str = "test") -> Clouds:
        data = self._split(split)
        if num > len(data):
            raise ValueError(f"the {split} split holds {len(data)} clouds, asked for {num}")
        return Clouds(self.to_data(data.points[:num]),
                      [self.classes[i] for i in data.labels[:num].tolist()])

    def metrics(self, samples: Clouds | Tensor, split: str = "test") -> dict[str, float]:
        """MMD, COV and 1-NNA (CD and EMD) against the first clouds of ``split`` (as many
        as there are samples). ``split="train"`` scores against the test split: with
        ``diffplat evaluate --reference --split train`` that is PointFlow's "training set"
        row (training clouds scored against the test set)."""
        from domains.shapes.metrics import set_metrics

        points = samples.points if isinstance(samples, Clouds) else torch.as_tensor(samples)
        ref_split = "test" if split == "train" else split
        ref = self._split(ref_split)
        n = min(len(points), len(ref))
        if self.emd != "none" and points.shape[1] != self.num_points:
            raise ValueError(f"samples have {points.shape[1]} points per cloud, the reference "
                             f"{self.num_points}: EMD needs equal sizes (set emd: none)")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return set_metrics(points.float(), self.to_data(ref.points[:n]),
                           emd=None if self.emd == "none" else self.emd,
                           emd_max=self.emd_max, device=device,
                           **({"points": self.emd_points} if self.emd == "subsample" else {}))

    def write(self, samples: Clouds, out_dir: Path) -> list[Path]:
        from domains.shapes.io import write_ply

        out_dir.mkdir(parents=True, exist_ok=True)
        npy = out_dir / "clouds.npy"
        pts = samples.points.detach().cpu().float().numpy()
        np.save(npy, pts)
        for i, p in enumerate(pts):
            write_ply(out_dir / "ply" / f"cloud_{i:05d}.ply", p)
        info = out_dir / "clouds.json"
        info.write_text(json.dumps({"labels": samples.labels, **self.normalization()},
                                   indent=1))
        return [npy, info, out_dir / "ply"]

    def read(self, path: Path) -> Clouds:
        from domains.shapes.io import read_cloud

        path = Path(path)
        file = path / "clouds.npy" if path.is_dir() else path
        arr = read_cloud(file)
        arr = arr[None] if arr.ndim == 2 else arr
        labels: list[str | None] = [None] * len(arr)
        info = file.parent / "clouds.json"
        if path.is_dir() and info.is_file():
            labels = json.loads(info.read_text())["labels"]
        return Clouds(torch.from_numpy(arr).float(), labels)

    def preview(self, samples: Clouds, path: Path) -> Path:
        from domains.shapes.io import render_grid

        titles = [n or f"sample {i}" for i, n in enumerate(samples.labels)]
        kept = None
        if samples.kept is not None:
            kept = samples.kept.numpy()
            titles = [f"{t} (red: kept)" for t in titles]
        return render_grid(samples.points.numpy(), path, titles, kept=kept)

    def media(self, samples: Clouds, num: int = 4) -> dict[str, Any]:
        """A few clouds as wandb 3D objects (logged beside the preview images)."""
        import wandb

        return {"clouds": [wandb.Object3D(p.numpy().astype(np.float64))
                           for p in samples.points[:num]]}

    # -- diffplat data prepare|info -----------------------------------------------------------
    @classmethod
    def prepare(cls, out_dir: Path, per_class: int = 300, seed: int = 0) -> list[Path]:
        from domains.shapes.procedural import prepare_procedural

        return prepare_procedural(out_dir, per_class=per_class, seed=seed)

    @classmethod
    def describe(cls, path: Path) -> dict[str, Any]:
        from domains.shapes.meshes import scan_folder

        files = scan_folder(Path(path))
        info: dict[str, Any] = {"path": str(path), "meshes": len(files)}
        for split in SPLITS:
            counts: dict[str, int] = {}
            for f in files:
                if f.split == split:
                    counts[f.label] = counts.get(f.label, 0) + 1
            info[split] = counts
        formats: dict[str, int] = {}
        for f in files:
            formats[f.path.suffix.lower()] = formats.get(f.path.suffix.lower(), 0) + 1
        info["formats"] = formats
        return info
