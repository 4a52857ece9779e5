"""The Gaussian-mixture toy: data whose exact denoiser is known in closed form.

``PLUGIN`` is this domain's declaration to diffplat (entry point ``diffplat.domains``)."""

from diffplat.plugins import DomainPlugin

PLUGIN = DomainPlugin(
    name="toy",
    domain="domains.toy.domain:ToyDomain",
    summary="a Gaussian mixture with exact scores: the proving ground of the core",
    mask_help="toy: the known dimensions, e.g. 0 or 0,2",
    prepare_help="toy: a mixture and its train/val/test draws in one .npz",
    extra="all",
    backbones=("domains.toy.backbone:MLPBackbone",),
)

_EXPORTS = {"GaussianMixture": "domains.toy.gmm", "ExactDenoiser": "domains.toy.gmm",
            "ToyDomain": "domains.toy.domain", "MLPBackbone": "domains.toy.backbone"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'domains.toy' has no attribute {name!r}")


__all__ = ["PLUGIN", *_EXPORTS]
