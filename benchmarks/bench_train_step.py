"""One SemiRES training step of the worked example, and the share of it spent in refinement.

Builds the tiny LAVT of ``examples/semires_lavt`` on a small synthetic RefCOCO with a classical
proposal library, then times, on one fixed labelled + unlabelled batch:

* ``step``: a full mutual-learning step (student forward on labelled + strong views, teacher
  forward on weak views, refinement, loss, backward, AdamW step, EMA update);
* ``refine``: ``samrefine.semires_targets`` alone on the same teacher output (matching,
  targets, PWA weights, statistics).

Prints medians (ms) per strategy and ``refine / step``. Timing only; nothing is asserted.

Usage::

    python benchmarks/bench_train_step.py                      # 64 px, batch 4 + 4, 2 threads
    python benchmarks/bench_train_step.py --size 96 --batch 8 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    """Run the benchmark and print a table."""
    import samrefine
    from examples.semires_lavt.config import build_config
    from examples.semires_lavt.data import ReferDataset, collate, load_refer
    from examples.semires_lavt.data.refer import IMAGE_DIR
    from examples.semires_lavt.data.synthetic import write_synthetic_refcoco
    from examples.semires_lavt.lavt import build_lavt
    from examples.semires_lavt.optim import build_optimizer
    from examples.semires_lavt.semires_step import SemiRESSettings, semi_step
    from samrefine.library import ProposalLibrary, build_library, get_generator

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="model input (pixels)")
    parser.add_argument("--batch", type=int, default=4, help="labelled = unlabelled batch")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(tempfile.mkdtemp(prefix="bench_train_step_"))
    write_synthetic_refcoco(root, n_images=24, seed=0, size_range=(96, 160), progress=False)
    ids = load_refer(root).train_image_ids()
    library = build_library(
        root / "lib.srlib", ids, get_generator("classical"), images=root / IMAGE_DIR, progress=False
    ).path
    labelled = ReferDataset(root, split="train", image_size=args.size)
    unlabelled = ReferDataset(
        root,
        split="train",
        image_size=args.size,
        proposals=ProposalLibrary.open(library),
        views=("weak", "strong"),
    )
    n = args.batch
    lab = collate([labelled[i] for i in range(n)])
    unl = collate([unlabelled[i] for i in range(n, 2 * n)])
    n_props = int(unl["proposals"].host_mask_offsets[-1])

    rows = []
    for strategy in ("none", "iom", "cpi-u", "cpi"):
        cfg = build_config(
            [
                {
                    "model": "tiny",
                    "image_size": args.size,
                    "strategy": strategy,
                    "under": 0.7,
                    "over": 0.7 if strategy == "cpi" else None,
                }
            ]
        )
        torch.manual_seed(0)
        student = build_lavt("tiny", img_size=args.size, verbose=False)
        teacher = samrefine.EMATeacher(student, decay=0.99)
        optimizer = build_optimizer(student, 1e-4, 1e-2)
        criterion = samrefine.PWABCELoss()

        def step(
            student=student, teacher=teacher, optimizer=optimizer, cfg=cfg, criterion=criterion
        ):
            loss, _ = semi_step(
                student,
                teacher.module,
                lab,
                unl,
                criterion,
                SemiRESSettings.from_config(cfg),
                torch.device("cpu"),
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            teacher.update(student)

        with torch.no_grad():
            logits = teacher.module(unl["image_weak"], unl["input_ids"], unl["attention_mask"])
        kwargs = (
            {}
            if strategy == "none"
            else (
                {"iom_thresh": 0.5} if strategy == "iom" else {"under": cfg.under, "over": cfg.over}
            )
        )
        proposals = (
            unl["proposals"]
            if strategy != "none"
            else samrefine.ProposalBatch([samrefine.Proposals.empty((args.size, args.size))] * n)
        )

        def refine(logits=logits, proposals=proposals, strategy=strategy, kwargs=kwargs):
            samrefine.semires_targets(logits, proposals, strategy, validate=False, **kwargs)

        step_ms = _median_ms(step, args.repeats)
        refine_ms = _median_ms(refine, args.repeats)
        rows.append((strategy, step_ms, refine_ms))

    print(
        f"tiny LAVT, {args.size} px, batch {n} labelled + {n} unlabelled, "
        f"{args.threads} threads, {args.repeats} repeats (medians)"
        f", {n_props} proposals in the batch"
    )
    print(f"{'strategy':<10} {'step ms':>9} {'refine ms':>10} {'refine/step':>12}")
    for strategy, step_ms, refine_ms in rows:
        print(f"{strategy:<10} {step_ms:9.1f} {refine_ms:10.2f} {refine_ms / step_ms:11.1%}")


if __name__ == "__main__":
    main()
