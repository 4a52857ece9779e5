"""The Gaussian-mixture toy as a Domain: exact data, exact scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from diffplat.domain import Domain, Draw
from diffplat.noise import GaussianNoise
from domains.toy.gmm import GaussianMixture
from domains.toy.metrics import mmd2_to_mixture, w2_to_mixture


class _Items(TensorDataset):
    def __getitem__(self, i):
        return self.tensors[0][i]


class ToyDomain(Domain):
    """Samples of a Gaussian mixture in ``dim`` dimensions.

    Args:
        dim: data dimension.
        components: number of mixture components.
        radius: distance of the component means from the origin.
        std: typical component standard deviation.
        mixture_seed: seed of the mixture's random parts (weights, spreads).
        num_train, num_val, num_test: sizes of the splits drawn in memory.
        data_seed: seed of those draws.
        data_path: a file written by ``diffplat data prepare toy``; when given, the mixture
            and the splits are read from it instead.
        mmd_bandwidth: Gaussian-kernel bandwidth of the MMD metric.
    """

    name = "toy"
    sampling_options = ()  # the mixture is drawn whole: nothing to choose
    default_data_dir = "data/toy"

    def __init__(self, dim: int = 2, components: int = 8, radius: float = 2.0,
                 std: float = 0.3, mixture_seed: int = 0, num_train: int = 20000,
                 num_val: int = 2000, num_test: int = 2000, data_seed: int = 0,
                 data_path: str | None = None, mmd_bandwidth: float = 1.0):
        self.dim, self.components, self.radius, self.std = dim, components, radius, std
        self.mixture_seed, self.data_seed = mixture_seed, data_seed
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.data_path = data_path
        self.mmd_bandwidth = mmd_bandwidth
        self._splits: dict[str, Tensor] | None = None
        self.mixture = GaussianMixture.default(dim, components, radius, std, mixture_seed)

    # -- data ---------------------------------------------------------------------------------
    def setup(self, stage: str = "fit") -> None:
        if self._splits is not None:
            return
        if self.data_path is not None:
            path = Path(self.data_path)
            if not path.is_file():
                raise FileNotFoundError(f"toy data file not found: {path} (create it with "
                                        f"`diffplat data prepare toy --out {path.parent}`)")
            with np.load(path) as f:
                self.mixture = GaussianMixture(**json.loads(str(f["mixture"])))
                self._splits = {k: torch.from_numpy(f[k]).float() for k in self.sizes}
            self.dim = self.mixture.dim
        else:
            self._splits = self._draw(self.mixture, self.sizes, self.data_seed)

    def sampling_state(self) -> dict[str, Any]:
        """The mixture (it is read from the data file when ``data_path`` is given)."""
        self.setup()
        return {"mixture": json.dumps(self.mixture.config())}

    def load_sampling_state(self, state: dict[str, Any]) -> None:
        if self._splits is None and state.get("mixture"):
            self.mixture = GaussianMixture(**json.loads(state["mixture"]))
            self.dim = self.mixture.dim

    def backbone_sizes(self) -> dict[str, Any]:
        """The data dimension ``dim``."""
        if self.data_path is not None:
            self.setup()
        return {"dim": self.dim}

    @staticmethod
    def _draw(mix: GaussianMixture, sizes: dict[str, int], seed: int) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return {k: mix.sample(n, gen).float() for k, n in sizes.items()}

    def split(self, name: str) -> Tensor:
        self.setup()
        return self._splits[name]

    def train_dataset(self):
        return _Items(self.split("train"))

    def val_dataset(self):
        return _Items(self.split("val"))

    def test_dataset(self):
        return _Items(self.split("test"))

    # -- sampling -----------------------------------------------------------------------------
    def prior(self, num, generator, device="cpu", **options):
        if options:
            raise ValueError(f"the toy domain takes no sampling options, got {sorted(options)}")
        noise = torch.randn(num, self.dim, generator=generator, device=device)
        return Draw(noise, {}, GaussianNoise())

    def inpaint_source(self, path, mask, like, cond):
        """Conditional sampling on the mixture: ``path`` holds points (.npy or a folder
        from ``write``), one point to condition every sample on or at least as many points
        as samples; ``mask`` lists the known dimensions, e.g. "0" or "0,2"."""
        points = self.read(path).to(like)
        if points.ndim == 1:
            points = points[None]
        if points.ndim != 2 or points.shape[1] != self.dim:
            raise ValueError(f"{path}: expected points of dimension {self.dim}, got shape "
                             f"{tuple(points.shape)}")
        n = like.shape[0]
        if points.shape[0] == 1:
            points = points.expand(n, -1)
        elif points.shape[0] < n:
            raise ValueError(f"{path}: {points.shape[0]} points for {n} samples (give one "
                             "point or at least as many as --num)")
        try:
            dims = [int(d) for d in str(mask).split(",")]
        except ValueError:
            raise ValueError(f"--mask {mask!r}: the toy takes known dimensions such as 0 or "
                             "0,1") from None
        if any(d < 0 or d >= self.dim for d in dims):
            raise ValueError(f"--mask {mask!r}: dimensions must be in 0..{self.dim - 1}")
        keep = torch.zeros(1, self.dim, dtype=like.dtype, device=like.device)
        keep[0, dims] = 1
        return points[:n].clone(), keep

    # -- scoring and output -------------------------------------------------------------------
    def reference(self, num: int, split: str = "test") -> Tensor:
        data = self.split(split)
        if num > len(data):
            raise ValueError(f"the {split} split holds {len(data)} points, asked for {num}")
        return data[:num]

    def metrics(self, samples: Tensor, split: str = "test") -> dict[str, float]:
        """Distances to the exact mixture (the split is not needed: the truth is known)."""
        samples = torch.as_tensor(samples, dtype=torch.float64)
        if samples.ndim != 2 or samples.shape[1] != self.mixture.dim:
            raise ValueError(f"toy samples must have shape [N, {self.mixture.dim}], "
                             f"got {list(samples.shape)}")
        if not torch.isfinite(samples).all():
            raise ValueError("toy samples contain NaN or Inf")
        out = {"mmd2": mmd2_to_mixture(samples, self.mixture, self.mmd_bandwidth),
               "nll_exact": float(-self.mixture.log_prob(samples).mean())}
        out.update(w2_to_mixture(samples, self.mixture))
        out["num"] = float(len(samples))
        return out

    def write(self, samples: Tensor, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        arr = samples.detach().cpu().double().numpy()
        npy, csv = out_dir / "samples.npy", out_dir / "samples.csv"
        np.save(npy, arr)
        header = ",".join(f"x{i}" for i in range(arr.shape[1]))
        np.savetxt(csv, arr, delimiter=",", header=header, comments="")
        return [npy, csv]

    def read(self, path: Path) -> Tensor:
        path = Path(path)
        file = path / "samples.npy" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no toy samples at {file}")
        try:
            arr = np.load(file, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{file}: not a numeric .npy array ({err})") from None
        return torch.from_numpy(arr)

    def preview(self, samples: Tensor, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        x = samples.detach().cpu().double()[:, :2]
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        if self.mixture.dim == 2:
            lim = float(self.radius + 4 * self.std)
            g = torch.linspace(-lim, lim, 200, dtype=torch.float64)
            xx, yy = torch.meshgrid(g, g, indexing="xy")
            dens = self.mixture.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
            ax.contour(xx, yy, dens.reshape(200, 200), levels=8, colors="0.6", linewidths=0.7)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color="C0")
        ax.set_aspect("equal")
        ax.set_title(f"{len(x)} samples over the exact density")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path

    # -- diffplat data prepare|info -----------------------------------------------------------
    @classmethod
    def prepare(cls, out_dir: Path, dim: int = 2, components: int = 8, radius: float = 2.0,
                std: float = 0.3, mixture_seed: int = 0, num_train: int = 20000,
                num_val: int = 2000, num_test: int = 2000, seed: int = 0) -> list[Path]:
        mix = GaussianMixture.default(dim, components, radius, std, mixture_seed)
        splits = cls._draw(mix, {"train": num_train, "val": num_val, "test": num_test}, seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "gmm.npz"
        tmp = out_dir / "gmm.npz.tmp.npz"
        np.savez(tmp, mixture=json.dumps(mix.config()),
                 **{k: v.numpy() for k, v in splits.items()})
        tmp.replace(path)
        return [path]

    @classmethod
    def describe(cls, path: Path) -> dict[str, Any]:
        file = path / "gmm.npz" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no toy data at {file}")
        with np.load(file) as f:
            mix = json.loads(str(f["mixture"]))
            info = {"file": str(file), "dim": len(mix["means"][0]),
                    "components": len(mix["means"])}
            for k in ("train", "val", "test"):
                info[f"{k}_size"] = int(f[k].shape[0])
            info["train_mean"] = [round(float(v), 4) for v in f["train"].mean(0)]
            info["train_std"] = [round(float(v), 4) for v in f["train"].std(0)]
        return info
