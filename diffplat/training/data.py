"""A training loader whose batch order is a pure function of (seed, batch counter).

Resuming at batch k therefore replays exactly the batches an uninterrupted run would have
seen from k on, whatever prefetching or worker processes did before the interruption. With
several ranks, each takes a disjoint slice of every epoch's permutation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class _StepBatchSampler:
    def __init__(self, n: int, batch_size: int, seed: int, start: int, rank: int, world: int,
                 drop_last: bool = True):
        self.n, self.bs, self.seed = n, batch_size, seed
        self.start, self.rank, self.world = start, rank, world
        per_rank = n // world
        self.per_epoch = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
        if self.per_epoch < 1:
            raise ValueError(f"dataset of {n} items is smaller than one batch of {batch_size} "
                             f"per rank on {world} ranks")

    def __len__(self) -> int:
        return self.per_epoch - self.start % self.per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        epoch, pos = divmod(self.start, self.per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        mine = perm[self.rank :: self.world]
        for p in range(pos, self.per_epoch):
            yield mine[p * self.bs : (p + 1) * self.bs].tolist()


class StepIndexedLoader:
    """Iterable of training batches, one epoch per ``iter()``.

    Args:
        dataset: a map-style dataset.
        batch_size: items per batch and rank.
        collate_fn: turns a list of items into a batch.
        seed: base seed; epoch e uses the permutation of seed + e.
        counter: returns how many batches were already consumed (Lightning's restored
            progress counter), read at the start of every epoch.
        rank, world: this process's rank and the number of ranks.
        num_workers: worker processes for loading items.
    """

    def __init__(self, dataset: Dataset, batch_size: int, collate_fn: Callable | None = None,
                 seed: int = 0, counter: Callable[[], int] | None = None, rank: int = 0,
                 world: int = 1, num_workers: int = 0):
        self.dataset, self.batch_size, self.collate_fn = dataset, batch_size, collate_fn
        self.seed, self.counter = seed, counter or (lambda: 0)
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self._probe = _StepBatchSampler(len(dataset), batch_size, seed, 0, rank, world)

    def __len__(self) -> int:
        return self._probe.per_epoch

    # Lightning's stateful-loader protocol. The position is not stored here: it is the
    # restored batch counter, so there is nothing to load beyond a consistency check.
    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "batches": int(self.counter())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"checkpoint was trained with data seed {state['seed']}, "
                             f"this run uses {self.seed}")

    def __iter__(self) -> Iterator[Any]:
        sampler = _StepBatchSampler(len(self.dataset), self.batch_size, self.seed,
                                    int(self.counter()), self.rank, self.world)
        loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collate_fn,
                            num_workers=self.num_workers,
                            persistent_workers=False)
        return iter(loader)
