"""Training under torchrun: the process group, and each epoch's data order split over the ranks.

Every process of a ``torchrun`` launch calls ``kpbench.train.train``; :func:`init_distributed`
joins them (WORLD_SIZE > 1), :class:`RankBatchSampler` gives each rank its slice of every global
batch of :func:`epoch_order`, and :func:`barrier` makes the ranks wait for each other (a no-op in
a single process). Data order is a pure function of (seed, epoch), so a resumed run sees the
batches it had not seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import Sampler

from kpbench.runtime import derive_seed


@dataclass(frozen=True)
class Dist:
    """This process's place in the launch: one process without torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> tuple[Dist, bool]:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1).
    Returns the ranks and whether this call created the group (and must destroy it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), False
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        created = True
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))), created



class RankBatchSampler(Sampler[list[int]]):
    """Batches of one epoch for one rank: global batch b of ``order`` is split into W equal
    slices and this rank takes its slice (DistributedSampler's sharding, per batch). Starts at
    batch ``start`` so a resumed run sees exactly the batches it had not seen; drops the last
    incomplete batch."""

    def __init__(self, order: Tensor, global_batch: int, dist_info: Dist, start: int = 0) -> None:
        self.order = order.tolist()
        self.global_batch = global_batch
        self.per_rank = global_batch // dist_info.world
        self.rank = dist_info.rank
        self.start = start

    def __len__(self) -> int:
        return len(self.order) // self.global_batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(self.start, len(self.order) // self.global_batch):
            first = b * self.global_batch + self.rank * self.per_rank
            yield self.order[first:first + self.per_rank]


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of the training set for ``epoch``: a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "order", epoch))
    return torch.randperm(n, generator=generator)


def barrier(dist_info: Dist) -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if dist_info.world > 1:
        dist.barrier()
