"""Semi-supervised LAVT training with SemiRES (samrefine worked example, part 2).

Two stages, one script (settings in ``configs/*.yaml``, every key overridable)::

    burnin   supervised LAVT on the labelled images (Table 1 "Supervised")
    semi     teacher and student from the burn-in weights; the teacher labels the weak view,
             samrefine refines its pseudo-labels with the image's proposals (IOM / CPI / CPI-U /
             CPI-O / none), the student learns from the strong view with PWA weights, and the
             teacher follows the student by EMA (Table 1 "Baseline" and "SemiRES")

Usage::

    python examples/semires_lavt/train.py                      # CPU demo, synthetic data
    python examples/semires_lavt/train.py --seed 1             # the demo with another seed
    python examples/semires_lavt/train.py \\
        --config examples/semires_lavt/configs/refcoco_1pct.yaml --method supervised \\
        --data-root /data/refer --out-dir runs/refcoco_1pct/burnin
    torchrun --nproc-per-node 4 examples/semires_lavt/train.py \\
        --config examples/semires_lavt/configs/refcoco_1pct.yaml --method semires-cpi-u \\
        --data-root /data/refer --library refcoco_sam_vit_h.srlib \\
        --init-checkpoint runs/refcoco_1pct/burnin/final.pth --out-dir runs/refcoco_1pct/semires

Outputs in ``out_dir``: ``latest.pth`` (resumable state, written every ``ckpt_every`` steps and
at the end), ``final.pth`` (weights: ``model`` = teacher for semi, student for burn-in),
``results.json`` (evaluations), ``config.yaml`` (resolved settings), ``tb/`` (TensorBoard).
A run restarted with the same ``out_dir`` resumes exactly where ``latest.pth`` left it.

Read :func:`train` beside the paper's Section 3: the model and its EMA teacher, the data, the
loss of Eq. 4 / Eq. 10 (one step: :mod:`.semires_step`), the loop. The pieces live in small
modules: :mod:`.distributed`, :mod:`.sampling`, :mod:`.loaders`, :mod:`.optim`,
:mod:`.checkpoints`; the demo in :mod:`.demo`.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.semires_lavt import checkpoints, demo
from examples.semires_lavt.config import (
    ConfigError,
    TrainConfig,
    build_config,
    parse_overrides,
    read_yaml,
)
from examples.semires_lavt.distributed import (
    DistInfo,
    convert_sync_batchnorm,
    mean_across_ranks,
    setup_distributed,
)
from examples.semires_lavt.evaluate import evaluate
from examples.semires_lavt.lavt import build_lavt, load_lavt_checkpoint
from examples.semires_lavt.loaders import build_loaders, prepare_data
from examples.semires_lavt.optim import build_optimizer, check_finite, poly_scheduler
from examples.semires_lavt.sampling import endless, mix_seed
from examples.semires_lavt.semires_step import SemiRESSettings, semi_step, supervised_step
from samrefine import EMATeacher, PWABCELoss

#: Called after every optimiser step with the step number (tests use it to interrupt a run).
StepCallback = Callable[[int], None]


def train(cfg: TrainConfig, after_step: StepCallback | None = None) -> dict[str, Any]:
    """Run one stage (``cfg.stage``) to the end, resuming from ``out_dir/latest.pth``.

    Parameters
    ----------
    cfg : TrainConfig
    after_step : callable, optional
        ``after_step(step)`` after each optimiser step (and its checkpoint, if any); an
        exception it raises ends the run there, as a crash would.

    Returns
    -------
    dict
        ``{"stage", "method", "strategy", "steps", "world_size", "final": {model name:
        metrics}, "history": [...], "wall_s"}`` (the content of ``results.json``).
    """
    start_time = time.time()
    with _torch_threads(cfg.num_threads):
        info = setup_distributed()
        out_dir, latest = Path(cfg.out_dir), Path(cfg.out_dir) / "latest.pth"
        semi = cfg.stage == "semi"
        root, split, library = prepare_data(cfg, info)

        # ---- model: the student, and in the semi stage its EMA teacher (Section 3.1) -------
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        student = build_lavt(
            cfg.model,
            img_size=cfg.image_size,
            bert_weights=cfg.bert_weights,
            swin_weights=cfg.swin_weights if cfg.init_checkpoint is None else None,
            verbose=info.is_main,
            **({} if cfg.drop_path_rate is None else {"drop_path_rate": cfg.drop_path_rate}),
        )
        student.text_encoder.dropout = semi and cfg.text_dropout
        state = checkpoints.load_checkpoint(latest) if cfg.resume and latest.is_file() else None
        if state is None and cfg.init_checkpoint is not None:  # never over a resumed state
            report = load_lavt_checkpoint(student, checkpoints.load_checkpoint(cfg.init_checkpoint))
            if info.is_main:
                print(f"initial weights {cfg.init_checkpoint}: {report}")
        elif state is None and semi:
            raise ConfigError(
                "the semi stage starts from burn-in weights: pass --init-checkpoint "
                "<burn-in out_dir>/final.pth"
            )
        student.to(info.device)
        if info.distributed or (cfg.exact_batchnorm and info.device.type == "cpu"):
            student = convert_sync_batchnorm(student, info.device)
        teacher = EMATeacher(student, decay=cfg.ema_decay, warmup=cfg.ema_warmup) if semi else None
        model = student
        if info.distributed:
            ids = [info.local_rank] if info.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(student, device_ids=ids)

        # ---- data, optimiser, schedule, loss (Eq. 4 and Eq. 10) -----------------------------
        loaders = build_loaders(cfg, info, root, split, library, student.spec.img_size)
        main_sampler = loaders.unlabelled_sampler if semi else loaders.labelled_sampler
        main_loader = loaders.unlabelled if semi else loaders.labelled
        steps_per_epoch = main_sampler.batches_per_epoch
        total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
        optimizer = build_optimizer(student, cfg.lr, cfg.weight_decay, cfg.adam_eps)
        scheduler = poly_scheduler(optimizer, total_steps, cfg.poly_power)
        criterion = PWABCELoss(
            class_weight=cfg.class_weight,
            reduction=cfg.loss_reduction,
            gamma=cfg.pwa_gamma,
            mu=cfg.pwa_mu,
            var=cfg.pwa_var,
        )
        unsup_criterion = PWABCELoss(
            class_weight=cfg.unsup_class_weight or cfg.class_weight,
            reduction=cfg.loss_reduction,
            gamma=cfg.pwa_gamma,
            mu=cfg.pwa_mu,
            var=cfg.pwa_var,
        )
        settings = SemiRESSettings.from_config(cfg)

        # ---- resume (exact: weights, teacher, optimiser, schedule, RNG, data position) ------
        step, history, final = 0, [], None
        if state is not None:
            student.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if semi:
                teacher.load_state_dict(state["teacher"])
            step, history = int(state["step"]), list(state["history"])
            final = state.get("final")  # the run had finished: its final evaluation
            rngs = state["rng"]
            if len(rngs) == info.world_size:
                checkpoints.set_rng_state(rngs[info.rank])
            else:
                torch.manual_seed(mix_seed(cfg.seed, info.rank, step))
            if info.is_main:
                print(f"resumed {latest} at step {step}/{total_steps}")
        else:
            torch.manual_seed(mix_seed(cfg.seed, info.rank))  # per-rank dropout streams
            np.random.seed(mix_seed(cfg.seed, info.rank) % 2**32)
            random.seed(mix_seed(cfg.seed, info.rank))
        labelled_stream = (
            endless(loaders.labelled, loaders.labelled_sampler, step) if semi else None
        )

        writer = None
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            if cfg.tensorboard:
                writer = SummaryWriter(str(out_dir / "tb"), purge_step=step)
            print(
                f"{cfg.stage}: {len(split.labelled)} labelled / {len(split.unlabelled)} "
                f"unlabelled images, {total_steps} steps ({steps_per_epoch} per epoch), "
                f"world {info.world_size}"
                + (f", strategy {cfg.strategy}, pwa {cfg.pwa}" if semi else "")
            )

        def checkpoint() -> None:
            rng = checkpoints.gather_rng_states(info)  # collective: every rank calls it
            if info.is_main:
                checkpoints.save_checkpoint(
                    latest,
                    {
                        "model": student.state_dict(),
                        "teacher": teacher.state_dict() if semi else None,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "step": step,
                        "rng": rng,
                        "history": history,
                        "final": final,
                        "config": cfg.to_dict(),
                    },
                )

        def run_evaluation(tag: str) -> dict[str, dict]:
            models = {"teacher": teacher.module} if semi else {"model": student}
            if semi and cfg.eval_student:
                models["student"] = student
            results = {
                name: evaluate(
                    net,
                    loaders.evaluation,
                    device=info.device,
                    protocols=("model_size",),
                    progress=False,
                    max_batches=cfg.eval_max_batches,
                )
                for name, net in models.items()
            }
            history.append(
                {
                    "step": step,
                    "tag": tag,
                    **{
                        n: {"oIoU": float(r["oIoU"]), "mIoU": float(r["mIoU"])}
                        for n, r in results.items()
                    },
                }
            )
            if info.is_main:
                text = ", ".join(f"{n} oIoU {100 * r['oIoU']:.2f}" for n, r in results.items())
                print(f"[{cfg.stage} step {step}] {cfg.eval_split}: {text}")
                for name, r in results.items():
                    if writer is not None:
                        writer.add_scalar(f"eval/{name}_oIoU", r["oIoU"], step)
                        writer.add_scalar(f"eval/{name}_mIoU", r["mIoU"], step)
            return results

        # ---- loop: one SemiRES (or supervised) step per batch -------------------------------
        bar = tqdm(
            total=total_steps,
            initial=step,
            desc=cfg.stage,
            dynamic_ncols=True,
            disable=not (cfg.progress and info.is_main),
        )
        logged: dict[str, list[float]] = {}
        while step < total_steps:
            main_sampler.start_at(*divmod(step, steps_per_epoch))
            model.train()
            for batch in main_loader:
                if semi:
                    labelled = next(labelled_stream)
                    loss, stats = semi_step(
                        model,
                        teacher.module,
                        labelled,
                        batch,
                        criterion,
                        settings,
                        info.device,
                        unsup_criterion=unsup_criterion,
                        step=step,
                    )
                else:
                    loss, stats = supervised_step(model, batch, criterion, info.device, amp=cfg.amp)
                check_finite(loss, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                if semi:
                    teacher.update(student)
                step += 1
                for key, value in stats.items():
                    logged.setdefault(key, []).append(value)
                if step % cfg.log_every == 0 or step == total_steps:
                    _log_scalars(writer, logged, info, step, scheduler.get_last_lr()[0])
                    logged = {}
                bar.update(1)
                bar.set_postfix(
                    loss=f"{stats['loss']:.3f}",
                    **({"match": f"{stats['match_rate']:.2f}"} if semi else {}),
                )
                epoch_end = step % steps_per_epoch == 0 and step < total_steps
                if epoch_end and cfg.eval_every_epochs:
                    if (step // steps_per_epoch) % cfg.eval_every_epochs == 0:
                        run_evaluation(f"epoch {step // steps_per_epoch}")
                if step % cfg.ckpt_every == 0 and step < total_steps:
                    checkpoint()  # after the epoch's evaluation: a resume does not redo it
                if after_step is not None:
                    after_step(step)
                if epoch_end or step >= total_steps:
                    break
        bar.close()

        # ---- end: final evaluation (once, even when re-run), weights, results ---------------
        if final is None:
            final = {
                name: {k: v for k, v in r.items() if k != "protocols"}
                | {"metrics": r["protocols"]["model_size"]["all"]}
                for name, r in run_evaluation("final").items()
            }
            final = json.loads(json.dumps(final, default=float))  # plain types, as results.json
            checkpoint()
        results = {
            "stage": cfg.stage,
            "method": cfg.method,
            "strategy": cfg.strategy if semi else None,
            "steps": step,
            "world_size": info.world_size,
            "final": final,
            "history": history,
            "wall_s": time.time() - start_time,
        }
        if info.is_main:
            checkpoints.save_checkpoint(
                out_dir / "final.pth",
                {
                    "model": teacher.module.state_dict() if semi else student.state_dict(),
                    "student": student.state_dict() if semi else None,
                    "config": cfg.to_dict(),
                    "step": step,
                },
            )
            (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
            if writer is not None:
                writer.close()
        return results


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block (None: unchanged), restored afterwards."""
    threads = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)  # do not leak the setting into a calling process


def _log_scalars(
    writer: SummaryWriter | None,
    logged: dict[str, list[float]],
    info: DistInfo,
    step: int,
    lr: float,
) -> None:
    """Average the logged step statistics over steps and ranks; write them to TensorBoard."""
    means = mean_across_ranks(
        {
            k: float(np.nanmean(v)) if not all(map(math.isnan, v)) else math.nan
            for k, v in logged.items()
        },
        info,
    )
    if writer is not None:
        writer.add_scalar("train/lr", lr, step)
        for key, value in means.items():
            if not math.isnan(value):
                writer.add_scalar(f"train/{key}", value, step)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point: ``--config FILE`` runs one stage; without it, the demo (see module doc)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("Config keys (--key value or --set key=value):")
        for name, value in TrainConfig().to_dict().items():
            print(f"  {name} = {value!r}")
        return {}
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a YAML file, e.g. --config configs/demo.yaml")
        config_path = argv[i + 1]
        del argv[i : i + 2]
    overrides = parse_overrides(argv)
    if config_path is None:
        return demo.run_demo(overrides, train)
    return train(build_config([read_yaml(config_path), overrides]))


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        sys.exit(f"config error: {err}")
