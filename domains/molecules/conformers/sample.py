"""Drawing conformers of given molecules with a trained model (any core sampler)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from diffplat import samplers


@torch.no_grad()
def model_conformers(module, graphs: list, num: int, sampler: str | None = None,
                     steps: int | None = None, seed: int = 0, max_atoms: int = 20000,
                     device: str = "cpu",
                     callback: Callable[[int], None] | None = None) -> list[list[np.ndarray]]:
    """``num`` conformers of every graph with the module's EMA weights.

    Molecule copies are packed into ragged batches of at most ``max_atoms`` atoms (at least
    one molecule each); the result for a seed is reproducible for a fixed ``max_atoms``.

    Args:
        module: a DiffusionModule whose domain is a ConformerDomain.
        graphs: MolGraphs built with the module's vocabulary.
        num: conformers per molecule.
        sampler, steps: core sampler name and step count (default: the module's).
        seed: random seed.
        callback: called with the number of conformers finished after each batch.

    Returns:
        per graph, ``num`` arrays [n, 3] in the graph's atom order (centred).
    """
    name = sampler or module.hparams.sampler
    steps = steps or module.hparams.sample_steps
    fn = samplers.get(name)
    jobs = [g for g in range(len(graphs)) for _ in range(num)]
    out: list[list[np.ndarray]] = [[] for _ in graphs]
    was_training = module.ema.shadow.training
    module.ema.shadow.eval()
    chunk, atoms, start = [], 0, 0
    batches = []
    for g in jobs:
        n = len(graphs[g])
        if chunk and atoms + n > max_atoms:
            batches.append(chunk)
            chunk, atoms = [], 0
        chunk.append(g)
        atoms += n
    if chunk:
        batches.append(chunk)
    for b, chunk in enumerate(batches):
        gen = torch.Generator(device=device).manual_seed(seed * 100_003 + b)
        noise, cond, space = module.domain.batch_for([graphs[g] for g in chunk], gen, device)

        def denoise(x, t, cond=cond, space=space):
            return module.ema_denoiser.predict(x, t, noise_space=space, **cond)[1]

        x0 = fn(denoise, noise, module.schedule, steps, generator=gen, noise_space=space)
        pos = x0.detach().cpu().double().numpy()
        batch = cond["batch"].cpu().numpy()
        for k, g in enumerate(chunk):
            out[g].append(pos[batch == k])
        start += len(chunk)
        if callback:
            callback(start)
    module.ema.shadow.train(was_training)
    return out
