"""Where a process sits in a job, and the collectives the trainer needs.

:func:`setup_distributed` reads torchrun's or SLURM's environment into a :class:`DistInfo`;
:func:`convert_sync_batchnorm` synchronises BatchNorm statistics (``torch.nn.SyncBatchNorm`` on
CUDA, :class:`AllReduceBatchNorm2d` on CPU/gloo, where ``SyncBatchNorm`` refuses to run);
:func:`mean_across_ranks` averages logged scalars.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce

__all__ = [
    "AllReduceBatchNorm2d",
    "DistInfo",
    "barrier",
    "convert_sync_batchnorm",
    "mean_across_ranks",
    "setup_distributed",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes
    ----------
    rank, world_size, local_rank : int
        Global rank, number of processes, rank on this node.
    device : torch.device
        ``cuda:<local_rank>`` when CUDA is available, else CPU.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (logging, TensorBoard, checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def _slurm_master_addr() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
        )
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError) as err:
        raise RuntimeError(
            "running under SLURM without MASTER_ADDR and `scontrol show hostnames` failed "
            f"({err}); export MASTER_ADDR=<first node> (or launch with torchrun)"
        ) from None


def setup_distributed(backend: str | None = None) -> DistInfo:
    """Initialise ``torch.distributed`` from the launcher's environment.

    Reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (torchrun), or else ``SLURM_PROCID`` /
    ``SLURM_NTASKS`` / ``SLURM_LOCALID`` (one ``srun`` task per GPU; ``MASTER_ADDR`` defaults to
    the first node of the job, ``MASTER_PORT`` to 29500). A single process (no such variables)
    runs without a process group. An already initialised group is reused.

    Parameters
    ----------
    backend : str, optional
        Default ``nccl`` with CUDA, ``gloo`` otherwise.

    Returns
    -------
    DistInfo
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", "0"))
    elif "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", "0"))
        env.setdefault("MASTER_ADDR", _slurm_master_addr())
        env.setdefault("MASTER_PORT", "29500")
        env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"] = str(rank), str(world), str(local)
    else:
        rank, world, local = 0, 1, 0
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return DistInfo(rank, world, local, device)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with float64 batch statistics summed over all ranks (CPU / gloo SyncBatchNorm).

    ``torch.nn.SyncBatchNorm`` only runs on CUDA. In training mode this layer computes the
    per-channel mean and (biased) variance of the global batch with two differentiable
    all-reduces (``torch.distributed.nn.functional.all_reduce``; none without a process group),
    so forward values, gradients and running statistics equal those of one process holding the
    whole batch.

    The statistics and the normalisation run in float64 and the result is rounded to the input
    dtype. A float32 sum depends on how the batch is split (4 samples in one process or 2 + 2 in
    two), by about 1e-7; a normalised value that close to 0 then lies on different sides of the
    next ReLU in the two layouts, and that one flipped gradient mask changes every upstream
    gradient by percents. In float64 the layouts differ by about 1e-16, which rounding to
    float32 removes, so the forward pass is the same bits in every layout. Outside training it
    is a plain ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape (B, C, H, W) with global batch statistics."""
        if not self.training:
            return super().forward(x)
        group = dist.is_available() and dist.is_initialized()
        channels = x.shape[1]
        wide = x.double()
        count = torch.tensor([x.numel() / channels], dtype=torch.float64, device=x.device)
        with warnings.catch_warnings():
            # deprecated for a private API; this one is differentiable, which BatchNorm needs
            warnings.filterwarnings("ignore", ".*functional.all_reduce is deprecated")
            total = torch.cat([wide.sum(dim=(0, 2, 3)), count])
            total = all_reduce(total) if group else total
            n = total[-1]
            mean = total[:channels] / n
            centred = wide - mean.view(1, -1, 1, 1)
            squares = centred.square().sum(dim=(0, 2, 3))
            var = (all_reduce(squares) if group else squares) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                self.running_mean.mul_(1 - m).add_(mean.detach().to(x.dtype), alpha=m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(unbiased.to(x.dtype), alpha=m)
        out = (centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)).to(x.dtype)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm synchronise its statistics across ranks.

    Parameters
    ----------
    module : nn.Module
    device : torch.device
        CUDA: ``torch.nn.SyncBatchNorm``; CPU: :class:`AllReduceBatchNorm2d` (also usable in a
        single process, where it gives the bits of a multi-process run; see ``exact_batchnorm``).

    Returns
    -------
    nn.Module
        The converted module (parameters and buffers kept).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = AllReduceBatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module


def mean_across_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average logged scalars over ranks (NaN-aware; one all-reduce)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    data = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    valid = ~torch.isnan(data)
    stacked = torch.stack([torch.where(valid, data, torch.zeros_like(data)), valid.double()])
    dist.all_reduce(stacked)
    means = stacked[0] / stacked[1].clamp_min(1)
    means[stacked[1] == 0] = float("nan")
    return dict(zip(keys, means.tolist(), strict=True))
