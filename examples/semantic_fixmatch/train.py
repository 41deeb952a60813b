"""FixMatch-style semi-supervised semantic segmentation with and without samrefine, on a CPU.

A small worked example, readable in one sitting: a synthetic multi-class dataset (textured
backgrounds, 1-3 objects of 5 classes per image, written in memory), object-like mask
proposals per image, a tiny fully convolutional network, and three arms trained from the same
initialisation and the same batches:

* ``supervised``: the labelled images only;
* ``fixmatch``: + unlabelled images, FixMatch's recipe: the network itself (shared weights, no
  gradient) labels a weak view, pixels with confidence >= ``conf`` become targets for a strong
  view (colour jitter, noise, cut-out), plain cross-entropy;
* ``samrefine``: the same, with the teacher's argmax refined by :func:`samrefine.refine_semantic`
  (through :func:`samrefine.semires_targets`) and the loss :class:`samrefine.PWACELoss` (weight
  1 on refined pixels, PWA on the others, the confidence mask on unrefined pixels only).

It prints the validation mIoU of each arm per seed. Proposals here are *synthetic*: each object
with a jittered boundary (sometimes split in two), plus random blobs; not SAM output.

Run: ``python examples/semantic_fixmatch/train.py --seeds 0 1 2`` (about a minute per seed on
two cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

import samrefine as sr

N_CLASSES = 6  # background + 5 object classes
SIZE = 48
COLOURS = np.array(
    [
        [0.2, 0.2, 0.2],
        [0.9, 0.2, 0.2],
        [0.2, 0.8, 0.2],
        [0.2, 0.3, 0.9],
        [0.85, 0.8, 0.2],
        [0.7, 0.3, 0.8],
    ],
    np.float32,
)


def make_image(rng: np.random.Generator):
    """(3, H, W) float image, (H, W) class map, list of object masks."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = COLOURS[0][:, None, None] + 0.25 * rng.random((3, SIZE, SIZE), np.float32)
    img += 0.15 * np.sin(xx / rng.uniform(2, 6) + rng.uniform(0, 6))[None]  # texture
    lab = np.zeros((SIZE, SIZE), np.int64)
    objects = []
    for _ in range(rng.integers(1, 4)):
        c = rng.integers(1, N_CLASSES)
        cy, cx = rng.uniform(8, SIZE - 8, 2)
        ry, rx = rng.uniform(4, 12, 2)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if rng.random() < 0.5:  # some rectangles
            m = (abs(yy - cy) <= ry * 0.8) & (abs(xx - cx) <= rx * 0.8)
        shade = COLOURS[c] * rng.uniform(0.7, 1.1)
        img[:, m] = shade[:, None] + 0.2 * rng.standard_normal((3, int(m.sum())))
        lab[m] = c
        for o in objects:
            o &= ~m
        objects.append(m)
    return np.clip(img, 0, 1), lab, [o for o in objects if o.any()]


def make_proposals(objects, rng: np.random.Generator) -> sr.Proposals:
    """Object-like masks: each object with a jittered boundary (sometimes split), plus blobs."""
    masks = []
    for m in objects:
        j = ndimage.binary_dilation(m) if rng.random() < 0.5 else ndimage.binary_erosion(m)
        masks.append(j if j.any() else m)
        if rng.random() < 0.3:  # a split into two halves as well
            ys, xs = np.nonzero(m)
            cut = np.median(xs)
            masks += [m & (np.arange(SIZE)[None] < cut), m & (np.arange(SIZE)[None] >= cut)]
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for _ in range(8):
        cy, cx, r = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(3, 14)
        masks.append((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
    masks = [m for m in masks if m.any()]
    return sr.Proposals.from_dense(np.stack(masks))


def make_split(n: int, rng: np.random.Generator):
    imgs, labs, props = [], [], []
    for _ in range(n):
        img, lab, objects = make_image(rng)
        imgs.append(img)
        labs.append(lab)
        props.append(make_proposals(objects, rng))
    return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(labs)), props


def make_model() -> torch.nn.Module:
    def block(i, o, d):
        return [
            torch.nn.Conv2d(i, o, 3, padding=d, dilation=d),
            torch.nn.BatchNorm2d(o),
            torch.nn.ReLU(),
        ]

    return torch.nn.Sequential(
        *block(3, 32, 1),
        *block(32, 32, 2),
        *block(32, 32, 4),
        *block(32, 32, 1),
        torch.nn.Conv2d(32, N_CLASSES, 1),
    )


def strong(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Photometric strong view (geometry unchanged, so targets and proposals stay aligned)."""
    b = x.shape[0]
    gain = 1 + 0.4 * (torch.rand(b, 3, 1, 1, generator=g) - 0.5)
    x = x * gain + 0.2 * (torch.rand(b, 1, 1, 1, generator=g) - 0.5)
    x = x + 0.08 * torch.randn(x.shape, generator=g)
    cy, cx = torch.randint(0, SIZE - 12, (2,), generator=g).tolist()
    x = x.clone()
    x[:, :, cy : cy + 12, cx : cx + 12] = 0.5  # cut-out
    return x


def miou(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1)
    model.train()
    ious = []
    for c in range(N_CLASSES):
        u = ((pred == c) | (y == c)).sum().item()
        if u:
            ious.append(((pred == c) & (y == c)).sum().item() / u)
    return float(np.mean(ious))


def train(arm: str, seed: int, data, args) -> float:
    (xl, yl, _), (xu, _, pu), (xv, yv, _) = data
    torch.manual_seed(seed)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)  # same batches and views in every arm
    pwa_ce = sr.PWACELoss()
    for it in range(args.iters):
        il = torch.randint(0, len(xl), (args.batch,), generator=g)
        iu = torch.randint(0, len(xu), (args.batch,), generator=g)
        loss = F.cross_entropy(model(xl[il]), yl[il])
        xs = strong(xu[iu], g)
        if arm != "supervised" and it >= args.warmup:
            with torch.no_grad():
                model.eval()
                t_logits = model(xu[iu])
                model.train()
            s_logits = model(xs)
            if arm == "fixmatch":
                prob = t_logits.softmax(1)
                conf, pseudo = prob.max(1)
                pseudo = pseudo.masked_fill(conf < args.conf, 255)
                loss_u = F.cross_entropy(s_logits, pseudo, ignore_index=255)
            else:
                t = sr.semires_targets(
                    t_logits,
                    sr.ProposalBatch([pu[i] for i in iu.tolist()]),
                    args.strategy,
                    skip_classes=(0,),
                    conf_thresh=args.conf,
                )
                loss_u = pwa_ce(s_logits, t)
            loss = loss + args.lambda_u * loss_u
        opt.zero_grad()
        loss.backward()
        opt.step()
    return miou(model, xv, yv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--labelled", type=int, default=12)
    ap.add_argument("--unlabelled", type=int, default=300)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--conf", type=float, default=0.95)
    ap.add_argument("--lambda-u", type=float, default=1.0)
    ap.add_argument("--strategy", default="iom", choices=["iom", "cpi", "cpi-u", "cpi-o"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(1000 + seed)
        data = (
            make_split(args.labelled, rng),
            make_split(args.unlabelled, rng),
            make_split(args.val, rng),
        )
        t0 = time.perf_counter()
        res = {arm: train(arm, seed, data, args) for arm in ("supervised", "fixmatch", "samrefine")}
        rows.append(res)
        print(
            f"seed {seed}: "
            + "  ".join(f"{k} {v:.4f}" for k, v in res.items())
            + f"  ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    std = {k: float(np.std([r[k] for r in rows])) for k in rows[0]}
    print("mean mIoU: " + "  ".join(f"{k} {mean[k]:.4f} (sd {std[k]:.4f})" for k in mean))


if __name__ == "__main__":
    main()
