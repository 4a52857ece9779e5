"""EDM's negative log-likelihood for molecules (Hoogeboom et al. 2022, eq. 13-15 and App. B).

-log p(x, h, N) <= KL prior + diffusion terms + L_0 - log p(N), where

* the prior and diffusion terms are the core's discrete-time bound (``diffplat.losses.vlb``)
  over all degrees of freedom, (N - 1) x 3 for the zero-CoM positions and N x F for the
  features;
* L_0 = -log p(x, h | z_0): a Gaussian decoder for the positions (variance sigma_0^2 /
  alpha_0^2, the network's estimate as mean) and, for the atom types and charges, EDM's
  discretised likelihood: the probability mass of N(z_0 / alpha_0, sigma_0^2 / alpha_0^2),
  in unnormalised units (one-hot x 4, charge x 10), over the unit bin around each one-hot
  entry (renormalised across types) and around the true charge;
* -log p(N) from the training histogram of molecule sizes.

All in nats per molecule.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffplat.losses import vlb
from diffplat.noise import ZeroCoMGaussian


def _log_bin_mass(center: Tensor, sigma: Tensor, eps: float = 1e-10) -> Tensor:
    """log P(|Z - center| <= 1/2) for Z ~ N(0, sigma^2): EDM's cdf-difference."""
    normal = torch.distributions.Normal(0.0, 1.0)
    return torch.log(normal.cdf((center + 0.5) / sigma) - normal.cdf((center - 0.5) / sigma)
                     + eps)


def edm_nll(denoiser, x0: Tensor, cond: dict[str, Any], space: ZeroCoMGaussian,
            num_types: int, include_charges: bool, size_log_prob: Tensor,
            onehot_scale: float = 4.0, charge_scale: float = 10.0,
            num_steps: int = 1000, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """EDM's NLL estimate for a batch of molecules, per molecule [B] (nats).

    Args:
        denoiser: the model's Denoiser.
        x0: [N, 3 + F] clean batch in the domain's layout (F = num_types + charges).
        cond, space: the batch's backbone kwargs and noise space.
        size_log_prob: log p(N) for N = 0..max, from the training histogram.
        num_steps: T of the discrete-time bound.
    """
    terms = vlb(denoiser, x0, num_steps=num_steps, generator=generator, noise_space=space,
                **cond)
    sched = denoiser.schedule
    b = space.batch_size(x0)
    zero = torch.zeros(b, dtype=torch.float64, device=x0.device)
    # clamped: a flow schedule's SNR is infinite at t = 0 (sigma(0) = 0)
    a0, s0 = sched.alpha_sigma64(sched.log_snr(zero))
    a0, s0 = float(a0[0]), float(s0[0])
    eps = space.project(space.sample_like(x0, generator))
    z0 = a0 * x0 + s0 * eps
    x0_hat = denoiser.predict(z0, zero.to(x0.dtype), noise_space=space, **cond)[1]

    # positions: Gaussian decoder with variance (s0 / a0)^2 over (N - 1) * 3 dimensions
    var = (s0 / a0) ** 2
    pos_err = space.sum((x0 - x0_hat)[:, :3] ** 2).double()
    pos_dof = (space.counts.double() - 1).clamp(min=0) * 3
    pos_nll = 0.5 * pos_err / var + 0.5 * pos_dof * math.log(2 * math.pi * var)

    # types and charges: discretised likelihood in unnormalised units around z0 / a0
    z_feat = (z0[:, 3:] / a0).double()
    onehot = x0[:, 3 : 3 + num_types].double() * onehot_scale
    z_cat = z_feat[:, :num_types] * onehot_scale
    log_mass = _log_bin_mass(z_cat - 1, torch.tensor(s0 / a0 * onehot_scale))
    log_probs = log_mass - torch.logsumexp(log_mass, dim=1, keepdim=True)
    per_atom = -(log_probs * onehot).sum(1)
    if include_charges:
        charge = x0[:, 3 + num_types].double() * charge_scale
        z_int = z_feat[:, num_types] * charge_scale
        per_atom = per_atom - _log_bin_mass(z_int - charge,
                                            torch.tensor(s0 / a0 * charge_scale))
    feat_nll = torch.zeros(b, dtype=torch.float64, device=x0.device).index_add_(
        0, space.batch, per_atom)

    # sizes never seen in training have probability 0 under the histogram: infinite NLL
    counts = space.counts.long().to(x0.device)
    table = size_log_prob.to(x0.device).double()
    if int(counts.max()) >= len(table):
        table = torch.cat([table, table.new_full((int(counts.max()) + 1 - len(table),),
                                                 -math.inf)])
    size_nll = -table[counts]
    nll = terms["prior"] + terms["diffusion"] + pos_nll + feat_nll + size_nll
    return {"nll": nll, "prior": terms["prior"], "diffusion": terms["diffusion"],
            "positions_t0": pos_nll, "features_t0": feat_nll, "size": size_nll}
