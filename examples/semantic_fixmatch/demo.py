"""The CPU demo: supervised-only vs FixMatch vs FixMatch + samrefine on synthetic VOC-layout data.

``python examples/semantic_fixmatch/demo.py [--seed S]`` runs, for one seed:

1. **data**: :func:`.synthetic.write_synthetic_voc` writes 12 labelled, 160 unlabelled and 60
   held-out images (5 object classes + background) in the Pascal VOC layout, with UniMatch
   split files; the seed draws the scenes;
2. **proposals**: ``samrefine build`` (the command line, run in-process) builds a library of
   the unlabelled images with the classical generator (a watershed + contrast hierarchy: not
   SAM, no weights), keyed by the images' string names (``"000012"``);
3. **burn-in**: the supervised-only model, trained on the labelled images;
4. **audit**: the burn-in model labels the unlabelled images; :func:`samrefine.audit_semantic`
   compares its pseudo-labels, refined with each strategy, to the ground truth (never used
   for training), and the accuracy of the pixels each arm trains on is measured;
5. **arms**, from the burn-in weights, with the same seed, steps, batches and views:
   supervised only, FixMatch, and FixMatch + samrefine with IOM and with CPI-U (PWA loss),
   each in its own single-threaded process (same results as one after another);
6. the table: mIoU of each model on the held-out split, and the audit.

Written under ``--out`` (default ``outputs/semantic_fixmatch_demo``): the data, the library and
``seed<S>/summary.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``examples.`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
if __name__ == "__main__":  # single-threaded processes side by side (the arms inherit it);
    # not on import: numba refuses a changed NUMBA_NUM_THREADS once its threads run
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import torch

import samrefine as sr
from examples.semantic_fixmatch.data import IGNORE, SegmentationDataset, voc_samples
from examples.semantic_fixmatch.synthetic import CLASSES, write_synthetic_voc
from examples.semantic_fixmatch.train import TrainConfig, evaluate, train
from samrefine.cli import main as samrefine_cli
from samrefine.library import ProposalLibrary

__all__ = ["ARMS", "audit_teacher", "main", "run_demo"]

#: Fixed before any result was seen: the data sizes, the schedule and the arms.
N_LABELLED, N_UNLABELLED, N_VAL = 12, 160, 60
BURNIN_ITERS, ARM_ITERS = 400, 300
#: name -> (method, refine)
ARMS = {
    "supervised only": ("supervised", "none"),
    "FixMatch": ("fixmatch", "none"),
    "FixMatch + samrefine IOM": ("fixmatch", "iom"),
    "FixMatch + samrefine CPI-U": ("fixmatch", "cpi-u"),
}


def _datasets(root: Path, library: Path | None, size: int):
    lib = ProposalLibrary.open(library) if library is not None else None
    n = len(CLASSES)
    labelled = SegmentationDataset(voc_samples(root, root / "splits" / "labeled.txt"), size, n)
    unlabelled = SegmentationDataset(
        voc_samples(root, root / "splits" / "unlabeled.txt"), size, n, lib
    )
    return labelled, unlabelled, voc_samples(root, root / "splits" / "val.txt")


def _run_arm(cfg: TrainConfig, root: str, library: str, init_path: str) -> dict:
    """One arm in a worker process: train from the burn-in, evaluate on the held-out split."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    labelled, unlabelled, val = _datasets(Path(root), Path(library), cfg.size)
    init = torch.load(init_path, map_location="cpu", weights_only=True)
    model, stats = train(cfg, labelled, unlabelled if cfg.method == "fixmatch" else None, init)
    out = evaluate(model, val, cfg.num_classes, cfg.size)
    return {**out, "targets": stats, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def audit_teacher(
    model: torch.nn.Module, unlabelled: SegmentationDataset, cfg: TrainConfig, strategies
) -> dict:
    """What each arm would train on at the start: the burn-in model's pseudo-labels of the
    unlabelled images, refined or confidence-masked, against the ground truth.

    Returns ``audit`` (:func:`samrefine.audit_semantic`'s report, as a dict) and, per arm,
    ``kept`` (share of pixels with a target), ``accuracy`` (share of those that are right) and
    ``wrong_on_objects`` (share of the wrong ones whose true class is an object, not the
    background: a wrong class rather than a wrong extent), plus ``matched_kept`` and
    ``matched_accuracy`` for the refined arms (the pixels refinement labelled).
    """
    model.eval()
    items = [unlabelled[i] for i in range(len(unlabelled))]
    logits = torch.cat(
        [
            model(torch.stack([it["image"] for it in items[k : k + 32]]))
            for k in range(0, len(items), 32)
        ]
    )
    gt = torch.stack([it["label"] for it in items])
    proposals = [it["proposals"] for it in items]
    props = sr.ProposalBatch(proposals)
    pseudo = logits.argmax(1)
    report = sr.audit_semantic(
        pseudo.numpy(),
        proposals,
        gt.numpy(),
        num_classes=cfg.num_classes,
        strategies=strategies,
        per=cfg.per,
        skip_classes=(0,),
    )
    valid = gt != IGNORE

    def rate(target: torch.Tensor, where: torch.Tensor | None = None) -> dict:
        has = (target != IGNORE) & valid
        if where is not None:
            has &= where
        right = (has & (target == gt)).sum()
        wrong = has & (target != gt)
        return {
            "kept": float(has.sum() / valid.sum()),
            "accuracy": float(right / has.sum()),
            "wrong_on_objects": float((wrong & (gt > 0)).sum() / wrong.sum().clamp_min(1)),
        }

    conf = logits.softmax(1).amax(1)
    rows = {"FixMatch": rate(pseudo.masked_fill(conf < cfg.conf, IGNORE))}
    for s in strategies:
        t = sr.semires_targets(
            logits,
            props,
            s,
            per=cfg.per,
            skip_classes=(0,),
            conf_thresh=cfg.conf,
            conf_on_matched=cfg.conf_on_matched,
        )
        matched = rate(t.target, t.matched)
        rows[f"samrefine {s}"] = {
            **rate(t.target),
            "matched_accuracy": matched["accuracy"],
            "matched_kept": matched["kept"],
        }
    return {"audit": report.to_dict(), "table": report.table(), "targets": rows}


def run_demo(
    seed: int = 0,
    out: str | Path = "outputs/semantic_fixmatch_demo",
    workers=None,
    conf_on_matched: bool = False,
):
    """Run every step (module notes) for one seed; returns the summary dict.
    ``conf_on_matched``: the refined arms mask refined pixels by confidence too
    (:func:`samrefine.semantic_targets`); results go to ``seed<S>-conf-on-matched``."""
    start = time.perf_counter()
    out = Path(out)
    root = out / f"data_seed{seed}"
    run_dir = out / (f"seed{seed}" + ("-conf-on-matched" if conf_on_matched else ""))
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = write_synthetic_voc(
        root, n_labelled=N_LABELLED, n_unlabelled=N_UNLABELLED, n_val=N_VAL, seed=seed
    )
    library = root / "classical.srlib"
    cmd = [
        "build", str(library), "--images", str(root / "JPEGImages"),
        "--ids", str(root / "ImageSets" / "Segmentation" / "unlabeled.txt"),
        "--file-pattern", "{image_id}.jpg", "--generator", "classical", "--no-progress",
    ]  # fmt: skip
    print("samrefine " + " ".join(cmd), flush=True)
    if samrefine_cli(cmd) != 0:
        raise RuntimeError("samrefine build failed (see above)")
    t_data = time.perf_counter() - start

    torch.set_num_threads(1)
    cfg = TrainConfig(
        num_classes=len(CLASSES), seed=seed, iters=BURNIN_ITERS, conf_on_matched=conf_on_matched
    )
    labelled, unlabelled, val = _datasets(root, library, cfg.size)
    burnin, _ = train(replace(cfg, method="supervised"), labelled)
    init_path = run_dir / "burnin.pth"
    torch.save(burnin.state_dict(), init_path)
    results = {"supervised only (burn-in)": evaluate(burnin, val, cfg.num_classes, cfg.size)}
    strategies = [r for m, r in ARMS.values() if r != "none"]
    audit = audit_teacher(burnin, unlabelled, cfg, strategies)
    t_burnin = time.perf_counter() - start - t_data

    configs = {
        name: replace(cfg, method=m, refine=r, iters=ARM_ITERS) for name, (m, r) in ARMS.items()
    }
    n_proc = workers or min(len(ARMS), max(os.cpu_count() or 1, 1))
    args = (str(root), str(library), str(init_path))
    if n_proc > 1:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(n_proc, mp_context=ctx) as pool:
            futures = {k: pool.submit(_run_arm, c, *args) for k, c in configs.items()}
            results.update({k: f.result() for k, f in futures.items()})
    else:
        results.update({k: _run_arm(c, *args) for k, c in configs.items()})
    wall = time.perf_counter() - start

    summary = {
        "seed": seed,
        "splits": {k: len(v) for k, v in splits.items()},
        "config": asdict(configs["FixMatch"]) | {"burnin_iters": BURNIN_ITERS},
        "miou": {k: v["miou"] for k, v in results.items()},
        "iou": {k: v["iou"] for k, v in results.items()},
        "targets": {k: v.get("targets", {}) for k, v in results.items()},
        "teacher_audit": audit["audit"],
        "teacher_targets": audit["targets"],
        "seconds": {"data_and_library": t_data, "burnin_and_audit": t_burnin, "total": wall},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    print(format_summary(summary, audit["table"]))
    return summary


def format_summary(summary: dict, audit_table: str) -> str:
    """The demo's printed report."""
    s = summary["splits"]
    lines = [
        "",
        f"seed {summary['seed']}: mIoU on the held-out split ({s['val']} images, "
        f"{len(CLASSES)} classes); {s['labeled']} labelled, {s['unlabeled']} unlabelled",
        f"  {'model':<34} mIoU",
    ]
    for name, v in summary["miou"].items():
        lines.append(f"  {name:<34} {v:.4f}")
    lines += [
        "",
        "burn-in teacher on the unlabelled images (ground truth used only here):",
        audit_table,
        "targets at the start: share of pixels kept, their accuracy, share of the errors on "
        "object pixels (wrong class), matched pixels and their accuracy",
        f"  {'arm':<26} {'kept':>6} {'accuracy':>9} {'err-obj':>8} {'matched':>8} "
        f"{'matched acc':>11}",
    ]
    for name, r in summary["teacher_targets"].items():
        extra = (
            f" {r['matched_kept']:>8.3f} {r['matched_accuracy']:>11.3f}"
            if "matched_kept" in r
            else ""
        )
        lines.append(
            f"  {name:<26} {r['kept']:>6.3f} {r['accuracy']:>9.3f} "
            f"{r['wrong_on_objects']:>8.3f}{extra}"
        )
    lines.append(f"  wall time {summary['seconds']['total']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="draws the data, weights and batches")
    ap.add_argument("--out", default="outputs/semantic_fixmatch_demo")
    ap.add_argument("--workers", type=int, help="arm processes at once (default: min(4, cores))")
    ap.add_argument(
        "--conf-on-matched",
        action="store_true",
        help="the refined arms apply the confidence mask to refined pixels too",
    )
    args = ap.parse_args(argv)
    return run_demo(args.seed, args.out, args.workers, args.conf_on_matched)


if __name__ == "__main__":
    main()
