"""The base class of denoiser networks.

A backbone is called as ``backbone(c_in * x_t, c_noise, **cond)`` by
``diffplat.targets.Denoiser``: the scaled noisy data, the noise embedding
``c_noise = -log_snr / 8`` of shape [B], and the domain's conditioning keyword arguments
(``Domain.unpack`` and ``Domain.prior`` decide them); it returns a tensor of the data's shape,
which the prediction target turns into x0_hat. Subclassing ``Backbone`` is what lets a
config name the network (``model.backbone.class_path``) and what ``diffplat fit --help``
lists; there is nothing to implement beyond ``forward``.

Self-conditioning (Chen et al. 2022, "Analog Bits", sec. 3.2): a backbone that sets
``supports_self_condition = True`` accepts the keyword ``x_self_cond`` (an earlier x0_hat of
x's shape, zeros for "none"), and only such a backbone can train with
``DiffusionModule(self_condition=True)``.
"""

from __future__ import annotations

from torch import Tensor, nn


class Backbone(nn.Module):
    """A denoiser network: ``forward(x, c_noise, **cond) -> Tensor`` of ``x``'s shape.

    Shapes:
        x: the data's shape (dense [B, ...] or a ragged batch the domain's noise space
        understands); c_noise: [B]; returns x's shape.
    """

    #: accepts ``x_self_cond`` (an x0 estimate of x's shape) in ``forward``
    supports_self_condition: bool = False

    def forward(self, x: Tensor, c_noise: Tensor, **cond) -> Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")
