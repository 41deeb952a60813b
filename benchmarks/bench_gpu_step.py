"""One SemiRES training step of the worked example's LAVT at Swin-B size, in bf16, on CUDA.

The model is ``examples/semires_lavt``'s ``build_lavt("swin_base", img_size=480)`` (Swin-B,
BERT-base text encoder; random weights: no checkpoint is needed or downloaded). The step is the
paper's mutual-learning step written with samrefine's public pieces, in the order the example's
trainer runs them: teacher forward on the weak views, ``semires_targets`` (CPI-U matching on the
GPU, PWA weights), student forward on labelled + strong views, ``PWABCELoss`` on both,
backward, AdamW step, ``EMATeacher.update``. Forward passes run under
``torch.autocast("cuda", torch.bfloat16)``.

Proposals are classical superpixel regions of a real photograph (``skimage.data``, ~300 per
image, resized to 480x480), the same for every unlabelled image of the batch.

Prints the device, medians (ms) of the whole step and of ``semires_targets`` alone, their
ratio, and the peak GPU memory. Timing only; nothing is asserted.

Usage::

    python benchmarks/bench_gpu_step.py                  # batch 8 labelled + 8 unlabelled
    python benchmarks/bench_gpu_step.py --batch 4 --repeats 5
    python benchmarks/bench_gpu_step.py --device cpu --model tiny --size 128 --batch 2  # smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import samrefine as sr  # noqa: E402
from examples.semires_lavt.lavt import build_lavt  # noqa: E402
from samrefine.demo import photo  # noqa: E402
from samrefine.library.classical import classical_proposals  # noqa: E402

TOKENS = 20
VOCAB = 30522  # bert-base-uncased


def median_ms(fn: Callable[[], object], repeats: int, dev: torch.device, warm: int = 2) -> float:
    """Median wall time of ``fn`` in ms, synchronising a GPU around each call."""

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(warm):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="labelled = unlabelled batch")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--model", default="swin_base", help="a build_lavt name")
    parser.add_argument("--size", type=int, default=480, help="input pixels")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu_step.py needs a CUDA device (or --device cpu for a smoke run)")
    size = args.size
    n = args.batch
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    t0 = time.perf_counter()
    student = build_lavt(args.model, img_size=size, verbose=False).to(dev)
    teacher = sr.EMATeacher(student, decay=0.996)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5, weight_decay=1e-2, fused=dev.type == "cuda")
    criterion = sr.PWABCELoss(validate=False)
    build_s = time.perf_counter() - t0

    props = classical_proposals(photo("coffee"), max_masks=300).resize((size, size))
    proposals = sr.ProposalBatch([props] * n).to(dev)
    g = torch.Generator(device=dev).manual_seed(0)
    image_lab = torch.randn(n, 3, size, size, device=dev, generator=g)
    image_weak = torch.randn(n, 3, size, size, device=dev, generator=g)
    image_strong = image_weak + 0.1 * torch.randn(n, 3, size, size, device=dev, generator=g)
    ids = torch.randint(1000, VOCAB, (2 * n, TOKENS), device=dev, generator=g)
    mask = torch.ones_like(ids)
    gt = torch.from_numpy(
        np.stack([props[np.array([k % len(props)])].to_dense()[0] for k in range(n)])
    ).to(dev)

    def targets() -> sr.SemiRESTargets:
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            teacher_logits = teacher.module(image_weak, ids[n:], mask[n:])
        return sr.semires_targets(teacher_logits.float(), proposals, "cpi-u", validate=False)

    def step() -> None:
        t = targets()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            logits = student(torch.cat([image_lab, image_strong]), ids, mask)
        logits = logits.float()
        loss = criterion(logits[:n], gt) + criterion(logits[n:], t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        teacher.update(student)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    step_ms = median_ms(step, args.repeats, dev)
    refine_ms = median_ms(targets, args.repeats, dev)
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
        teacher_logits = teacher.module(image_weak, ids[n:], mask[n:]).float()
    match_ms = median_ms(
        lambda: sr.semires_targets(teacher_logits, proposals, "cpi-u", validate=False),
        args.repeats,
        dev,
    )
    peak = (
        f"{torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB"
        if dev.type == "cuda"
        else "n/a on the CPU"
    )
    n_params = sum(p.numel() for p in student.parameters()) / 1e6

    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(
        f"device: {name}, torch {torch.__version__}; LAVT "
        f"{args.model} ({n_params:.0f} M parameters, built in {build_s:.1f} s), {size} px, "
        f"bf16 autocast, batch {n} labelled + {n} unlabelled, {len(props)} proposals per "
        f"image, medians of {args.repeats}"
    )
    print(f"{'piece':<66} {'median ms':>10}")
    print(
        f"{'SemiRES step (teacher fwd, targets, student fwd+bwd, AdamW, EMA)':<66} {step_ms:>10.1f}"
    )
    print(f"{'teacher forward + semires_targets':<66} {refine_ms:>10.1f}")
    print(f"{'semires_targets alone (matching, PWA, stats)':<66} {match_ms:>10.2f}")
    print(f"semires_targets / step: {match_ms / step_ms:.1%}; peak GPU memory {peak}")


if __name__ == "__main__":
    main()
