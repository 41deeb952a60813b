"""Training pieces against the SemiRES reference code's way of doing them.

1. EMA update of a Swin-B-sized model (~90 M floats): ``EMATeacher.update`` (fused
   ``torch._foreach_lerp_`` / ``_foreach_copy_``) against the reference's loop, which rebuilds
   the state dict ``{k: keep * t[k] + (1 - keep) * s[k]}`` and calls ``load_state_dict``.
2. The unsupervised loss on LAVT-shaped logits ``(B, 2, 480, 480)``: ``PWABCELoss`` (group-mean
   rule, class weights 0.9/1.1) against the reference style: teacher probability copied to
   numpy, PWA weight in numpy, separate ``F.cross_entropy`` calls on the matched and unmatched
   groups (boolean indexing), averaged. Forward, and forward + backward.

Every row is timed in this one run, on one device, reference and samrefine alternating call by
call; the table prints medians (ms) and the speed-up of samrefine over the reference row
(> 1 = faster). The script also prints how far apart the two versions' results are.

Usage::

    python benchmarks/bench_train_pieces.py                    # CPU, ~90 M parameters
    python benchmarks/bench_train_pieces.py --device cuda
    python benchmarks/bench_train_pieces.py --model swin       # timm swin_base, random init
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samrefine import EMATeacher, PWABCELoss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit_pair(
    ref: Callable[[], object], ours: Callable[[], object], device: torch.device, reps: int
) -> tuple[float, float]:
    """Median wall times (ms) of ``ref`` and ``ours``, run alternately after one warm-up each.

    Alternating the two keeps a shared, noisy machine's load changes out of the ratio.
    """
    times: tuple[list[float], list[float]] = ([], [])
    for fn in (ref, ours):
        fn()
    _sync(device)
    for _ in range(reps):
        for fn, acc in zip((ref, ours), times, strict=True):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            acc.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


# ------------------------------------------------------------------------------------ EMA


def build_model(kind: str, millions: float) -> nn.Module:
    if kind == "swin":
        import timm

        return timm.create_model(
            "swin_base_patch4_window12_384", pretrained=False, num_classes=0, img_size=480
        )
    width = 2048
    n_layers = max(1, round(millions * 1e6 / (width * width + width)))
    layers: list[nn.Module] = []
    for _ in range(n_layers):
        layers += [nn.Linear(width, width), nn.LayerNorm(width)]
    model = nn.Sequential(*layers)
    model.register_buffer("relative_position_index", torch.arange(529).view(23, 23))
    return model


def reference_ema(teacher: nn.Module, student: nn.Module, keep: float) -> None:
    """SemiRES ``EMA_update``: average every state_dict entry, then load it back."""
    t, s = teacher.state_dict(), student.state_dict()
    teacher.load_state_dict({k: keep * t[k] + (1 - keep) * s[k] for k in t})


def bench_ema(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str, float]]:
    torch.manual_seed(0)
    student = build_model(args.model, args.params).to(device)
    n_float = sum(p.numel() for p in student.parameters())
    n_float += sum(b.numel() for b in student.buffers() if b.is_floating_point())
    ref_teacher = build_model(args.model, args.params).to(device).eval()
    ref_teacher.load_state_dict(student.state_dict())
    ours = EMATeacher(student, decay=0.9996)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 1e-2)

    with torch.no_grad():
        t_ref, t_ours = timeit_pair(
            lambda: reference_ema(ref_teacher, student, 0.9996),
            lambda: ours.update(student),
            device,
            args.reps,
        )
    # Same number of updates on both sides (warm-up + reps), so the weights should agree.
    diff = max(
        (a.float() - b.float()).abs().max().item()
        for a, b in zip(
            ours.module.state_dict().values(), ref_teacher.state_dict().values(), strict=True
        )
        if a.is_floating_point()
    )
    print(f"EMA: {n_float / 1e6:.1f} M floats ({args.model}); max |ours - reference| = {diff:.2e}")
    label = f"EMA update, {n_float / 1e6:.0f} M floats"
    return [
        (label, "reference: state_dict rebuild + load", t_ref),
        (label, "samrefine EMATeacher.update (foreach)", t_ours),
    ]


# ----------------------------------------------------------------------------------- loss


def reference_weight(prob: torch.Tensor) -> torch.Tensor:
    """SemiRES ``bce_weight``: numpy on the host, every step."""
    p = prob.detach().cpu().numpy()
    w = 1.3 - np.exp(-((p - 0.5) ** 2) / (2 * 0.1)) / (math.sqrt(2 * math.pi) * math.sqrt(0.1))
    return torch.from_numpy(w).to(prob.device)


def reference_loss(
    logits: torch.Tensor, target: torch.Tensor, prob: torch.Tensor, matched: torch.Tensor
) -> torch.Tensor:
    """SemiRES train_semi_CPI.py: CE with class weights on matched, PWA-weighted CE on the rest."""
    cw = torch.tensor([0.9, 1.1], device=logits.device)
    weight = reference_weight(prob)
    unmatched = ~matched
    losses = []
    if matched.any():
        losses.append(
            F.cross_entropy(logits[matched], target[matched], weight=cw, reduction="none").mean()
        )
    if unmatched.any():
        ce = F.cross_entropy(logits[unmatched], target[unmatched], reduction="none")
        losses.append((ce * weight[unmatched]).mean())
    return sum(losses) / len(losses)


def bench_loss(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str, float]]:
    g = torch.Generator().manual_seed(0)
    b, s = args.batch, args.size
    logits = (torch.randn(b, 2, s, s, generator=g) * 3).to(device).requires_grad_()
    target = torch.randint(0, 2, (b, s, s), generator=g).to(device)
    prob = torch.rand(b, s, s, generator=g).to(device)
    matched = (torch.arange(b) % 2 == 0).to(device)
    ours = PWABCELoss(class_weight=(0.9, 1.1), reduction="group-mean", validate=False)

    diff = ours(logits, target, prob, matched) - reference_loss(logits, target, prob, matched)
    print(f"loss: logits {tuple(logits.shape)}; |ours - reference| = {abs(diff.item()):.2e}")

    def fwd_bwd(fn: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            logits.grad = None
            fn(logits, target, prob, matched).backward()

        return run

    label_f = f"loss forward, {b}x2x{s}x{s}"
    label_b = f"loss fwd+bwd, {b}x2x{s}x{s}"
    reps = 3 * args.reps  # cheap next to the EMA rows
    with torch.no_grad():
        f_ref, f_ours = timeit_pair(
            lambda: reference_loss(logits, target, prob, matched),
            lambda: ours(logits, target, prob, matched),
            device,
            reps,
        )
    b_ref, b_ours = timeit_pair(fwd_bwd(reference_loss), fwd_bwd(ours), device, reps)
    ref_name, our_name = "reference: numpy PWA + 2 CE calls", "samrefine PWABCELoss"
    rows = [
        (label_f, ref_name, f_ref),
        (label_f, our_name, f_ours),
        (label_b, ref_name, b_ref),
        (label_b, our_name, b_ours),
    ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", choices=["linear", "swin"], default="linear")
    parser.add_argument("--params", type=float, default=90.0, help="millions (linear model)")
    parser.add_argument("--batch", type=int, default=6, help="3 matched-ish + 3 others")
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    device = torch.device(args.device)

    rows = bench_ema(args, device) + bench_loss(args, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"\ndevice: {name}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
        f"medians of {args.reps} (EMA) / {3 * args.reps} (loss) alternating calls"
    )
    print(f"{'piece':<30} {'variant':<40} {'median ms':>10} {'speed-up':>9}")
    base: dict[str, float] = {}
    for piece, variant, ms in rows:
        base.setdefault(piece, ms)
        print(f"{piece:<30} {variant:<40} {ms:>10.2f} {base[piece] / ms:>8.2f}x")


if __name__ == "__main__":
    main()
