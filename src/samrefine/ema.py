"""Mean teacher: an exponential moving average of the student's weights (SemiRES Eq. 5).

Format
------
After every optimizer step::

    teacher_k <- decay * teacher_k + (1 - decay) * student_k     for floating-point tensors k
    teacher_k <- student_k                                       for integer / bool buffers k

over the student's parameters and buffers, in ``named_parameters()`` / ``named_buffers()`` order.
With ``warmup=True`` the step-``t`` decay is ``min(1 - 1/(t + 1), decay)`` (``t`` = number of
updates already done), as in UniMatch v2 and U2PL: the first update copies the student.

Worked example, decay 0.9, one parameter: teacher 1.0, student 2.0 -> teacher 1.1; an int64
``relative_position_index`` of 37 stays 37 (the SemiRES reference computes
``37 * 0.9996 + 37 * 0.0004`` in float32 and truncates it back to 36 for some entries).

Cost: two fused multi-tensor kernels per update (``torch._foreach_lerp_`` on the floating
tensors, ``torch._foreach_copy_`` on the others), no temporaries the size of the model, no
``state_dict`` rebuild.

Contents: :class:`EMATeacher`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["EMATeacher", "unwrap_model"]


def unwrap_model(module: nn.Module) -> nn.Module:
    """Return the plain module inside DDP / DataParallel / ``torch.compile`` wrappers.

    Parameters
    ----------
    module : torch.nn.Module
        A model, possibly wrapped (any nesting of ``DistributedDataParallel``,
        ``DataParallel`` and ``torch.compile``'s ``OptimizedModule``).

    Returns
    -------
    torch.nn.Module
        The innermost module; it shares its parameters with ``module``.
    """
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if isinstance(module, parallel):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, nn.Module):
            module = module._orig_mod
        else:
            return module


def _named_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    # remove_duplicate (the default) skips tied weights, as state_dict keys do not.
    yield from module.named_parameters()
    yield from module.named_buffers()


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


class EMATeacher:
    """Frozen exponential-moving-average copy of a student network (mean teacher).

    Parameters
    ----------
    student : torch.nn.Module
        The model being trained; may be wrapped in ``DistributedDataParallel``,
        ``DataParallel`` or ``torch.compile`` (the wrapper is removed before copying).
    decay : float, default 0.996
        EMA decay ``alpha`` in [0, 1] (Eq. 5). The SemiRES paper uses 0.996, its code 0.9996.
    warmup : bool, default False
        Use ``min(1 - 1/(t + 1), decay)`` at update ``t`` (0-based), so early teachers track the
        student closely (UniMatch v2, U2PL).

    Attributes
    ----------
    module : torch.nn.Module
        The teacher: a deep copy of the unwrapped student in eval mode, all parameters with
        ``requires_grad=False``. Same devices and dtypes as the student at construction.
    decay : float
        The configured decay.
    warmup : bool
    step : int
        Number of :meth:`update` calls so far (restored by :meth:`load_state_dict`).

    Notes
    -----
    Paper: SemiRES Eq. 5, ``theta_t <- alpha theta_t + (1 - alpha) theta_s``, with ``alpha =
    0.996`` (Sec. 4.2). Differences from the reference code (SemiRES ``train_semi_*.py``
    ``EMA_update``), on purpose:

    * Only floating-point parameters and buffers are averaged; integer and bool buffers are
      copied from the student. The reference averages every ``state_dict`` entry, which turns
      Swin's int64 ``relative_position_index`` into ``v * k + v * (1 - k)`` in float32 and
      truncates it on load: about 8% of the entries drop by one and the teacher reads the wrong
      relative-position biases; BatchNorm's ``num_batches_tracked`` is averaged too.
    * The update is two fused multi-tensor kernels rather than a rebuilt ``state_dict`` and a
      ``load_state_dict`` every step.
    * ``update`` reads ``named_parameters()`` and ``named_buffers()`` (not ``state_dict``), so
      non-persistent buffers are kept in sync and tied weights are visited once.

    Floating buffers such as BatchNorm running statistics are averaged, as in the reference and
    most mean-teacher code. Under DDP every rank holds identical parameters after the optimizer
    step, so every rank computes the same teacher (buffers are per rank unless SyncBatchNorm).

    Examples
    --------
    >>> import torch
    >>> student = torch.nn.Linear(2, 1)
    >>> teacher = EMATeacher(student, decay=0.99)
    >>> with torch.no_grad():
    ...     _ = student.weight.add_(1.0)
    >>> teacher.update(student)
    >>> torch.allclose(teacher.module.weight, student.weight - 0.99)
    True
    """

    def __init__(self, student: nn.Module, decay: float = 0.996, *, warmup: bool = False) -> None:
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be a torch.nn.Module, got {type(student).__name__}")
        _check_decay(decay)
        base = unwrap_model(student)
        self.module: nn.Module = copy.deepcopy(base)
        self.module.eval()
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.step = 0
        named = list(_named_tensors(self.module))
        self._names = [n for n, _ in named]
        self._float_idx = [i for i, (_, t) in enumerate(named) if _is_float(t)]
        self._other_idx = [i for i, (_, t) in enumerate(named) if not _is_float(t)]

    def __repr__(self) -> str:
        return (
            f"EMATeacher(decay={self.decay}, warmup={self.warmup}, step={self.step}, "
            f"module={type(self.module).__name__})"
        )

    def current_decay(self) -> float:
        """Decay the next :meth:`update` will use (``min(1 - 1/(step + 1), decay)`` with warm-up).

        Returns
        -------
        float
        """
        if self.warmup:
            return min(1.0 - 1.0 / (self.step + 1), self.decay)
        return self.decay

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """Move the teacher toward ``student``; call once after each optimizer step.

        Parameters
        ----------
        student : torch.nn.Module
            The same architecture the teacher was built from, wrapped or not.

        Raises
        ------
        ValueError
            If ``student``'s parameter/buffer names, shapes, dtypes or devices differ from the
            teacher's (a different model, or one moved with ``.to`` after the teacher was built:
            move the teacher too, ``teacher.module.to(...)``).
        """
        base = unwrap_model(student)
        named = list(_named_tensors(base))
        if [n for n, _ in named] != self._names:
            raise ValueError(
                "student's parameters/buffers do not match the teacher's (different names or "
                "order); pass the same architecture the EMATeacher was built from"
            )
        # The teacher's tensors are looked up each time: Module.to() replaces buffer objects.
        mine = [t for _, t in _named_tensors(self.module)]
        src_float = [named[i][1].detach() for i in self._float_idx]
        src_other = [named[i][1] for i in self._other_idx]
        dst_float = [mine[i] for i in self._float_idx]
        dst_other = [mine[i] for i in self._other_idx]
        self._check_pairs(src_float, dst_float, self._float_idx)
        self._check_pairs(src_other, dst_other, self._other_idx)
        decay = self.current_decay()
        if dst_float:
            # teacher + (1 - decay) * (student - teacher) == decay * teacher + (1 - decay) * student
            torch._foreach_lerp_(dst_float, src_float, 1.0 - decay)
        if dst_other:
            torch._foreach_copy_(dst_other, src_other)
        self.step += 1

    def _check_pairs(
        self, src: list[torch.Tensor], dst: list[torch.Tensor], idx: list[int]
    ) -> None:
        for s, d, i in zip(src, dst, idx, strict=True):
            if s.shape != d.shape or s.dtype != d.dtype or s.device != d.device:
                raise ValueError(
                    f"{self._names[i]!r}: student has {tuple(s.shape)} {s.dtype} on {s.device}, "
                    f"teacher has {tuple(d.shape)} {d.dtype} on {d.device}; build the teacher "
                    "after moving/casting the student, or apply the same .to(...) to "
                    "teacher.module"
                )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the teacher under ``torch.no_grad()`` (it stays in eval mode).

        Returns
        -------
        Any
            Whatever ``self.module(*args, **kwargs)`` returns.
        """
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: teacher weights, step count and settings.

        Returns
        -------
        dict
            ``{"module": teacher.state_dict(), "step": int, "decay": float, "warmup": bool}``.
        """
        return {
            "module": self.module.state_dict(),
            "step": self.step,
            "decay": self.decay,
            "warmup": self.warmup,
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Restore from :meth:`state_dict` (the saved ``decay`` and ``warmup`` win).

        Parameters
        ----------
        state : dict
            As returned by :meth:`state_dict`.
        strict : bool, default True
            Passed to ``torch.nn.Module.load_state_dict`` for the teacher weights.

        Raises
        ------
        ValueError
            If ``state`` lacks the ``"module"`` or ``"step"`` entry.
        """
        missing = [k for k in ("module", "step") if k not in state]
        if missing:
            raise ValueError(
                f"state is missing {missing}; pass the dict from EMATeacher.state_dict(), not "
                "the teacher model's own state_dict (load that with teacher.module.load_state_dict)"
            )
        self.module.load_state_dict(state["module"], strict=strict)
        self.step = int(state["step"])
        if "decay" in state:
            _check_decay(state["decay"])
            self.decay = float(state["decay"])
        if "warmup" in state:
            self.warmup = bool(state["warmup"])


def _check_decay(decay: float) -> None:
    if isinstance(decay, bool) or not isinstance(decay, (int, float)):
        raise TypeError(f"decay must be a float in [0, 1], got {decay!r}")
    if not (math.isfinite(decay) and 0.0 <= decay <= 1.0):
        raise ValueError(f"decay must be in [0, 1] (e.g. 0.996), got {decay!r}")
