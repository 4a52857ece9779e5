"""The Domain plug-in interface.

A domain is everything the core does not know about one kind of data: where the data comes
from, how a batch becomes (x0, condition, noise space), what to sample from, how samples are
scored, written to files and previewed. A new domain is a folder under ``domains/`` with a
Domain subclass and a backbone, plus a YAML config; the core needs no change.

See docs/domains.md for a walk-through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from diffplat.domain_options import SamplingOption
from diffplat.noise import GaussianNoise, NoiseSpace

__all__ = ["SPLITS", "Domain", "Draw", "SamplingOption"]

#: The data splits every domain offers.
SPLITS = ("train", "val", "test")


@dataclass
class Draw:
    """What ``Domain.prior`` returns: the starting noise, the backbone's conditioning
    kwargs, the noise space, and metadata that ``decode`` receives (the molecular graphs of
    a conformer batch, say), so that no domain keeps state between the two calls.

    Unpacks as ``noise, cond, space = draw``."""

    noise: Tensor
    cond: dict[str, Any]
    space: NoiseSpace
    meta: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.noise, self.cond, self.space))


class Domain:
    """Base class of domain plug-ins. Subclasses document their own Args.

    Data flow:
        ``train_dataset()`` items -> ``collate`` -> batch -> ``unpack(batch)`` gives
        (x0, cond, noise_space) for the loss; at sampling time ``prior(num, generator)``
        gives a ``Draw`` (noise, cond, noise space, metadata), the sampler returns x0, and
        ``decode(x0, cond, meta)`` turns it into the domain's samples, which ``metrics``,
        ``write``, ``preview`` and ``media`` consume. ``diffplat.sampling.generate`` runs
        this loop for every caller.
    """

    name = "base"
    #: Where ``diffplat data prepare <name>`` writes by default.
    default_data_dir = "data"
    #: Constructor arguments that only say where the data is or how samples are scored:
    #: ``--model.domain.init_args.<name>`` may change them for a restored model.
    eval_options: tuple[str, ...] = ("data_path",)
    #: The domain's own sampling options (``diffplat.domain_options.SamplingOption``: name,
    #: type, help, check): the keywords ``Pipeline.sample`` and ``diffplat sample --prior
    #: KEY=VALUE`` accept for it, checked there and handed to ``sample``. ``()`` declares
    #: none; None (the default) leaves them undeclared: every keyword reaches ``prior``
    #: unchecked. A domain whose options depend on the model may make it a property.
    sampling_options: tuple[SamplingOption, ...] | None = None

    # -- data ---------------------------------------------------------------------------------
    def setup(self, stage: str = "fit") -> None:
        """Load or check the data; raise FileNotFoundError naming a missing path."""

    def train_dataset(self) -> Dataset:
        raise NotImplementedError(f"domain {self.name!r} does not implement train_dataset()")

    def val_dataset(self) -> Dataset:
        raise NotImplementedError(f"domain {self.name!r} does not implement val_dataset()")

    def test_dataset(self) -> Dataset:
        return self.val_dataset()

    def collate(self, items: list[Any]) -> Any:
        return torch.utils.data.default_collate(items)

    def unpack(self, batch: Any) -> tuple[Tensor, dict[str, Any], NoiseSpace]:
        """A collated batch -> (x0, conditioning kwargs for the backbone, noise space)."""
        return batch, {}, GaussianNoise()

    def likelihood(self, denoiser: Any, batch: Any,
                   generator: torch.Generator | None = None) -> dict[str, Tensor] | None:
        """Optional: per-sample negative log-likelihood terms (nats) of a batch, in the
        units the domain's literature reports; None when the domain has none."""
        return None

    # -- sampling -----------------------------------------------------------------------------
    def prior(self, num: int, generator: torch.Generator, device: Any = "cpu",
              **options: Any) -> Draw:
        """Starting noise for ``num`` samples, their conditioning, their noise space and
        what ``decode`` needs to know about them; ``options`` are the user's
        (``diffplat sample --prior KEY=VALUE``)."""
        raise NotImplementedError(f"domain {self.name!r} does not implement prior()")

    def sample_chunks(self, num: int, batch_size: int | None,
                      options: dict[str, Any]) -> list[tuple[int, dict[str, Any]]] | None:
        """Optional: how ``generate`` splits ``num`` samples with the prior ``options`` into
        sampler calls, as (size, options that replace the user's for that call); None (the
        default) is calls of ``batch_size`` with the user's options each (all at once for
        None). For priors whose options name the samples one by one (conformers of given
        SMILES), so that each call draws its own part."""
        return None

    def null_condition(self, cond: dict[str, Any]) -> dict[str, Any]:
        """For classifier-free guidance: ``cond`` with its class or context replaced by the
        null condition the model was trained with (``--guidance`` in ``diffplat sample``)."""
        raise NotImplementedError(f"domain {self.name!r} has no null condition, so no "
                                  "classifier-free guidance")

    def inpaint_source(self, path: Path, mask: str, like: Tensor,
                       cond: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """For inpainting, continuation or completion (``diffplat sample --inpaint PATH
        --mask SPEC``): read the known data from ``path`` (a file in the domain's format) and
        return ``(known, mask)`` in the sampler's space: ``known`` with the shape of the
        prior noise ``like``, ``mask`` broadcastable to it, 1 where the data is known. The
        meaning of ``mask`` (a time range, a dimension, a region) is the domain's."""
        raise NotImplementedError(f"domain {self.name!r} does not support --inpaint")

    def sample(self, model: Any, num: int, request: Any, options: dict[str, Any],
               draw: Any, card: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Optional: ``num`` samples for the user's ``request`` (a
        ``diffplat.sampling.SamplingRequest``: sampler, steps, seed...) and this domain's
        ``options``, already checked against ``sampling_options``; returns the samples and
        the sampling record. ``draw(**prior)`` is the core's ordinary sampling (the request
        resolved, ``generate`` with ``prior`` passed to ``prior``), and the default is
        ``draw(**options)``. A domain overrides it where an option asks for another way of
        sampling: the conformer domain refines RDKit conformers when given ``refine_from``
        (SDEdit, Meng et al. 2022; ``generate(start=...)``). ``model`` is the
        ``DiffusionModel``; ``card`` its model card, when it has one."""
        return draw(**options)

    def sampling_state(self) -> dict[str, Any]:
        """What sampling and decoding need from the data (an atom-count histogram, a
        vocabulary, normalisation constants, class names...), as tensors and JSON-able
        values. Checkpoints and exports store it, so a model samples on a machine without
        its dataset. Called after ``setup``; the default is no state."""
        return {}

    def assets(self) -> dict[str, Path]:
        """Files outside the data that the domain's metrics read, by the constructor option
        that names them (the audio domain's ``classifier``). ``export`` copies each into the
        folder's ``assets/`` and a loaded export points the option at its copy, so a shipped
        model is scored as its card was. Default: none."""
        return {}

    def load_sampling_state(self, state: dict[str, Any]) -> None:
        """Restore ``sampling_state()``; afterwards ``prior``, ``decode``, ``write`` and
        ``preview`` work without the data."""

    def backbone_sizes(self) -> dict[str, Any]:
        """Backbone constructor arguments that follow from the data (a feature count, a
        number of classes). ``diffplat fit`` fills them in when the config leaves them out
        and refuses a config whose value disagrees, naming the key. May read the data."""
        return {}

    def decode(self, x0: Tensor, cond: dict[str, Any],
               meta: dict[str, Any] | None = None) -> Any:
        """Sampler output -> the domain's samples (identity by default); ``cond`` and
        ``meta`` are those of the ``Draw`` the samples started from. When inpainting,
        ``meta["kept"]`` is the boolean mask (x0's shape) of what was kept, for previews."""
        return x0

    def concat(self, parts: list[Any]) -> Any:
        """Join decoded chunks of samples (tensors are concatenated along dim 0)."""
        return torch.cat(parts) if isinstance(parts[0], Tensor) else [s for p in parts for s in p]

    # -- scoring and output -------------------------------------------------------------------
    def reference(self, num: int, split: str = "test") -> Any:
        """``num`` real samples to score against (or to score with ``--reference``)."""
        raise NotImplementedError(f"domain {self.name!r} does not implement reference()")

    def metrics(self, samples: Any, split: str = "test") -> dict[str, float]:
        """Score samples against the domain's reference for ``split`` (the domain decides
        what it compares with: a data split, an exact distribution, a classifier...)."""
        raise NotImplementedError(f"domain {self.name!r} does not implement metrics()")

    def write(self, samples: Any, out_dir: Path) -> list[Path]:
        """Write samples in the domain's own file formats; returns the paths written."""
        raise NotImplementedError(f"domain {self.name!r} does not implement write()")

    def read(self, path: Path) -> Any:
        """Read samples written by ``write`` (for ``diffplat evaluate --samples``)."""
        raise NotImplementedError(f"domain {self.name!r} does not implement read()")

    def preview(self, samples: Any, path: Path) -> Path:
        """A PNG picture of some samples."""
        raise NotImplementedError(f"domain {self.name!r} does not implement preview()")

    def media(self, samples: Any) -> dict[str, Any]:
        """Optional: samples as logger media beside the preview image ({name: wandb
        objects}, e.g. ``wandb.Audio`` clips or ``wandb.Object3D`` clouds), logged after
        each validation that samples. Default: none."""
        return {}

    # -- data preparation (diffplat data prepare|info) ------------------------------------------
    @classmethod
    def prepare(cls, out_dir: Path, **options: Any) -> list[Path]:
        raise NotImplementedError(f"domain {cls.name!r} has nothing to prepare")

    @classmethod
    def describe(cls, path: Path) -> dict[str, Any]:
        raise NotImplementedError(f"domain {cls.name!r} cannot describe data")
