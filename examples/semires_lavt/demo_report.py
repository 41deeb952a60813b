"""The demo's measurements beyond oIoU: the pseudo-label audit (paper Fig. 6) and the table.

:func:`audit_teacher` labels every sentence of the unlabelled train images with a model (the
burn-in weights: the teacher every semi-supervised run starts from), refines the pseudo-labels
with the image's proposals by each strategy, and counts, against the ground truth that training
never sees, positive / negative / no corrections and the overall IoU before and after.
:func:`format_table` prints the demo's final table and says whether SemiRES beat the baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

import samrefine

from .checkpoints import load_checkpoint
from .data import ReferDataset, Resize, collate
from .lavt import build_lavt, build_tokenizer

__all__ = ["audit_teacher", "format_table"]


@torch.no_grad()
def audit_teacher(
    weights: str | Path,
    *,
    model_name: str,
    root: Path,
    dataset: str,
    image_ids: list,
    library: Any,
    image_size: int,
    strategies: tuple[str, ...] = ("iom", "cpi-u"),
    batch_size: int = 32,
    num_threads: int | None = None,
    bert_weights: str | Path | None = None,
) -> samrefine.AuditReport:
    """Audit refinement of a model's pseudo-labels on the unlabelled images (all sentences).

    Parameters
    ----------
    weights : str or Path
        A checkpoint of the example's trainer (its ``"model"`` entry is loaded).
    model_name : str
        ``build_lavt`` name of those weights.
    root, dataset : Path, str
        The refer-layout data.
    image_ids : list
        The unlabelled train images.
    library : path or list of paths
        The proposal library (or its shards).
    image_size : int
        Model input size; pseudo-labels, proposals and ground truth are compared at this size.
    strategies : tuple of str
        Strategies to audit at the paper's thresholds.
    batch_size : int
        Sentences per forward pass.
    num_threads : int, optional
        torch threads for the forward passes (restored afterwards); None leaves them.
    bert_weights : str or Path, optional
        The text encoder's checkpoint directory the model was trained from (its tokeniser is
        read from there too); None: the offline fallback package.

    Returns
    -------
    samrefine.AuditReport
        Per strategy: positive / negative / tie / no-correction counts, mean and overall IoU
        with the ground truth before and after refinement.
    """
    threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _audit(
            weights,
            model_name,
            root,
            dataset,
            image_ids,
            library,
            image_size,
            strategies,
            batch_size,
            bert_weights,
        )
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def _audit(
    weights,
    model_name,
    root,
    dataset,
    image_ids,
    library,
    image_size,
    strategies,
    batch_size,
    bert_weights,
) -> samrefine.AuditReport:
    model = build_lavt(model_name, img_size=image_size, bert_weights=bert_weights, verbose=False)
    state = load_checkpoint(weights)
    model.load_state_dict(state["model"])
    model.eval()
    data = ReferDataset(
        root,
        dataset,
        "train",
        image_ids=image_ids,
        image_size=image_size,
        tokenizer=build_tokenizer(bert_weights),
        sentences="all",
        transforms=[Resize(image_size)],
        proposals=samrefine.ProposalLibrary.open(library),
    )
    pseudo, gt, proposals = [], [], []
    for batch in DataLoader(data, batch_size=batch_size, collate_fn=collate):
        logits = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        pseudo.append((logits.argmax(1) == 1).numpy())
        gt.append(batch["mask"].numpy().astype(bool))
        proposals.extend(batch["proposals"][b] for b in range(len(batch["mask"])))
    return samrefine.audit(
        np.concatenate(pseudo),
        proposals,
        np.concatenate(gt),
        strategies=strategies,
        sweep=None,
        progress=False,
    )


def format_table(
    seed: int,
    eval_split: str,
    n_sentences: int,
    oiou: dict[str, float],
    report: samrefine.AuditReport | None,
) -> str:
    """The demo's printout: oIoU per model, the pseudo-label audit, and the verdict.

    Parameters
    ----------
    seed : int
    eval_split : str
    n_sentences : int
        Sentences evaluated.
    oiou : dict of str to float
        Label -> oIoU in [0, 1], in print order: supervised, baseline, then SemiRES rows.
    report : samrefine.AuditReport or None
        From :func:`audit_teacher`.

    Returns
    -------
    str
    """
    lines = [
        f"SemiRES demo, seed {seed}: oIoU (%) on the held-out '{eval_split}' split "
        f"({n_sentences} sentences)"
    ]
    for label, value in oiou.items():
        lines.append(f"  {label:<44} {100 * value:6.2f}")
    labels = list(oiou)
    baseline = oiou[labels[1]]
    for label in labels[2:]:
        delta = 100 * (oiou[label] - baseline)
        verdict = "beat" if delta > 0 else "did NOT beat"
        lines.append(f"  -> {label} {verdict} the plain baseline ({delta:+.2f} oIoU)")
    if report is not None:
        lines.append(
            f"\nPseudo-labels of the burn-in teacher on the unlabelled images "
            f"({report.n_samples} sentences), refined with the proposal library (paper Fig. 6):"
        )
        lines.append(
            f"  {'strategy':<8} {'positive':>9} {'negative':>9} {'tie':>5} {'no corr.':>9} "
            f"{'oIoU before':>12} {'oIoU after':>11}"
        )
        for name, s in report.strategies.items():
            lines.append(
                f"  {name:<8} {s.positive:>9} {s.negative:>9} {s.tie:>5} {s.no_correction:>9} "
                f"{100 * s.oiou_before:>12.2f} {100 * s.oiou_after:>11.2f}"
            )
    return "\n".join(lines)
