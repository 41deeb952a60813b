"""Data order that does not depend on the number of processes, the workers, or a restart.

:class:`GlobalBatchSampler` draws one permutation per epoch shared by every rank (rank ``r``
takes slice ``r`` of each global batch) and can start at any batch, which is how a resumed run
skips what it already consumed; :class:`SeededSamples` draws each sample's augmentation from a
generator seeded by ``(seed, salt, epoch, index)``; :func:`endless` streams a loader from a
global batch number; :func:`mix_seed` makes seeds from integers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["GlobalBatchSampler", "SeededSamples", "endless", "mix_seed"]


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix-style mixing; stable across runs and platforms)."""
    state = 0x9E3779B97F4A7C15
    for v in values:
        state = (state ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9
        state &= 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


class GlobalBatchSampler(Sampler):
    """Batches of ``(epoch, index)`` pairs; the same global batches whatever the world size.

    Epoch ``e`` shuffles the dataset with a generator seeded by ``(seed, e)``; global batch ``g``
    is ``perm[g * B * W : (g + 1) * B * W]`` and rank ``r`` takes its slice
    ``[r * B : (r + 1) * B]``. One process with batch ``B * W`` therefore sees exactly the union
    of what ``W`` processes with batch ``B`` see. The incomplete last global batch is dropped.

    Parameters
    ----------
    size : int
        Dataset length.
    batch_size : int
        Samples per rank and step.
    rank, world_size : int
    seed : int
    shuffle : bool
        False: dataset order (evaluation-style).

    Notes
    -----
    :meth:`set_epoch` and :meth:`start_at` position the sampler: ``start_at(epoch, k)`` makes the
    next iteration begin with batch ``k`` of ``epoch``, which is how a resumed run skips the
    batches it already consumed.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.size, self.batch_size = int(size), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.shuffle = int(seed), shuffle
        self.global_batch = self.batch_size * self.world_size
        self.batches_per_epoch = self.size // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the dataset has {self.size} samples, fewer than one global batch "
                f"({self.batch_size} per process x {self.world_size} processes); lower the "
                "batch size or label more images"
            )
        self.epoch, self.start = 0, 0

    def start_at(self, epoch: int, batch: int = 0) -> None:
        """Begin the next iteration at batch ``batch`` of epoch ``epoch``."""
        if not 0 <= batch <= self.batches_per_epoch:
            raise ValueError(f"batch {batch} outside [0, {self.batches_per_epoch}]")
        self.epoch, self.start = int(epoch), int(batch)

    def set_epoch(self, epoch: int) -> None:
        """Begin the next iteration at the start of ``epoch``."""
        self.start_at(epoch, 0)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        for g in range(self.start, self.batches_per_epoch):
            chunk = order[g * self.global_batch : (g + 1) * self.global_batch]
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            yield [(self.epoch, i) for i in mine]


class SeededSamples(Dataset):
    """Wrap a dataset so that sample ``(epoch, index)`` is drawn from its own seeded generator.

    The wrapped dataset's random choices (sentence, flip, crop, colour jitter, blur) use
    torch's global generator; here it is seeded with ``(seed, salt, epoch, index)`` for the
    duration of one ``__getitem__`` and restored afterwards. A sample is therefore the same on
    any rank, in any worker, before and after a resume.

    Parameters
    ----------
    dataset : Dataset
    seed : int
    salt : int
        Distinguishes datasets that share a seed (labelled vs unlabelled).
    """

    def __init__(self, dataset: Dataset, seed: int, salt: int = 0):
        self.dataset, self.seed, self.salt = dataset, int(seed), int(salt)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(self.seed, self.salt, epoch, index))
            return self.dataset[index]


def endless(loader: DataLoader, sampler: GlobalBatchSampler, position: int) -> Iterator[Any]:
    """Endless batches of ``loader`` (driven by ``sampler``), from global batch ``position``."""
    epoch, batch = divmod(position, sampler.batches_per_epoch)
    while True:
        sampler.start_at(epoch, batch)
        yield from loader
        epoch, batch = epoch + 1, 0
