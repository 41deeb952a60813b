"""Resumable training state: atomic checkpoint files and every random generator a step uses."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .distributed import DistInfo
from .lavt.swin import UnsafeCheckpointError, read_checkpoint

__all__ = [
    "UnsafeCheckpointError",
    "gather_rng_states",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]


def rng_state() -> dict[str, Any]:
    """Every generator a step draws from: torch CPU, CUDA (if any), NumPy, Python.

    Returned as tensors and plain numbers only, which ``torch.load(weights_only=True)`` admits.
    """
    _, key, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(key.astype(np.int64)),
        "numpy_pos": int(pos),
        "numpy_gauss": (int(has_gauss), float(gauss)),
        "python": torch.tensor(python_state, dtype=torch.int64),
        "python_version": int(version),
        "python_gauss": python_gauss,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    has_gauss, gauss = state["numpy_gauss"]
    key = state["numpy_key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, state["numpy_pos"], has_gauss, gauss))
    python = tuple(int(v) for v in state["python"].tolist())
    random.setstate((state["python_version"], python, state["python_gauss"]))
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
    """Read a checkpoint (on CPU) with ``torch.load(weights_only=True)``: no code in it runs.

    Raises
    ------
    FileNotFoundError
        When the file is missing (the message names the usual fix).
    UnsafeCheckpointError
        When the file holds objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; run the burn-in stage first "
            "(train.py --config ... --method supervised) or fix init_checkpoint"
        )
    return read_checkpoint(path)


def gather_rng_states(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (identical result on all ranks)."""
    mine = rng_state()
    if not info.distributed:
        return [mine]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, mine)
    return states
