"""FixMatch-style semi-supervised semantic segmentation, with samrefine as a switch.

One run trains a small fully convolutional network (CPU-sized; swap in your own) from an
optional starting checkpoint, on a labelled split and, with ``--method fixmatch``, an
unlabelled split, FixMatch's recipe as UniMatch uses it:

* **shared weights**: the network itself, in eval mode and without gradient, labels the weak
  view (the resized image, randomly flipped) of each unlabelled image;
* the **strong view** is the same image with photometric noise (colour jitter, random
  greyscale, blur, pixel noise, cut-out), so targets and proposals stay aligned with it;
* ``--refine none``: pixels whose confidence ``max softmax >= --conf`` become cross-entropy
  targets, the rest are ignored (plain FixMatch);
* ``--refine iom`` / ``cpi-u``: the teacher's ``argmax`` is refined with the image's proposals
  (:func:`samrefine.semires_targets` -> :func:`samrefine.refine_semantic`, background class 0
  skipped) and the loss is :class:`samrefine.PWACELoss`. The confidence mask combines with
  refinement as the library defines it: a pixel of a **matched** region takes the refined
  label with weight 1 *whatever the teacher's confidence* (refinement is there to fix the
  uncertain boundary pixels the mask would drop); an **unmatched** pixel is ignored below
  ``--conf`` and otherwise weighted by PWA, ``Psi`` of the teacher's top-two probability.

Every run with the same ``--seed`` draws the same batches and views, so arms differ only in
their unlabelled loss. Run ``python examples/semantic_fixmatch/train.py --help``; with real
data::

    samrefine build voc_classical.srlib --images VOC2012/JPEGImages \\
        --ids VOC2012/ImageSets/Segmentation/train_aug.txt --file-pattern "{image_id}.jpg" \\
        --generator classical            # or --checkpoint sam_vit_h.pth for SAM
    python examples/semantic_fixmatch/train.py --dataset voc --data-root VOC2012 \\
        --labelled splits/pascal/1464/labeled.txt --unlabelled splits/pascal/1464/unlabeled.txt \\
        --val splits/pascal/val.txt --library voc_classical.srlib --refine cpi-u
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make ``examples.`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import samrefine as sr
from examples.semantic_fixmatch.data import (
    CITYSCAPES_CLASSES,
    IGNORE,
    VOC_CLASSES,
    Sample,
    SegmentationDataset,
    cityscapes_samples,
    read_image,
    read_label,
    voc_samples,
)
from samrefine.library import ProposalLibrary

__all__ = ["TrainConfig", "evaluate", "make_model", "strong_view", "train", "unlabelled_loss"]

REFINE = ("none", "iom", "cpi-u")


@dataclass
class TrainConfig:
    """Settings of one run (the command line's flags)."""

    num_classes: int
    method: str = "fixmatch"  # "supervised" or "fixmatch"
    refine: str = "none"  # "none", "iom" or "cpi-u" (fixmatch only)
    per: str = "component"  # refine_semantic's per: "class" or "component"
    size: int = 64
    iters: int = 300
    batch: int = 4
    batch_u: int = 8
    lr: float = 0.02
    conf: float = 0.95
    conf_on_matched: bool = False  # the confidence mask applies to refined pixels too
    lambda_u: float = 1.0
    width: int = 32
    seed: int = 0


def make_model(num_classes: int, width: int = 32) -> torch.nn.Module:
    """A small dilated FCN at full resolution: receptive field 47 px, ~40k parameters."""

    def block(i: int, o: int, d: int) -> list[torch.nn.Module]:
        return [
            torch.nn.Conv2d(i, o, 3, padding=d, dilation=d, bias=False),
            torch.nn.BatchNorm2d(o),
            torch.nn.ReLU(inplace=True),
        ]

    return torch.nn.Sequential(
        *block(3, width, 1),
        *block(width, width, 2),
        *block(width, width, 4),
        *block(width, width, 8),
        *block(width, width, 8),
        *block(width, width, 1),
        torch.nn.Conv2d(width, num_classes, 1),
    )


def strong_view(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Photometric strong view of (B, 3, H, W) images in [0, 1] (no geometry change)."""
    b = x.shape[0]

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * (0.5 + u(b, 1, 1, 1))  # saturation
    x = (x - 0.5) * (0.6 + 0.8 * u(b, 1, 1, 1)) + 0.5 + 0.3 * (u(b, 1, 1, 1) - 0.5)
    x = x * (1 + 0.3 * (u(b, 3, 1, 1) - 0.5))  # per-channel gain (hue-like)
    to_grey = u(b, 1, 1, 1) < 0.2
    x = torch.where(to_grey, x.mean(1, keepdim=True).expand_as(x), x)
    blur = u(b, 1, 1, 1) < 0.5
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None]).expand(3, 1, 3, 3)
    x = torch.where(blur, F.conv2d(F.pad(x, (1,) * 4, mode="replicate"), kernel, groups=3), x)
    x = x + 0.04 * torch.randn(x.shape, generator=g)
    h, w = x.shape[-2:]
    x = x.clone()
    for i in range(b):  # cut-out of a quarter-side square, grey
        cy = int(torch.randint(0, h - h // 4 + 1, (1,), generator=g))
        cx = int(torch.randint(0, w - w // 4 + 1, (1,), generator=g))
        x[i, :, cy : cy + h // 4, cx : cx + w // 4] = 0.5
    return x


def unlabelled_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    proposals: sr.ProposalBatch | None,
    cfg: TrainConfig,
    pwa_ce: sr.PWACELoss,
) -> tuple[torch.Tensor, dict[str, float]]:
    """FixMatch's unlabelled loss, plain (``refine="none"``) or refined (module notes)."""
    if cfg.refine == "none":
        conf, pseudo = teacher_logits.softmax(1).max(1)
        target = pseudo.masked_fill(conf < cfg.conf, IGNORE)
        loss = F.cross_entropy(student_logits, target, ignore_index=IGNORE)
        return loss, {"kept": float((target != IGNORE).float().mean())}
    if proposals is None:
        raise ValueError(f"refine={cfg.refine!r} needs proposals: pass --library")
    t = sr.semires_targets(
        teacher_logits,
        proposals,
        cfg.refine,
        per=cfg.per,
        skip_classes=(0,),  # background: refined only where objects claim it
        conf_thresh=cfg.conf,
        conf_on_matched=cfg.conf_on_matched,
    )
    stats = t.summary()
    stats["kept"] = 1.0 - stats["ignored_fraction"]
    return pwa_ce(student_logits, t), stats


def _batches(dataset: SegmentationDataset, batch: int, g: torch.Generator) -> Iterator[dict]:
    """Endless shuffled batches (drawn from ``g``, so every arm sees the same ones)."""
    collate = (
        sr.ProposalCollate(resize_mode="pil")  # items are already resized: this only batches
        if dataset.library is not None
        else torch.utils.data.default_collate
    )
    while True:
        order = torch.randperm(len(dataset), generator=g).tolist()
        if len(order) < batch:  # fewer images than a batch: repeat them
            order = (order * (batch // len(order) + 1))[:batch]
        for k in range(0, len(order) - batch + 1, batch):
            yield collate([dataset[i] for i in order[k : k + batch]])


def _flip(batch: dict, g: torch.Generator) -> dict:
    """Random horizontal flip of images, labels and proposals (the weak view's geometry)."""
    flip = (torch.rand(len(batch["image"]), generator=g) < 0.5).tolist()
    out = dict(batch)
    idx = [i for i, f in enumerate(flip) if f]
    out["image"] = batch["image"].clone()
    out["image"][idx] = batch["image"][idx].flip(-1)
    out["label"] = batch["label"].clone()
    out["label"][idx] = batch["label"][idx].flip(-1)
    if "proposals" in batch:
        props = list(batch["proposals"])
        out["proposals"] = sr.ProposalBatch(
            [p.hflip() if f else p for p, f in zip(props, flip, strict=True)]
        )
    return out


def train(
    cfg: TrainConfig,
    labelled: SegmentationDataset,
    unlabelled: SegmentationDataset | None = None,
    init: dict | None = None,
    log_every: int = 0,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train one run; returns the model and the mean unlabelled-target statistics.

    Parameters
    ----------
    cfg : TrainConfig
    labelled, unlabelled : SegmentationDataset
        ``unlabelled`` (with proposals when ``cfg.refine != "none"``) for ``fixmatch`` only.
    init : dict, optional
        A state dict to start from (e.g. a supervised burn-in).
    log_every : int
        Print the losses every this many iterations (0: never).
    """
    if cfg.method not in ("supervised", "fixmatch"):
        raise ValueError(f"method must be 'supervised' or 'fixmatch', got {cfg.method!r}")
    if cfg.refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {cfg.refine!r}")
    if cfg.method == "fixmatch" and unlabelled is None:
        raise ValueError("method='fixmatch' needs an unlabelled dataset")
    torch.manual_seed(cfg.seed)
    model = make_model(cfg.num_classes, cfg.width)
    if init is not None:
        model.load_state_dict(init)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / cfg.iters) ** 0.9)
    g = torch.Generator().manual_seed(cfg.seed)  # batches and views: identical in every arm
    gu = torch.Generator().manual_seed(cfg.seed + 1)
    lab_it = _batches(labelled, cfg.batch, g)
    unl_it = _batches(unlabelled, cfg.batch_u, gu) if unlabelled is not None else None
    pwa_ce = sr.PWACELoss()
    totals: dict[str, float] = {}
    model.train()
    for it in range(cfg.iters):
        bl = _flip(next(lab_it), g)
        loss = F.cross_entropy(model(bl["image"]), bl["label"], ignore_index=IGNORE)
        if cfg.method == "fixmatch" and unl_it is not None:
            bu = _flip(next(unl_it), gu)
            xs = strong_view(bu["image"], gu)
            with torch.no_grad():
                model.eval()
                t_logits = model(bu["image"])
                model.train()
            loss_u, stats = unlabelled_loss(model(xs), t_logits, bu.get("proposals"), cfg, pwa_ce)
            loss = loss + cfg.lambda_u * loss_u
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.iters
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (it + 1) % log_every == 0:
            print(f"  iter {it + 1}/{cfg.iters} loss {float(loss.detach()):.4f}", flush=True)
    model.eval()
    return model, totals


@torch.no_grad()
def predict(model: torch.nn.Module, image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) int64 class map of one (H, W, 3) uint8 image: the network at ``size x size``,
    logits resized back to (H, W) (bilinear)."""
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    logits = F.interpolate(model(x), size=image.shape[:2], mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].numpy()


def evaluate(
    model: torch.nn.Module, samples: list[Sample], num_classes: int, size: int
) -> dict[str, float | list[float]]:
    """mIoU at the labels' own resolution (confusion matrix over the split, 255 ignored);
    classes absent from both prediction and ground truth are left out of the mean."""
    model.eval()
    cm = np.zeros((num_classes, num_classes), np.int64)
    for s in samples:
        gt = read_label(s.label, num_classes).astype(np.int64)
        pred = predict(model, read_image(s.image), size)
        valid = gt != IGNORE
        cm += np.bincount(gt[valid] * num_classes + pred[valid], minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)), "iou": [float(v) for v in iou]}


def _samples(args: argparse.Namespace, split_file: str | None) -> list[Sample]:
    if split_file is None:
        return []
    if args.dataset == "voc":
        return voc_samples(args.data_root, split_file, label_dir=args.label_dir)
    return cityscapes_samples(args.data_root, split_file)


def main(argv: list[str] | None = None) -> dict:
    """Command line (``--help``); prints and returns the validation mIoU."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("voc", "cityscapes"), required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--labelled", required=True, help="split file of the labelled images")
    ap.add_argument("--unlabelled", help="split file of the unlabelled images (fixmatch)")
    ap.add_argument("--val", required=True, help="split file of the evaluation images")
    ap.add_argument("--label-dir", default="SegmentationClass", help="VOC key-only split files")
    ap.add_argument("--library", help="proposal library (samrefine build) of the unlabelled")
    ap.add_argument("--method", choices=("supervised", "fixmatch"), default="fixmatch")
    ap.add_argument("--refine", choices=REFINE, default="none")
    ap.add_argument("--per", choices=("class", "component"), default="component")
    ap.add_argument("--init", help="state dict (.pth) to start from")
    ap.add_argument("--save", help="write the final state dict here")
    for name, default in asdict(TrainConfig(num_classes=0)).items():
        if name in ("num_classes", "method", "refine", "per"):
            continue
        flag = f"--{name.replace('_', '-')}"
        if isinstance(default, bool):  # type=bool would read "False" as True
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            ap.add_argument(flag, type=type(default), default=default)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    num_classes = len(VOC_CLASSES if args.dataset == "voc" else CITYSCAPES_CLASSES)
    fields = {k: getattr(args, k) for k in asdict(TrainConfig(num_classes=0)) if k != "num_classes"}
    cfg = TrainConfig(num_classes=num_classes, **fields)
    library = ProposalLibrary.open(args.library) if args.library else None
    if cfg.refine != "none" and library is None:
        ap.error(f"--refine {cfg.refine} needs --library (build it with `samrefine build`)")
    labelled = SegmentationDataset(_samples(args, args.labelled), cfg.size, num_classes)
    unl = _samples(args, args.unlabelled)
    unlabelled = SegmentationDataset(unl, cfg.size, num_classes, library) if unl else None
    init = torch.load(args.init, map_location="cpu", weights_only=True) if args.init else None
    t0 = time.perf_counter()
    model, stats = train(cfg, labelled, unlabelled, init, log_every=max(cfg.iters // 10, 1))
    result = evaluate(model, _samples(args, args.val), num_classes, cfg.size)
    result.update(targets=stats, seconds=time.perf_counter() - t0)
    if args.save:
        torch.save(model.state_dict(), args.save)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
