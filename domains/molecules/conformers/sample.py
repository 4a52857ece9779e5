"""Drawing conformers of given molecules with a trained model (any core sampler)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


@torch.no_grad()
def model_conformers(module, graphs: list, num: int, sampler: str | None = None,
                     steps: int | None = None, seed: int = 0, max_atoms: int = 20000,
                     device: str = "cpu",
                     callback: Callable[[int], None] | None = None,
                     starts: list[list[np.ndarray]] | None = None,
                     start_t: float | None = None) -> list[list[np.ndarray]]:
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
        starts, start_t: refine instead (SDEdit, Meng et al. 2022; ``generate(start=...)``):
            conformer c of graph g starts from ``starts[g][c % len(starts[g])]`` ([n, 3] in
            the graph's atom order, e.g. ETKDG's) noised to schedule time ``start_t``.

    Returns:
        per graph, ``num`` arrays [n, 3] in the graph's atom order (centred).
    """
    from diffplat.sampling import generate

    name = sampler or module.hparams.sampler
    steps = module.hparams.sample_steps if steps is None else steps
    if (starts is None) != (start_t is None):
        raise ValueError("give both starts and start_t, or neither")
    if starts is not None and (len(starts) != len(graphs) or not all(map(len, starts))):
        raise ValueError("starts needs at least one start conformer for every graph")
    jobs = [g for g in range(len(graphs)) for _ in range(num)]
    copy = [c for _ in graphs for c in range(num)]
    out: list[list[np.ndarray]] = [[] for _ in graphs]
    chunk, atoms, batches = [], 0, []
    for g in jobs:
        n = len(graphs[g])
        if chunk and atoms + n > max_atoms:
            batches.append(chunk)
            chunk, atoms = [], 0
        chunk.append(g)
        atoms += n
    if chunk:
        batches.append(chunk)
    from diffplat.progress import bar

    done = 0
    progress = bar(total=len(jobs), desc="conformers", unit="conf")
    first = 0
    for b, chunk in enumerate(batches):
        start = None
        if starts is not None:  # the batch's atoms are its molecules' atoms in order
            x = np.concatenate([starts[g][copy[first + k] % len(starts[g])]
                                for k, g in enumerate(chunk)])
            start = (torch.as_tensor(x, dtype=torch.float32, device=device), start_t)
        first += len(chunk)
        # one generate call per atom-packed batch, seeded as chunk b of the whole call
        conformers, _ = generate(
            module.ema_denoiser, module.domain, chunks=[(len(chunk),
                                                         {"graphs": [graphs[g] for g in chunk]})],
            sampler=name, steps=steps, seed=seed, device=device, chunk_offset=b, start=start)
        for g, conf in zip(chunk, conformers):
            out[g].append(conf.positions)
        done += len(chunk)
        progress.update(len(chunk))
        if callback:
            callback(done)
    progress.close()
    return out
