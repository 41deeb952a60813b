"""The CPU demo of ``train.py`` (run with no ``--config``).

Synthetic RefCOCO-format data and its classical-generator proposal library (not SAM), then:

1. **burn-in**: a tiny LAVT trained on the labelled images only (the supervised-only model);
2. **audit**: the burn-in model labels every sentence of the unlabelled images; each strategy
   refines those pseudo-labels with the proposals, and the ground truth (never used for
   training) counts positive / negative / no corrections (the paper's Fig. 6);
3. **semi-supervised runs** from the same burn-in weights, with the same seed, steps and recipe:
   the plain baseline and SemiRES with each strategy of ``demo_strategies`` (IOM and CPI-U by
   default), PWA on unmatched samples. Each run is single-threaded and seeded, so they run side
   by side in separate processes (``demo_processes``) with the same results as one after another;
4. the table: oIoU on the held-out ``eval_split`` of every model, the audit, and whether each
   SemiRES run beat the plain baseline.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, TrainConfig, build_config, read_yaml
from .demo_report import audit_teacher, format_table
from .distributed import DistInfo
from .loaders import prepare_data

__all__ = ["CONFIG_DIR", "DEMO_STRATEGIES", "run_demo"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: SemiRES strategies the demo runs (each from the same burn-in weights as the baseline).
DEMO_STRATEGIES = ("iom", "cpi-u")


def _single_threaded_worker() -> None:
    """Process initialiser: one numba thread (torch's count comes from ``num_threads``)."""
    import numba

    numba.set_num_threads(1)


def _run_stage(train: Callable[[TrainConfig], dict[str, Any]], layers: list[dict]) -> dict:
    return train(build_config(layers))


def run_demo(
    overrides: dict[str, Any],
    train: Callable[[TrainConfig], dict[str, Any]],
    *,
    strategies: tuple[str, ...] = DEMO_STRATEGIES,
    processes: int | None = None,
) -> dict[str, Any]:
    """Run the demo and return its summary (also written to ``<out_dir>/seed<S>/``).

    Parameters
    ----------
    overrides : dict
        Config keys over ``configs/demo.yaml`` (e.g. ``{"seed": 1}``).
    train : callable
        ``train.train``: runs one stage of a :class:`..config.TrainConfig` (a module-level
        function, so that worker processes can import it).
    strategies : tuple of str
        SemiRES strategies to run beside the baseline.
    processes : int, optional
        Semi-supervised runs at once, each in its own process. Default: all of them when the
        machine has 2 or more cores (single-threaded runs time-share the cores), else 1.

    Returns
    -------
    dict
        ``seed``, ``eval_split``, ``wall_s``, ``oIoU`` (per model), ``student_oIoU``,
        ``audit`` (per strategy: correction counts, oIoU before / after) and
        ``semires_minus_baseline`` (per strategy, oIoU points).
    """
    start = time.time()
    layers = [read_yaml(CONFIG_DIR / "demo.yaml"), overrides]
    probe = build_config(layers)
    if not strategies or "none" in strategies:
        raise ConfigError("the demo's SemiRES runs need refinement strategies (iom, cpi-u, ...)")
    run_dir = Path(probe.out_dir) / f"seed{probe.seed}"
    burnin = build_config(layers + [{"method": "supervised", "out_dir": str(run_dir / "burnin")}])
    results = {"supervised": train(burnin)}
    weights = str(run_dir / "burnin" / "final.pth")

    # The audit: the burn-in model is the teacher every semi-supervised run starts from.
    semi_probe = build_config(layers + [{"method": "semires-iom", "init_checkpoint": weights}])
    cpu = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    root, split, library = prepare_data(semi_probe, cpu)
    report = audit_teacher(
        weights,
        model_name=probe.model,
        root=root,
        dataset=probe.dataset,
        image_ids=list(split.unlabelled),
        library=library,
        image_size=burnin.image_size or 64,
        strategies=strategies,
        num_threads=probe.num_threads,
        bert_weights=probe.bert_weights,
    )

    runs = {"baseline": {"method": "baseline"}}
    for strategy in strategies:
        runs[f"semires-{strategy}"] = {"stage": "semi", "strategy": strategy, "pwa": True}
    settings = {
        name: layers + [{**s, "init_checkpoint": weights, "out_dir": str(run_dir / name)}]
        for name, s in runs.items()
    }
    for stage_layers in settings.values():
        build_config(stage_layers)  # a bad setting fails here, not in a worker
    n_proc = processes or (len(runs) if (os.cpu_count() or 1) >= 2 else 1)
    if n_proc > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            n_proc, mp_context=context, initializer=_single_threaded_worker
        ) as pool:
            futures = {name: pool.submit(_run_stage, train, s) for name, s in settings.items()}
            results.update({name: f.result() for name, f in futures.items()})
    else:
        results.update({name: _run_stage(train, s) for name, s in settings.items()})

    oiou = {"supervised only (burn-in)": results["supervised"]["final"]["model"]["oIoU"]}
    oiou["plain semi-supervised baseline (teacher)"] = results["baseline"]["final"]["teacher"][
        "oIoU"
    ]
    for strategy in strategies:
        label = f"SemiRES {strategy.upper()} + PWA (teacher)"
        oiou[label] = results[f"semires-{strategy}"]["final"]["teacher"]["oIoU"]
    n_sentences = results["supervised"]["final"]["model"]["n_samples"]
    summary = {
        "seed": probe.seed,
        "eval_split": probe.eval_split,
        "wall_s": time.time() - start,
        "oIoU": oiou,
        "student_oIoU": {
            k: results[k]["final"]["student"]["oIoU"]
            for k in runs
            if "student" in results[k]["final"]
        },
        "semires_minus_baseline": {
            s: 100
            * (
                results[f"semires-{s}"]["final"]["teacher"]["oIoU"]
                - results["baseline"]["final"]["teacher"]["oIoU"]
            )
            for s in strategies
        },
        "audit": {
            name: {
                "positive": s.positive,
                "negative": s.negative,
                "tie": s.tie,
                "no_correction": s.no_correction,
                "oIoU_before": s.oiou_before,
                "oIoU_after": s.oiou_after,
            }
            for name, s in report.strategies.items()
        },
    }
    print()
    print(format_table(probe.seed, probe.eval_split, n_sentences, oiou, report))
    print(f"  total wall time {summary['wall_s']:.0f} s; details in {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
