"""Every CUDA test and GPU benchmark in one run, summarised in one table (see gpu_check.sh).

Runs, each in its own process with a time limit, printing its full output as it goes:

1. ``pytest -m cuda``: every test marked ``cuda`` (matching, loss, PWA, EMA, targets);
2. ``bench_match.py --cuda-only``: matching a batch of 16 at 480x480 on CUDA, per strategy,
   checked bit for bit against numba;
3. ``bench_train_pieces.py --device cuda --model swin``: the EMA update of a Swin-B and the
   loss on (6, 2, 480, 480) logits, against the reference code's way;
4. ``bench_gpu_step.py``: one SemiRES training step of the example's LAVT at Swin-B size in
   bf16.

Then prints one table naming the device: each check's status, seconds and headline numbers.
Exit status 0 when every check passed, 1 otherwise. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: (name, command, time limit in seconds, headline extractor)
CHECKS: list[tuple[str, list[str], int, str]] = [
    (
        "CUDA tests (pytest -m cuda)",
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "cuda",
            "-rs",
            "tests",
        ],
        120,
        "pytest",
    ),
    (
        "matching, batch of 16, 480x480",
        [sys.executable, "benchmarks/bench_match.py", "--cuda-only"],
        75,
        "match",
    ),
    (
        "EMA (Swin-B) and loss (6x2x480x480)",
        [sys.executable, "benchmarks/bench_train_pieces.py", "--device", "cuda", "--model", "swin"],
        90,
        "pieces",
    ),
    (
        "SemiRES step, LAVT Swin-B 480 px, bf16, 8+8",
        [sys.executable, "benchmarks/bench_gpu_step.py"],
        150,
        "step",
    ),
]


def headline(kind: str, out: str) -> str:
    """The numbers worth a line in the summary, from a check's output."""
    if kind == "pytest":
        m = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?) in [\d.]+s", out, re.M)
        return m[-1] if m else "no pytest summary"
    if kind == "match":
        rows = re.findall(r"^\s+(\S+)\s+([\d.]+) ms\s+bit-identical to numba: (\w+)", out, re.M)
        same = all(r[2] == "True" for r in rows) and bool(rows)
        ms = ", ".join(f"{s} {float(t):.3f}" for s, t, _ in rows)
        return f"ms per batch: {ms}; bit-identical to numba: {same}"
    if kind == "pieces":
        rows = re.findall(r"^(\S.*?)\s{2,}samrefine .*?\s([\d.]+)\s+([\d.]+)x$", out, re.M)
        return "; ".join(f"{p.strip()} {float(t):.2f} ms ({x}x ref)" for p, t, x in rows)
    if kind == "step":
        step = re.search(r"^SemiRES step .*?([\d.]+)$", out, re.M)
        share = re.search(r"semires_targets / step: ([\d.]+%); peak GPU memory (.*)$", out, re.M)
        if step and share:
            return (
                f"step {float(step.group(1)):.1f} ms; semires_targets {share.group(1)} of "
                f"it; peak {share.group(2)}"
            )
        return "no result"
    return ""


def main() -> int:
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to "
            "run. Run this on a machine with a GPU."
        )
        return 0
    device = (
        f"{torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible), "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        ),
    )
    results = []
    start_all = time.perf_counter()
    for name, cmd, limit, kind in CHECKS:
        print(f"\n===== {name}: {' '.join(cmd[1:])} (limit {limit} s)", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit
            )
            out, status = (
                proc.stdout + proc.stderr,
                "ok" if proc.returncode == 0 else (f"FAILED (exit {proc.returncode})"),
            )
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            status = f"TIMEOUT ({limit} s)"
        seconds = time.perf_counter() - t0
        print(out, flush=True)
        results.append((name, status, seconds, headline(kind, out)))

    total = time.perf_counter() - start_all
    print(f"\n===== gpu_check summary: {device}; {total:.0f} s in all")
    print(f"{'check':<46} {'status':<20} {'s':>5}  result")
    for name, status, seconds, line in results:
        print(f"{name:<46} {status:<20} {seconds:>5.0f}  {line}")
    return 0 if all(r[1] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
