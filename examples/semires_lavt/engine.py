"""The pieces ``train.py`` is made of: distributed set-up, data order, steps, checkpoints.

Contents
--------
Distributed
    :func:`setup_distributed` (torchrun or SLURM environment -> :class:`DistInfo`),
    :func:`convert_sync_batchnorm` (SyncBatchNorm on CUDA; an all-reduce BatchNorm on CPU/gloo,
    where ``torch.nn.SyncBatchNorm`` refuses to run).
Data order
    :class:`GlobalBatchSampler` (one permutation per epoch shared by all ranks; rank ``r`` takes
    slice ``r`` of each global batch; can start at any batch, for exact resume) and
    :class:`SeededSamples` (each sample's augmentation drawn from a generator seeded by
    ``(seed, epoch, index)``, so it does not depend on the rank, the worker or the process RNG).
Losses and steps
    :func:`supervised_step`, :func:`semi_step`, :func:`confidence_ignore`,
    :func:`correction_stats`.
Optimisation
    :func:`build_optimizer` (AdamW with LAVT's parameter groups), :func:`poly_scheduler`.
Checkpoints
    :func:`save_checkpoint` (atomic: temporary file then ``os.replace``), :func:`load_checkpoint`,
    :func:`rng_state` / :func:`set_rng_state` / :func:`gather_rng_states` (torch, CUDA, NumPy
    and Python generators, every rank's).

Shapes: images ``(B, 3, S, S)`` float, ImageNet-normalised; masks ``(B, S, S)`` int64 in {0, 1};
logits ``(B, 2, S, S)`` (channel 1 = referent); ``S`` the model input size in pixels.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce
from torch.utils.data import Dataset, Sampler

__all__ = [
    "AllReduceBatchNorm2d",
    "DistInfo",
    "GlobalBatchSampler",
    "SeededSamples",
    "autocast",
    "barrier",
    "build_optimizer",
    "check_finite",
    "confidence_ignore",
    "convert_sync_batchnorm",
    "correction_stats",
    "gather_rng_states",
    "load_checkpoint",
    "mean_across_ranks",
    "mix_seed",
    "poly_scheduler",
    "rng_state",
    "save_checkpoint",
    "semi_step",
    "set_rng_state",
    "setup_distributed",
    "supervised_step",
]


# ------------------------------------------------------------------------------ distributed


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


# ------------------------------------------------------------------------------ data order


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


# ------------------------------------------------------------------------------ losses, steps


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``; a no-op context on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def confidence_ignore(prob: torch.Tensor, share: float) -> torch.Tensor | None:
    """Pixels to drop for the confidence-filtering baseline (paper Table 4).

    Confidence of a pixel is ``max(p, 1 - p)``; in each image the ``floor(share * H * W)`` least
    confident pixels (ties at the threshold included) are ignored.

    Parameters
    ----------
    prob : torch.Tensor
        (B, H, W) teacher foreground probability.
    share : float
        In [0, 1); the paper uses 0.05.

    Returns
    -------
    torch.Tensor or None
        (B, H, W) bool, True = ignored; None when ``share`` keeps every pixel.
    """
    k = int(share * prob[0].numel())
    if k == 0:
        return None
    confidence = torch.maximum(prob, 1.0 - prob).flatten(1)
    threshold = confidence.kthvalue(k, dim=1).values
    return (confidence <= threshold[:, None]).view_as(prob)


@torch.no_grad()
def correction_stats(
    pseudo: torch.Tensor, target: torch.Tensor, gt: torch.Tensor
) -> dict[str, float]:
    """How refinement changed pseudo-labels, judged against GT (logging only).

    Parameters
    ----------
    pseudo, target, gt : torch.Tensor
        (B, H, W) teacher pseudo-label, refined target and ground truth (bool or {0, 1}).

    Returns
    -------
    dict
        ``changed`` share of pixels changed by refinement; ``positive`` share of changed pixels
        that became correct and ``negative`` share that became wrong (NaN when none changed);
        ``pseudo_iou`` / ``target_iou`` the overall IoU of pseudo-label and target with GT.
    """
    pseudo, target, gt = pseudo.bool(), target.bool(), gt.bool()
    changed = pseudo != target
    n_changed = int(changed.sum())
    positive = int((changed & (target == gt)).sum())

    def oiou(mask: torch.Tensor) -> float:
        union = int((mask | gt).sum())
        return int((mask & gt).sum()) / union if union else 0.0

    return {
        "changed": n_changed / max(changed.numel(), 1),
        "positive": positive / n_changed if n_changed else float("nan"),
        "negative": (n_changed - positive) / n_changed if n_changed else float("nan"),
        "pseudo_iou": oiou(pseudo),
        "target_iou": oiou(target),
    }


def _to(batch: dict, key: str, device: torch.device) -> torch.Tensor:
    return batch[key].to(device, non_blocking=True)


def supervised_step(
    model: nn.Module,
    batch: dict,
    criterion: nn.Module,
    device: torch.device,
    *,
    amp: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one labelled batch (burn-in).

    Parameters
    ----------
    model : nn.Module
        Student (possibly DDP-wrapped), in train mode.
    batch : dict
        ``image`` (B, 3, S, S), ``mask`` (B, S, S), ``input_ids``, ``attention_mask`` (B, N).
    criterion : samrefine.PWABCELoss
        Called without ``prob``/``matched``: class-weighted CE on every pixel.
    device : torch.device
    amp : bool
        bf16 autocast on CUDA.

    Returns
    -------
    loss : torch.Tensor
        0-d, float32, to back-propagate.
    stats : dict
        ``{"loss": float, "loss_sup": float}``.
    """
    with autocast(device, amp):
        logits = model(
            _to(batch, "image", device),
            _to(batch, "input_ids", device),
            _to(batch, "attention_mask", device),
        )
    loss = criterion(logits, _to(batch, "mask", device))
    value = float(loss.detach())
    return loss, {"loss": value, "loss_sup": value}


def semi_step(
    student: nn.Module,
    teacher: nn.Module,
    labelled: dict,
    unlabelled: dict,
    criterion: nn.Module,
    cfg: Any,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one mutual-learning step (SemiRES Eq. 4 with refined targets, Eq. 10 with PWA).

    1. Student forward on ``[labelled images ; strong unlabelled views]`` (one batch, shared
       BatchNorm statistics, as the reference).
    2. Teacher (eval mode, no grad) on the weak views -> probability ``p`` and pseudo-label
       ``p > 0.5``; :func:`samrefine.semires_targets` refines it with the image's proposals
       (``cfg.strategy``: iom, cpi, cpi-u, cpi-o, or none).
    3. ``L = sup_weight * CE(labelled) + unsup_weight * PWABCELoss(strong, refined, p, matched)``;
       with ``cfg.pwa`` False every unlabelled sample counts as matched (weight 1), with
       ``cfg.conf_filter`` the least confident pixels are ignored.

    Parameters
    ----------
    student : nn.Module
        Possibly DDP-wrapped, train mode.
    teacher : nn.Module
        The EMA teacher's module (eval mode).
    labelled : dict
        As in :func:`supervised_step`.
    unlabelled : dict
        ``image_weak``, ``image_strong`` (B, 3, S, S), ``input_ids``, ``attention_mask``;
        ``proposals`` (a ``samrefine.ProposalBatch`` at (S, S)) unless the strategy is
        ``none``; ``mask`` (B, S, S) only for logging correction statistics.
    criterion : samrefine.PWABCELoss
    cfg : TrainConfig
    device : torch.device

    Returns
    -------
    loss : torch.Tensor
        0-d float32.
    stats : dict
        Loss terms, match rate, target statistics, and (when ``mask`` is present) correction
        statistics (:func:`correction_stats`).
    """
    import samrefine

    n_lab = labelled["image"].shape[0]
    images = torch.cat([_to(labelled, "image", device), _to(unlabelled, "image_strong", device)])
    ids = torch.cat([_to(labelled, "input_ids", device), _to(unlabelled, "input_ids", device)])
    att = torch.cat(
        [_to(labelled, "attention_mask", device), _to(unlabelled, "attention_mask", device)]
    )
    with autocast(device, cfg.amp):
        logits = student(images, ids, att)
        with torch.no_grad():
            teacher_logits = teacher(
                _to(unlabelled, "image_weak", device),
                _to(unlabelled, "input_ids", device),
                _to(unlabelled, "attention_mask", device),
            )
    teacher_logits = teacher_logits.float()
    size = tuple(teacher_logits.shape[-2:])
    proposals = unlabelled.get("proposals")
    if proposals is None:
        if cfg.strategy != "none":
            raise ValueError(
                f"strategy {cfg.strategy!r} needs proposals in the unlabelled batches; pass "
                "--library <ProposalLibrary path>"
            )
        proposals = samrefine.ProposalBatch(
            [samrefine.Proposals.empty(size)] * teacher_logits.shape[0]
        )
    thresholds: dict[str, Any] = {}
    if cfg.strategy == "iom":
        thresholds = {"iom_thresh": cfg.iom_thresh}
    elif cfg.strategy != "none":
        thresholds = {"under": cfg.under, "over": cfg.over}
    targets = samrefine.semires_targets(
        teacher_logits,
        proposals,
        cfg.strategy,
        gamma=cfg.pwa_gamma,
        mu=cfg.pwa_mu,
        var=cfg.pwa_var,
        validate=False,
        **thresholds,
    )
    matched = targets.matched if cfg.pwa else torch.ones_like(targets.matched)
    ignore = confidence_ignore(targets.prob, cfg.conf_filter)
    loss_sup = criterion(logits[:n_lab], _to(labelled, "mask", device))
    loss_unsup = criterion(logits[n_lab:], targets.target, targets.prob, matched, ignore=ignore)
    loss = cfg.sup_weight * loss_sup + cfg.unsup_weight * loss_unsup
    stats = {
        "loss": float(loss.detach()),
        "loss_sup": float(loss_sup.detach()),
        "loss_unsup": float(loss_unsup.detach()),
        **targets.summary(),
    }
    if "mask" in unlabelled:
        gt = _to(unlabelled, "mask", device)
        stats.update(
            {
                f"correction/{k}": v
                for k, v in correction_stats(targets.pseudo, targets.target, gt).items()
            }
        )
    return loss, stats


# ------------------------------------------------------------------------------ optimisation


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, eps: float = 1e-8
) -> torch.optim.AdamW:
    """AdamW over LAVT's parameter groups (``lavt.param_groups``), one learning rate.

    Parameters
    ----------
    model : LAVT (unwrapped)
    lr : float
    weight_decay : float
        Decay of every group except backbone norms / position tables (0).
    eps : float
        AdamW epsilon.

    Returns
    -------
    torch.optim.AdamW
    """
    from .lavt import param_groups

    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, eps=eps)


def poly_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step poly decay ``lr0 * (1 - step / total_steps) ** power`` (reaches 0 at the end).

    ``total_steps`` counts the optimiser steps actually run (the reference counts both loaders
    and never reaches 0).
    """
    total = max(int(total_steps), 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total) ** power
    )


# ------------------------------------------------------------------------------ checkpoints


def rng_state() -> dict[str, Any]:
    """Every generator a step draws from: torch CPU, CUDA (if any), NumPy, Python."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` atomically (temporary file, fsync, ``os.replace``).

    A crash while saving leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; run the burn-in stage first "
            "(train.py --config ... --method supervised) or fix init_checkpoint"
        )
    # Our own files; they hold NumPy RNG states, which weights_only=True refuses.
    return torch.load(path, map_location="cpu", weights_only=False)


def gather_rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (identical result on all ranks)."""
    mine = rng_state()
    if not info.distributed:
        return [mine]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, mine)
    return states


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


def check_finite(loss: torch.Tensor, step: int) -> None:
    """Raise when the loss became non-finite (names the usual causes)."""
    if not torch.isfinite(loss.detach()).all():
        raise FloatingPointError(
            f"the loss is not finite at step {step}; lower lr, enable grad_clip, or check the "
            "inputs (images normalised once, masks in {0, 1})"
        )
