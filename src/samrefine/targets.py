"""Everything one training step needs from the teacher and the proposals, in one call.

Format
------
``semires_targets(teacher_out, proposals)`` for a batch of ``B`` images of ``H x W``:

==============  ===================  =========================================================
field           shape, dtype         meaning
==============  ===================  =========================================================
target          (B, H, W) bool       refined pseudo-label (SAM-refined, or the pseudo-label)
weight          (B, H, W) float32    1 on matched samples, ``pwa_weight(prob)`` on unmatched
                                     (a property, computed on access; the loss never needs it)
matched         (B,) bool            a proposal replaced the pseudo-label
prob            (B, H, W) float32    teacher foreground probability
pseudo          (B, H, W) bool       teacher pseudo-label (``argmax`` / ``prob > 0.5``)
refinement      Refinement           the full matching result (scores, selected proposals)
stats           dict of 0-d tensors  match_rate, changed_fraction, ... (see SemiRESTargets)
==============  ===================  =========================================================

All tensors stay on the teacher output's device (no numpy, no host copy on CUDA; the matching
runs on the torch backend there). The DataLoader side: :class:`ProposalCollate` batches each
sample's :class:`samrefine.Proposals` into a :class:`samrefine.ProposalBatch`, after replaying
the sample's geometric augmentation on them (:func:`follow_geometry`).

Example::

    loader = DataLoader(ds, batch_size=8, collate_fn=ProposalCollate(size=(480, 480)))
    for batch in loader:
        weak, strong = batch["weak"].cuda(), batch["strong"].cuda()
        t = semires_targets(teacher(weak), batch["proposals"].to("cuda"), "cpi-u")
        loss = PWABCELoss()(student(strong), t)
        log(t.summary())

Contents: :func:`semires_targets`, :class:`SemiRESTargets`, :class:`ProposalCollate`,
:func:`follow_geometry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import default_collate

from samrefine._common import UNSET
from samrefine.match import Refinement, refine, resolve_strategy
from samrefine.proposal_batch import ProposalBatch
from samrefine.proposals import Proposals
from samrefine.pwa import _check_params, pwa_weight

if TYPE_CHECKING:
    from samrefine.class_targets import SemanticTargets

__all__ = ["ProposalCollate", "SemiRESTargets", "follow_geometry", "semires_targets"]


@dataclass(frozen=True)
class SemiRESTargets:
    """Targets, weights and statistics for one unlabelled batch (see the module table).

    Attributes
    ----------
    target : torch.Tensor, (B, H, W) bool
        Refined label: union/best of the selected proposals for matched samples, the
        pseudo-label for unmatched ones.
    matched : torch.Tensor, (B,) bool
    prob : torch.Tensor, (B, H, W) float32 (float64 for float64 input)
        Teacher foreground probability in [0, 1].
    pseudo : torch.Tensor, (B, H, W) bool
        Teacher pseudo-label before refinement.
    refinement : Refinement
        The matching result (``scores``, ``selected_mask``, ``strategy``).
    stats : dict of str to 0-d torch.Tensor
        On the same device, not synchronised: ``match_rate`` (share of matched samples),
        ``num_matched``, ``changed_fraction`` (share of all pixels where ``target`` differs
        from ``pseudo``), ``selected_per_image`` (selected proposals / B),
        ``pseudo_foreground`` and ``target_foreground`` (foreground share of the pixels),
        ``unmatched_weight`` (mean PWA weight over unmatched pixels; 0 when none).
    pwa_params : tuple of 3 floats
        ``(gamma, mu, var)`` of Eq. 9, as given to :func:`semires_targets`; ``weight`` uses them.
    """

    target: torch.Tensor
    matched: torch.Tensor
    prob: torch.Tensor
    pseudo: torch.Tensor
    refinement: Refinement
    stats: dict[str, torch.Tensor]
    pwa_params: tuple[float, float, float] = (1.3, 0.5, 0.1)

    @property
    def weight(self) -> torch.Tensor:
        """Per-pixel loss weight ``(B, H, W)`` float32, computed on each access.

        1 on matched samples, ``pwa_weight(prob, *pwa_params)`` on unmatched ones (no class
        weights). For inspection and plots: :class:`samrefine.PWABCELoss` forms the same
        weights inside its fused loss, so training never builds this buffer.
        """
        psi = pwa_weight(self.prob, *self.pwa_params, validate=False)
        return torch.where(self.matched.view(-1, 1, 1), torch.ones_like(psi), psi).float()

    @property
    def batch_size(self) -> int:
        """Number of images ``B``."""
        return int(self.target.shape[0])

    @property
    def match_rate(self) -> float:
        """Share of matched samples, as a host float (synchronises a CUDA tensor)."""
        return float(self.stats["match_rate"])

    def summary(self) -> dict[str, float]:
        """The statistics as host floats, for logging (one synchronisation).

        Returns
        -------
        dict of str to float
        """
        keys = list(self.stats)
        values = torch.stack([self.stats[k].double() for k in keys]).cpu().tolist()
        return dict(zip(keys, values, strict=True))


def _teacher_prob_and_pseudo(
    teacher_out: torch.Tensor, from_logits: bool, pseudo_thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    x = teacher_out.detach()
    cdtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if x.ndim == 4 and x.shape[1] == 2:
        if from_logits:
            diff = x[:, 1].to(cdtype) - x[:, 0].to(cdtype)  # softmax[:, 1] == sigmoid(z1 - z0)
            prob = torch.sigmoid(diff)
            pseudo = diff > 0 if pseudo_thresh == 0.5 else prob > pseudo_thresh
        else:
            prob = x[:, 1].to(cdtype)
            pseudo = prob > pseudo_thresh
        return prob, pseudo
    z = x[:, 0] if x.ndim == 4 else x
    z = z.to(cdtype)
    if from_logits:
        prob = torch.sigmoid(z)
        pseudo = z > 0 if pseudo_thresh == 0.5 else prob > pseudo_thresh
    else:
        prob = z
        pseudo = prob > pseudo_thresh
    return prob, pseudo


def semires_targets(
    teacher_out: torch.Tensor,
    proposals: ProposalBatch | Sequence[Proposals] | Proposals,
    strategy: str = "cpi-u",
    *,
    from_logits: bool = True,
    iom_thresh: float | None = UNSET,
    under: float | None = UNSET,
    over: float | None = UNSET,
    pseudo_thresh: float = 0.5,
    gamma: float = 1.3,
    mu: float = 0.5,
    var: float = 0.1,
    backend: str | None = None,
    validate: bool = True,
    **semantic: Any,
) -> SemiRESTargets | SemanticTargets:
    """Teacher output + proposals -> refined targets, PWA weights, match flags and statistics.

    For a multi-class teacher output ``(B, C, H, W)`` with ``C > 2`` this returns
    :func:`samrefine.semantic_targets` (class-map targets, a :class:`SemanticTargets`); the
    ``semantic`` keywords (``per``, ``ignore_index``, ``skip_classes``, ``give_up``,
    ``conf_thresh``) go there and are refused for binary outputs.

    Parameters
    ----------
    teacher_out : torch.Tensor
        Teacher output for the weak view, floating: logits ``(B, 2, H, W)`` (two-class,
        channel 1 = object), ``(B, 1, H, W)`` or ``(B, H, W)`` (one foreground logit); or the
        corresponding probabilities with ``from_logits=False``. Detached internally.
    proposals : ProposalBatch, list of Proposals, or Proposals (B = 1)
        One image's proposals per sample, already at ``(H, W)`` (``Proposals.resize``). A host
        batch is moved to the teacher output's device by :func:`samrefine.refine`; moving it
        yourself with ``.to(device, ...)`` in advance overlaps the copy.
    strategy : {"iom", "cpi", "cpi-u", "cpi-o", "none"}, default "cpi-u"
        Matching strategy (see :func:`samrefine.refine`).
    from_logits : bool, default True
        Whether ``teacher_out`` holds logits (True) or probabilities in [0, 1] (False).
    iom_thresh, under, over : float or None, optional
        Strategy thresholds (strict), resolved by :func:`samrefine.match.resolve_strategy`:
        defaults are the strategy's (IOM 0.5, CPI 0.7/0.7, CPI-U ``under`` 0.7, CPI-O
        ``over`` 0.7); a threshold the strategy does not read raises; with ``cpi``, ``None``
        switches a test off.
    pseudo_thresh : float, default 0.5
        Pseudo-label = ``prob > pseudo_thresh``. At 0.5 with logits it is computed on the logits
        (``z1 > z0``, i.e. ``argmax`` with ties to background, as the reference does).
    gamma, mu, var : float
        PWA parameters (Eq. 9; ``var`` is a variance).
    backend : {"numba", "torch"}, optional
        Matching backend; default torch for CUDA, numba for CPU tensors.
    validate : bool, default True
        Reject NaN in ``teacher_out`` (and, with probabilities, values outside [0, 1]); one
        boolean is read to the host.

    Returns
    -------
    SemiRESTargets or SemanticTargets
        ``target``, ``matched``, ``prob``, ``pseudo``, ``refinement``, ``stats`` (and
        ``weight``, computed on access); a :class:`SemanticTargets` for ``C > 2`` classes.

    Raises
    ------
    TypeError
        If ``teacher_out`` is not a floating-point tensor.
    ValueError
        On a bad shape, an unknown strategy or a threshold it does not read, NaN or
        out-of-range probabilities, or proposals of another batch size or image size.

    Notes
    -----
    SemiRES Algorithm 1 (refinement), Eq. 9 (PWA weight). The teacher probability is
    ``softmax(logits)[:, 1]``, computed as ``sigmoid(z1 - z0)`` (the same value, without
    overflow). ``weight`` carries no class weights; pass the result to
    :class:`samrefine.PWABCELoss` (``criterion(student_logits, targets)``), which applies them.
    """
    if isinstance(teacher_out, torch.Tensor) and teacher_out.ndim == 4 and teacher_out.shape[1] > 2:
        from samrefine.class_targets import semantic_targets

        if pseudo_thresh != 0.5:
            raise ValueError(
                "pseudo_thresh is for binary outputs; C > 2 classes use argmax (see conf_thresh)"
            )
        return semantic_targets(
            teacher_out,
            proposals,
            strategy,
            from_logits=from_logits,
            iom_thresh=iom_thresh,
            under=under,
            over=over,
            gamma=gamma,
            mu=mu,
            var=var,
            backend=backend,
            validate=validate,
            **semantic,
        )
    if semantic:
        raise TypeError(
            f"unexpected keyword(s) {sorted(semantic)}: they apply to multi-class "
            "(B, C > 2, H, W) teacher outputs only"
        )
    if not isinstance(teacher_out, torch.Tensor) or not teacher_out.is_floating_point():
        raise TypeError(
            "teacher_out must be a floating-point torch.Tensor (logits or probabilities), got "
            f"{getattr(teacher_out, 'dtype', type(teacher_out).__name__)}"
        )
    shape = tuple(teacher_out.shape)
    if not (len(shape) == 3 or (len(shape) == 4 and shape[1] in (1, 2))):
        raise ValueError(
            f"teacher_out must be (B, H, W), (B, 1, H, W), (B, 2, H, W) or (B, C > 2, H, W), "
            f"got {shape}"
        )
    resolved = resolve_strategy(strategy, iom_thresh=iom_thresh, under=under, over=over)
    if not (isinstance(pseudo_thresh, (int, float)) and 0.0 <= pseudo_thresh <= 1.0):
        raise ValueError(f"pseudo_thresh must be in [0, 1], got {pseudo_thresh!r}")
    _check_params(gamma, mu, var)
    if validate and not torch.compiler.is_compiling():
        x = teacher_out.detach()
        bad = torch.isnan(x) if from_logits else (torch.isnan(x) | (x < 0) | (x > 1))
        if bool(bad.any()):
            what = "NaN" if from_logits else "NaN or values outside [0, 1]"
            raise ValueError(
                f"teacher_out holds {what} ({int(bad.sum())} value(s)); check the teacher, or "
                "pass from_logits=True if these are logits"
            )

    prob, pseudo = _teacher_prob_and_pseudo(teacher_out, from_logits, float(pseudo_thresh))
    ref = refine(pseudo, proposals, resolved, backend=backend)
    target = ref.masks
    matched = ref.matched
    device = prob.device
    if not isinstance(target, torch.Tensor):  # defensive: refine keeps torch in, torch out
        target = torch.as_tensor(target, device=device)
        matched = torch.as_tensor(matched, device=device)
    matched = matched.to(device)
    target = target.to(device=device, dtype=torch.bool)

    psi = pwa_weight(prob, gamma, mu, var, validate=False)  # for the statistics only
    m3 = matched.view(-1, 1, 1)

    n = pseudo.shape[0]
    n_pix = max(pseudo[0].numel(), 1)
    matched_f = matched.float()
    unmatched_pixels = (1.0 - matched_f).sum() * n_pix
    selected = torch.as_tensor(ref.selected_mask, device=device)
    stats = {
        "match_rate": matched_f.mean(),
        "num_matched": matched.sum(),
        "changed_fraction": (target != pseudo).float().mean(),
        "selected_per_image": selected.sum().float() / max(n, 1),
        "pseudo_foreground": pseudo.float().mean(),
        "target_foreground": target.float().mean(),
        "unmatched_weight": (psi * (~m3)).sum().float() / unmatched_pixels.clamp_min(1.0),
    }
    return SemiRESTargets(
        target=target,
        matched=matched,
        prob=prob,
        pseudo=pseudo,
        refinement=ref,
        stats=stats,
        pwa_params=(float(gamma), float(mu), float(var)),
    )


# ------------------------------------------------------------------------------ collation

_OPS = ("resize", "hflip", "crop")


def follow_geometry(proposals: Proposals, ops: Sequence[Sequence[Any]] | None) -> Proposals:
    """Replay an image's geometric augmentation on its proposals, in order.

    Parameters
    ----------
    proposals : Proposals
        The image's proposals at the size the first op expects (usually the original size).
    ops : sequence of tuples, or None
        Each ``("resize", (H, W))``, ``("hflip",)`` or ``("crop", (x, y, w, h))`` (left, top,
        width, height in pixels; a box reaching outside pads with background), exactly as
        applied to the image. ``None`` or empty: no change.

    Returns
    -------
    Proposals
        Transformed proposals (nearest-neighbour resize, equal to
        ``torch.nn.functional.interpolate(mode="nearest")`` on the decoded masks).

    Raises
    ------
    TypeError, ValueError
        For something that is not ``Proposals`` or an unknown / malformed op.
    """
    if not isinstance(proposals, Proposals):
        raise TypeError(f"expected samrefine.Proposals, got {type(proposals).__name__}")
    for i, op in enumerate(ops or ()):
        if isinstance(op, str):
            op = (op,)
        if not isinstance(op, Sequence) or not op or op[0] not in _OPS:
            raise ValueError(
                f"geometry op {i} is {op!r}; expected ('resize', (H, W)), ('hflip',) or "
                "('crop', (x, y, w, h))"
            )
        name, args = op[0], tuple(op[1:])
        if name == "hflip":
            if args:
                raise ValueError(f"geometry op {i}: 'hflip' takes no argument, got {args!r}")
            proposals = proposals.hflip()
        elif len(args) != 1:
            raise ValueError(f"geometry op {i}: {name!r} takes one argument, got {args!r}")
        elif name == "resize":
            proposals = proposals.resize(args[0])
        else:
            proposals = proposals.crop(args[0])
    return proposals


class ProposalCollate:
    """``collate_fn`` that batches proposals next to the usual tensors.

    Parameters
    ----------
    size : tuple of int, optional
        ``(H, W)`` every sample's proposals are resized to after their geometry ops (the
        network input size). Without it, all samples must already agree in size.
    key : str or int, default "proposals"
        Where each sample holds its :class:`samrefine.Proposals`: a dict key, or an index for
        tuple/list samples.
    geometry_key : str or int, optional, default "geometry"
        Where each sample may hold its geometry ops (see :func:`follow_geometry`); absent
        entries mean no ops. Collated as a plain list. ``None`` disables it.
    collate : callable, default torch.utils.data.default_collate
        Collates everything else.
    resize_mode : {"nearest", "nearest-exact", "pil"}, default "nearest"
        Rule of the final resize to ``size`` (see :meth:`samrefine.Proposals.resize`): pick
        the one your pipeline resizes label maps with (``"pil"`` for UniMatch-style loaders).

    Notes
    -----
    Runs in the DataLoader workers (the object is picklable), so resizing and flattening of runs
    costs the training process nothing. The output is the ``collate`` result with ``key``
    replaced by a host :class:`samrefine.ProposalBatch` (move it with ``.to(device)``).

    Examples
    --------
    >>> import numpy as np
    >>> from samrefine import Proposals
    >>> p = Proposals.from_dense(np.ones((1, 4, 6), bool))
    >>> samples = [{"x": 1, "proposals": p, "geometry": [("crop", (0, 0, 3, 2))]},
    ...            {"x": 2, "proposals": p, "geometry": [("hflip",)]}]
    >>> batch = ProposalCollate(size=(8, 8))(samples)
    >>> batch["x"].tolist(), len(batch["proposals"]), batch["proposals"].size
    ([1, 2], 2, (8, 8))
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        *,
        key: str | int = "proposals",
        geometry_key: str | int | None = "geometry",
        collate: Callable[[list[Any]], Any] = default_collate,
        resize_mode: str = "nearest",
    ) -> None:
        if size is not None:
            try:
                h, w = (int(v) for v in size)
            except (TypeError, ValueError):
                raise ValueError(f"size must be (H, W), got {size!r}") from None
            if h <= 0 or w <= 0:
                raise ValueError(f"size must be positive, got {size!r}")
            size = (h, w)
        from samrefine.rle import RESIZE_MODES

        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        self.resize_mode = resize_mode
        self.size = size
        self.key = key
        self.geometry_key = geometry_key
        self.collate = collate

    def __repr__(self) -> str:
        return (
            f"ProposalCollate(size={self.size}, key={self.key!r}, "
            f"geometry_key={self.geometry_key!r})"
        )

    def __call__(self, samples: Sequence[Any]) -> Any:
        """Collate a list of samples (dicts, or tuples/lists indexed by ``key``).

        Returns
        -------
        dict, tuple or list
            Same structure as one sample; ``key`` holds a :class:`samrefine.ProposalBatch`,
            ``geometry_key`` (if present) a list of the per-sample op lists.
        """
        if not samples:
            raise ValueError("cannot collate an empty batch")
        props, geoms, rest = [], [], []
        for i, s in enumerate(samples):
            p, g, r = self._split(s, i)
            if self.size is not None:
                p = p.resize(self.size, mode=self.resize_mode)
            props.append(p)
            geoms.append(g)
            rest.append(r)
        batch = ProposalBatch(props)
        out = self.collate(rest)
        if isinstance(samples[0], Mapping):
            out = dict(out)
            out[self.key] = batch
            if self.geometry_key is not None and any(g is not None for g in geoms):
                out[self.geometry_key] = geoms
            return out
        out = list(out)
        out.insert(int(self.key), batch)
        return type(samples[0])(out) if isinstance(samples[0], tuple) else out

    def _split(self, sample: Any, i: int) -> tuple[Proposals, Any, Any]:
        if isinstance(sample, Mapping):
            if self.key not in sample:
                raise ValueError(
                    f"sample {i} has no {self.key!r} entry (keys: {sorted(map(str, sample))}); "
                    "set ProposalCollate(key=...)"
                )
            rest: Any = {k: v for k, v in sample.items() if k not in (self.key, self.geometry_key)}
            geom = sample.get(self.geometry_key) if self.geometry_key is not None else None
            p = follow_geometry(self._check(sample[self.key], i), geom)
            return p, geom, rest
        if isinstance(sample, (tuple, list)):
            if not isinstance(self.key, int):
                raise TypeError(
                    f"sample {i} is a {type(sample).__name__}; give key as an int index"
                )
            if self.geometry_key is not None and not isinstance(self.geometry_key, str):
                raise TypeError("geometry ops in tuple samples are not supported; use dicts")
            rest = [v for j, v in enumerate(sample) if j != self.key]
            return self._check(sample[self.key], i), None, rest
        raise TypeError(f"sample {i} is a {type(sample).__name__}; expected a dict or a tuple")

    @staticmethod
    def _check(p: Any, i: int) -> Proposals:
        if not isinstance(p, Proposals):
            raise TypeError(f"sample {i}: expected samrefine.Proposals, got {type(p).__name__}")
        return p
