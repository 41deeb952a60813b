"""ProposalBatch: several images' proposals of one size, collated into flat (device) arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .kernels import Segments
from .proposals import Proposals

__all__ = ["ProposalBatch"]


class ProposalBatch:
    """Proposals of ``B`` images of one size, collated into flat arrays.

    Parameters
    ----------
    proposals : sequence of Proposals
        One per image, all of the same ``size``. An image may have zero masks.

    Attributes
    ----------
    starts, lengths : (R,) int32 numpy array, or int64 tensor after :meth:`to`
        All runs, image after image, mask after mask.
    run_offsets : (M + 1,) int64
        Runs of flat mask ``m`` are ``run_offsets[m]:run_offsets[m + 1]``.
    mask_offsets : (B + 1,) int64
        Flat masks of image ``b`` are ``mask_offsets[b]:mask_offsets[b + 1]``.
    host_mask_offsets : (B + 1,) int64 numpy
        The same, always on the host (so device code never syncs to read it).
    area : (M,) int64
        Pixels per mask.
    seg_x, seg_y0, seg_y1 : (G,) int32 numpy array, or int64 tensor after :meth:`to`
        The runs split at column boundaries: rows ``[seg_y0, seg_y1)`` of column ``seg_x``,
        joined from each image's cached :attr:`Proposals.segments`. The matching kernels read
        them as a plain tuple, :meth:`segments`.
    seg_offsets : (M + 1,) int64
        Segments of flat mask ``m`` are ``seg_offsets[m]:seg_offsets[m + 1]``.
    size : (H, W)
    device : None for numpy arrays, else the torch device the tensors live on.
    """

    _FIELDS = (
        "starts",
        "lengths",
        "run_offsets",
        "mask_offsets",
        "area",
        "seg_x",
        "seg_y0",
        "seg_y1",
        "seg_offsets",
    )

    # numpy arrays on the host, int64 tensors after ``to(device)``
    starts: Any
    lengths: Any
    run_offsets: Any
    mask_offsets: Any
    area: Any
    seg_x: Any
    seg_y0: Any
    seg_y1: Any
    seg_offsets: Any
    host_mask_offsets: np.ndarray
    size: tuple[int, int]
    device: Any

    def __init__(
        self,
        proposals: Sequence[Proposals] | None = None,
        *,
        _arrays: dict[str, Any] | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        if _arrays is not None:
            for k in self._FIELDS:
                setattr(self, k, _arrays[k])
            self.size = size  # type: ignore[assignment]  # set by to()/numpy()
            self.device = _arrays.get("device")
            self._seg_mask = _arrays.get("seg_mask")
            self._mask_image = _arrays.get("mask_image")
            self.host_mask_offsets = _arrays["host_mask_offsets"]
            return
        if isinstance(proposals, Proposals):
            raise TypeError(
                "ProposalBatch takes a list of Proposals, one per image; got one "
                "Proposals (its masks would become images): use "
                "ProposalBatch([proposals])"
            )
        proposals = list(proposals or [])
        if not proposals:
            raise ValueError("ProposalBatch needs at least one Proposals")
        for i, p in enumerate(proposals):
            if not isinstance(p, Proposals):
                raise TypeError(f"item {i} is a {type(p).__name__}, expected samrefine.Proposals")
        sizes = {p.size for p in proposals}
        if len(sizes) != 1:
            raise ValueError(
                f"all images of a batch must have proposals of one size, got "
                f"{sorted(sizes)}; resize them with Proposals.resize((H, W))"
            )
        self.size = sizes.pop()
        self.mask_offsets = np.array([0] + [len(p) for p in proposals], np.int64).cumsum()
        if len(proposals) == 1:  # the single-image call: share the arrays, no copies
            (p,) = proposals
            self.starts, self.lengths, self.run_offsets = p.starts, p.lengths, p.offsets
            self.area = p.area
            self.seg_x, self.seg_y0, self.seg_y1, self.seg_offsets = p.segments
        else:
            segs = [p.segments for p in proposals]
            self.starts = np.concatenate([p.starts for p in proposals])
            self.lengths = np.concatenate([p.lengths for p in proposals])
            self.run_offsets = _concat_offsets([p.offsets for p in proposals])
            self.area = np.concatenate([p.area for p in proposals])
            self.seg_x = np.concatenate([g[0] for g in segs])
            self.seg_y0 = np.concatenate([g[1] for g in segs])
            self.seg_y1 = np.concatenate([g[2] for g in segs])
            self.seg_offsets = _concat_offsets([g[3] for g in segs])
        self.host_mask_offsets = self.mask_offsets
        self.device = None
        self._seg_mask = None
        self._mask_image = None

    def __len__(self) -> int:
        return len(self.mask_offsets) - 1

    @property
    def num_masks(self) -> int:
        """Masks in the whole batch (M)."""
        return int(self.mask_offsets[-1])

    def __repr__(self) -> str:
        h, w = self.size
        return (
            f"ProposalBatch(images={len(self)}, masks={self.num_masks}, size=({h}, {w}), "
            f"device={self.device})"
        )

    @property
    def is_torch(self) -> bool:
        return self.device is not None

    def to(self, device: Any) -> ProposalBatch:
        """Torch tensors (int64) on ``device``, with the index maps the torch kernels need."""
        import torch

        device = torch.device(device)
        arrays: dict[str, Any] = {}
        for k in self._FIELDS:
            v = getattr(self, k)
            v = torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v
            arrays[k] = v.to(device=device, dtype=torch.int64, non_blocking=True)
        counts_m = arrays["seg_offsets"].diff()
        counts_b = arrays["mask_offsets"].diff()
        n_masks = int(self.mask_offsets[-1])
        arrays["seg_mask"] = torch.repeat_interleave(
            torch.arange(n_masks, device=device), counts_m, output_size=len(self.seg_x)
        )
        arrays["mask_image"] = torch.repeat_interleave(
            torch.arange(len(self), device=device), counts_b, output_size=n_masks
        )
        arrays["device"] = arrays["starts"].device  # with its index: cuda -> cuda:0
        arrays["host_mask_offsets"] = self.host_mask_offsets
        return ProposalBatch(_arrays=arrays, size=self.size)

    def numpy(self) -> ProposalBatch:
        """Numpy arrays on the host (the numba kernels' form)."""
        if not self.is_torch:
            return self
        arrays = {k: getattr(self, k).cpu().numpy() for k in self._FIELDS}
        for k in ("starts", "lengths", "seg_x", "seg_y0", "seg_y1"):
            arrays[k] = arrays[k].astype(np.int32)
        arrays["host_mask_offsets"] = self.host_mask_offsets
        return ProposalBatch(_arrays=arrays, size=self.size)

    def segments(self, device: Any = None) -> Segments:
        """The column segments the matching kernels read, as a plain tuple.

        Parameters
        ----------
        device : torch.device or str, optional
            None: numpy arrays on the host (the numba kernels' form). Otherwise int64 tensors on
            that device, with the per-segment mask and per-mask image indices the torch kernels
            need (moved once, reused when the batch already lives there).

        Returns
        -------
        Segments
        """
        if device is None:
            nb = self.numpy()
            return Segments(
                nb.seg_x, nb.seg_y0, nb.seg_y1, nb.seg_offsets, nb.mask_offsets, nb.area
            )
        tb = self
        if not (self.is_torch and self.device == _torch_device(device)):
            tb = self.to(device)
        return Segments(
            tb.seg_x,
            tb.seg_y0,
            tb.seg_y1,
            tb.seg_offsets,
            tb.mask_offsets,
            tb.area,
            tb._seg_mask,
            tb._mask_image,
        )

    def __getitem__(self, b: int) -> Proposals:
        """The proposals of image ``b`` (on the host)."""
        nb = self.numpy()
        m0, m1 = int(nb.mask_offsets[b]), int(nb.mask_offsets[b + 1])
        r0, r1 = int(nb.run_offsets[m0]), int(nb.run_offsets[m1])
        return Proposals(
            nb.starts[r0:r1],
            nb.lengths[r0:r1],
            nb.run_offsets[m0 : m1 + 1] - r0,
            self.size,
            validate=False,
        )


def _concat_offsets(offsets: list[np.ndarray]) -> np.ndarray:
    """Join per-image ``(N_i + 1,)`` offset arrays into one ``(sum N_i + 1,)`` int64 array."""
    shift = np.cumsum([0] + [int(o[-1]) for o in offsets[:-1]])
    return np.concatenate([[0]] + [o[1:] + d for o, d in zip(offsets, shift)]).astype(np.int64)


def _torch_device(device: Any) -> Any:
    import torch

    return torch.device(device)
