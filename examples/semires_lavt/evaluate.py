"""Evaluate a LAVT model on referring segmentation: oIoU, mIoU, precision@0.5:0.9.

Every sentence of every referent is one sample (``ReferDataset(sentences="all")``). For sample k
with predicted mask P_k and GT mask G_k, I_k = |P_k AND G_k| and U_k = |P_k OR G_k| (pixels)::

    oIoU   = sum_k I_k / sum_k U_k                    (overall IoU)
    mIoU   = mean_k IoU_k,  IoU_k = I_k / U_k, 0 if U_k = 0
    P@X    = share of samples with IoU_k >= X,  X in 0.5, 0.6, 0.7, 0.8, 0.9

Two protocols, reported separately:

* ``model_size``: prediction (argmax of the two logits) and GT both at the model's input size,
  e.g. 480 x 480 (the LAVT/SemiRES test.py protocol; GT resized with nearest neighbour).
* ``original``: logits upsampled bilinearly (``align_corners=False``) to the image's original size,
  then argmax, against the GT at original size.

Each is also broken down by object size at original resolution: COCO buckets ``small``
(area < 32^2 px), ``medium`` (< 96^2), ``large``, and the paper's small-object subsets (SemiRES
Appendix F): the ``smallest_5%`` and ``smallest_10%`` of samples by GT area.

Distributed: with ``torch.distributed`` initialised, each rank evaluates its shard; per-sample
(index, I, U, area) records are gathered on every rank and de-duplicated by dataset index, which
removes the samples ``DistributedSampler`` repeats to pad the last batch. Totals are exact and
equal to a single-process run.

Command line::

    python examples/semires_lavt/evaluate.py --random-init --model tiny        # synthetic val
    python examples/semires_lavt/evaluate.py --data-root /data/refer --dataset refcoco \\
        --model swin_base --checkpoint model_best_refcoco.pth --bert-weights bert-base-uncased
    torchrun --nproc-per-node 4 examples/semires_lavt/evaluate.py ...   # distributed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.semires_lavt.data import (  # noqa: E402
    ReferDataset,
    Resize,
    collate,
    write_synthetic_refcoco,
)
from examples.semires_lavt.data.refer import DEFAULT_SPLIT_BY, SPLITS  # noqa: E402
from examples.semires_lavt.lavt import (  # noqa: E402
    build_lavt,
    build_tokenizer,
    load_lavt_checkpoint,
)

__all__ = [
    "COCO_AREA_THRESHOLDS",
    "PRECISION_THRESHOLDS",
    "evaluate",
    "format_table",
    "iou_counts",
    "main",
    "summarize",
    "summarize_by_size",
]

#: IoU thresholds of the precision metrics.
PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
#: COCO object-size bucket limits in pixels at original resolution: small < 32^2 <= medium < 96^2.
COCO_AREA_THRESHOLDS = (32**2, 96**2)
PROTOCOL_LABELS = {
    "model_size": "prediction and GT at the model input size (LAVT/SemiRES test protocol)",
    "original": "prediction upsampled to the original image size, GT at original size",
}


def iou_counts(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample intersection and union pixel counts.

    Parameters
    ----------
    pred, gt : torch.Tensor
        (B, H, W) or (H, W) masks, bool or {0, 1} integers.

    Returns
    -------
    intersection, union : torch.Tensor
        (B,) or () int64 pixel counts.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != GT shape {tuple(gt.shape)}")
    pred, gt = pred.bool(), gt.bool()
    dims = (-2, -1)
    return (pred & gt).sum(dim=dims, dtype=torch.int64), (pred | gt).sum(
        dim=dims, dtype=torch.int64
    )


def summarize(
    intersections: Sequence[int] | np.ndarray,
    unions: Sequence[int] | np.ndarray,
    thresholds: Sequence[float] = PRECISION_THRESHOLDS,
) -> dict[str, float]:
    """oIoU, mIoU and precision@X from per-sample counts.

    Parameters
    ----------
    intersections, unions : array-like of int
        (K,) pixel counts per sample.
    thresholds : sequence of float
        IoU thresholds X of ``precision@X`` (IoU >= X counts as a hit).

    Returns
    -------
    dict
        ``{"n": K, "oIoU": float, "mIoU": float, "precision@0.5": float, ...}``, values in [0, 1]
        (NaN for K = 0; oIoU is 0 when every union is 0).
    """
    inter = np.asarray(intersections, dtype=np.int64)
    union = np.asarray(unions, dtype=np.int64)
    if inter.shape != union.shape or inter.ndim != 1:
        raise ValueError(f"intersections {inter.shape} and unions {union.shape} must be equal 1-D")
    if np.any(inter > union) or np.any(inter < 0):
        raise ValueError("each intersection must lie in [0, union]; were the counts swapped?")
    result: dict[str, float] = {"n": int(inter.size)}
    if inter.size == 0:
        result.update(oIoU=math.nan, mIoU=math.nan)
        result.update({f"precision@{t}": math.nan for t in thresholds})
        return result
    total_union = int(union.sum())
    result["oIoU"] = int(inter.sum()) / total_union if total_union else 0.0
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    result["mIoU"] = float(iou.mean())
    for t in thresholds:
        result[f"precision@{t}"] = float((iou >= t).mean())
    return result


def summarize_by_size(
    intersections: np.ndarray,
    unions: np.ndarray,
    areas: np.ndarray,
    area_thresholds: tuple[int, int] = COCO_AREA_THRESHOLDS,
) -> dict[str, dict[str, float]]:
    """Metrics per object-size bucket.

    Parameters
    ----------
    intersections, unions : np.ndarray
        (K,) int pixel counts.
    areas : np.ndarray
        (K,) int GT areas in pixels at original resolution.
    area_thresholds : (int, int)
        Bucket limits: small < first <= medium < second <= large.

    Returns
    -------
    dict
        ``{"small": metrics, "medium": ..., "large": ..., "smallest_5%": ...,
        "smallest_10%": ...}`` (metrics as :func:`summarize`). The smallest-share subsets take the
        ``ceil(share * K)`` samples of smallest area (ties broken by sample order).
    """
    areas = np.asarray(areas, dtype=np.int64)
    low, high = area_thresholds
    buckets = {
        "small": areas < low,
        "medium": (areas >= low) & (areas < high),
        "large": areas >= high,
    }
    result = {name: summarize(intersections[keep], unions[keep]) for name, keep in buckets.items()}
    order = np.argsort(areas, kind="stable")
    for share in (5, 10):
        chosen = order[: math.ceil(share / 100 * areas.size)]
        result[f"smallest_{share}%"] = summarize(intersections[chosen], unions[chosen])
    return result


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _gather_records(records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All-gather per-sample records across ranks and drop DistributedSampler repeats."""

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, records)
        records = {key: np.concatenate([g[key] for g in gathered]) for key in records}
    _, first = np.unique(records["index"], return_index=True)
    return {key: value[first] for key, value in records.items()}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    *,
    device: torch.device | str | None = None,
    protocols: Sequence[str] = ("model_size", "original"),
    area_thresholds: tuple[int, int] = COCO_AREA_THRESHOLDS,
    progress: bool = True,
    max_batches: int | None = None,
) -> dict:
    """Evaluate a referring-segmentation model.

    Parameters
    ----------
    model : torch.nn.Module
        ``model(image, input_ids, attention_mask) -> (B, 2, S, S)`` logits (e.g.
        :class:`.lavt.LAVT`, possibly DDP-wrapped). Put in eval mode during the call and
        restored afterwards.
    loader : DataLoader
        Over a ``ReferDataset(sentences="all", with_orig_mask=True)`` with
        :func:`.data.collate`; under ``torch.distributed`` use a ``DistributedSampler`` with
        ``shuffle=False``. Batches need ``image``, ``mask``, ``input_ids``, ``attention_mask``,
        ``index``, ``area``, and ``mask_orig`` for the ``original`` protocol.
    device : torch.device or str, optional
        Default: the device of the model's first parameter.
    protocols : sequence of str
        Among ``"model_size"`` and ``"original"``.
    area_thresholds : (int, int)
        Size-bucket limits in pixels (COCO: 32^2, 96^2).
    progress : bool
        Show a tqdm bar on rank 0.
    max_batches : int, optional
        Stop after this many batches (smoke runs).

    Returns
    -------
    dict
        ``{"n_samples", "oIoU", "mIoU" (model_size protocol, for model selection),
        "protocols": {name: {"label", "all": metrics, "by_size": {bucket: metrics}}},
        "area_thresholds"}``; metrics as :func:`summarize`. Identical on every rank.
    """

    unknown = [p for p in protocols if p not in PROTOCOL_LABELS]
    if unknown or not protocols:
        raise ValueError(f"protocols {list(protocols)}: choose among {list(PROTOCOL_LABELS)}")
    if device is None:
        device = next(_unwrap(model).parameters()).device
    was_training = model.training
    model.eval()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    records: dict[str, list] = {"index": [], "area": []}
    for name in protocols:
        records[f"{name}_i"], records[f"{name}_u"] = [], []
    try:
        for step, batch in enumerate(
            tqdm(loader, desc="evaluate", disable=not progress or rank != 0, leave=False)
        ):
            if max_batches is not None and step >= max_batches:
                break
            missing = [k for k in ("image", "mask", "index", "area") if k not in batch]
            if "original" in protocols and "mask_orig" not in batch:
                missing.append("mask_orig")
            if missing:
                raise KeyError(
                    f"batch lacks {missing}; build the dataset with sentences='all', "
                    "with_mask=True, with_orig_mask=True and collate with data.collate"
                )
            logits = model(
                batch["image"].to(device),
                batch["input_ids"].to(device),
                batch["attention_mask"].to(device),
            ).float()
            records["index"].append(batch["index"].numpy())
            records["area"].append(batch["area"].numpy())
            if "model_size" in protocols:
                inter, union = iou_counts(logits.argmax(dim=1), batch["mask"].to(device))
                records["model_size_i"].append(inter.cpu().numpy())
                records["model_size_u"].append(union.cpu().numpy())
            if "original" in protocols:
                inters, unions = [], []
                for k, gt in enumerate(batch["mask_orig"]):
                    up = F.interpolate(
                        logits[k : k + 1],
                        size=tuple(gt.shape),
                        mode="bilinear",
                        align_corners=False,
                    )
                    inter, union = iou_counts(up[0].argmax(dim=0), gt.to(device))
                    inters.append(int(inter))
                    unions.append(int(union))
                records["original_i"].append(np.asarray(inters, dtype=np.int64))
                records["original_u"].append(np.asarray(unions, dtype=np.int64))
    finally:
        model.train(was_training)
    arrays = {
        key: np.concatenate(value).astype(np.int64) if value else np.zeros(0, np.int64)
        for key, value in records.items()
    }
    arrays = _gather_records(arrays)
    result: dict[str, Any] = {
        "n_samples": int(arrays["index"].size),
        "area_thresholds": list(area_thresholds),
        "protocols": {},
    }
    for name in protocols:
        inter, union = arrays[f"{name}_i"], arrays[f"{name}_u"]
        result["protocols"][name] = {
            "label": PROTOCOL_LABELS[name],
            "all": summarize(inter, union),
            "by_size": summarize_by_size(inter, union, arrays["area"], area_thresholds),
        }
    headline = result["protocols"][protocols[0]]["all"]
    result["oIoU"], result["mIoU"] = headline["oIoU"], headline["mIoU"]
    return result


def format_table(results: dict[str, dict], image_size: int | None = None) -> str:
    """Plain-text table of ``{split: evaluate(...) result}``, one row per split/protocol/bucket."""
    columns = ["oIoU", "mIoU"] + [f"precision@{t}" for t in PRECISION_THRESHOLDS]
    header = f"{'split':<8} {'protocol':<12} {'subset':<13} {'n':>6} " + " ".join(
        f"{c.replace('precision', 'P'):>7}" for c in columns
    )
    lines = [header, "-" * len(header)]
    for split, result in results.items():
        for name, block in result["protocols"].items():
            label = f"{image_size}x{image_size}" if name == "model_size" and image_size else name
            subsets = {"all": block["all"], **block["by_size"]}
            for subset, metrics in subsets.items():
                values = " ".join(f"{100 * metrics[c]:7.2f}" for c in columns)
                lines.append(f"{split:<8} {label:<12} {subset:<13} {metrics['n']:>6} {values}")
    lines.append("values in %; " + "; ".join(f"{k}: {v}" for k, v in PROTOCOL_LABELS.items()))
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """Replace NaN (metrics of empty subsets) by None so the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _setup_distributed() -> tuple[int, int, torch.device]:
    """Initialise torch.distributed from torchrun's environment; (rank, world, device)."""

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of :func:`main`."""
    parser = argparse.ArgumentParser(
        description="Evaluate LAVT on RefCOCO-format data (oIoU, mIoU, precision@0.5:0.9, "
        "by object size; 480x480 and original-resolution protocols).",
    )
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="trained LAVT checkpoint (ours or official layout)")
    weights.add_argument(
        "--random-init", action="store_true", help="random weights (smoke test of the pipeline)"
    )
    parser.add_argument(
        "--checkpoint-key", default="model", help="entry of our checkpoint holding the weights"
    )
    parser.add_argument(
        "--data-root",
        help="refer-layout data root; default: a synthetic dataset written to --synthetic-dir",
    )
    parser.add_argument("--synthetic-dir", default="outputs/synthetic_refcoco")
    parser.add_argument("--synthetic-images", type=int, default=200)
    parser.add_argument("--dataset", default="refcoco", help="refcoco, refcoco+ or refcocog")
    parser.add_argument("--split-by", default=None, help="unc (default) / umd (refcocog)")
    parser.add_argument(
        "--splits", nargs="+", default=None, help="default: val testA testB (umd: val test)"
    )
    parser.add_argument("--model", default="tiny", help="build_lavt name, e.g. tiny, swin_base")
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's")
    parser.add_argument(
        "--bert-weights",
        default=None,
        help="text encoder's local Hugging Face checkpoint directory: bert-base-uncased, or "
        "sentence-transformers/all-MiniLM-L6-v2 for --model tiny (default there: the offline "
        "fallback package)",
    )
    parser.add_argument(
        "--mask-resize",
        default="pil",
        choices=("pil", "torch"),
        help="nearest rule for the model-size GT (pil = LAVT's protocol)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--max-batches", type=int, default=None, help="stop early (smoke runs)")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns ``{split: result}``."""

    args = build_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    rank, world, device = _setup_distributed()
    data_root = args.data_root
    if data_root is None:
        data_root = args.synthetic_dir
        marker = Path(data_root) / args.dataset / "instances.json"
        if rank == 0 and not marker.is_file():
            write_synthetic_refcoco(data_root, args.synthetic_images, seed=args.seed)
        if world > 1:
            torch.distributed.barrier()
    model = build_lavt(args.model, img_size=args.image_size, bert_weights=args.bert_weights)
    if args.checkpoint:
        report = load_lavt_checkpoint(model, args.checkpoint, key=args.checkpoint_key)
        if rank == 0:
            print(f"checkpoint {args.checkpoint}: {report}")
    model.to(device)
    image_size = model.spec.img_size
    split_by = args.split_by or DEFAULT_SPLIT_BY.get(args.dataset, "unc")
    splits = args.splits or [s for s in SPLITS[split_by] if s != "train"]
    results = {}
    tokenizer = build_tokenizer(args.bert_weights)  # the vocabulary of the text encoder's folder
    for split in splits:
        dataset = ReferDataset(
            data_root,
            args.dataset,
            split,
            split_by=split_by,
            image_size=image_size,
            sentences="all",
            with_orig_mask=True,
            transforms=[Resize(image_size, mask_rule=args.mask_resize)],
            tokenizer=tokenizer,
        )
        sampler = DistributedSampler(dataset, shuffle=False) if world > 1 else None
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            sampler=sampler,
            num_workers=args.workers,
            collate_fn=collate,
        )
        results[split] = evaluate(model, loader, device=device, max_batches=args.max_batches)
    if rank == 0:
        print(format_table(results, image_size))
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            payload = {"args": vars(args), "image_size": image_size, "results": results}
            with open(args.output, "w") as f:
                json.dump(_json_safe(payload), f, indent=2)
            print(f"wrote {args.output}")
    if world > 1:
        torch.distributed.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
