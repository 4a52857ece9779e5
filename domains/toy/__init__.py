"""The Gaussian-mixture toy: data whose exact denoiser is known in closed form."""

from domains.toy.backbone import MLPBackbone
from domains.toy.domain import ToyDomain
from domains.toy.gmm import ExactDenoiser, GaussianMixture

__all__ = ["GaussianMixture", "ExactDenoiser", "ToyDomain", "MLPBackbone"]
