"""The Gaussian-mixture toy: data whose exact denoiser is known in closed form.

``PLUGIN`` is this domain's declaration to diffplat (entry point ``diffplat.domains``)."""

from diffplat.plugins import DomainPlugin, lazy_exports

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

__getattr__ = lazy_exports(__name__, _EXPORTS)


__all__ = ["PLUGIN", *_EXPORTS]
