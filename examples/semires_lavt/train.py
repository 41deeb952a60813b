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
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.semires_lavt import engine
from examples.semires_lavt.config import (
    ConfigError,
    TrainConfig,
    build_config,
    parse_overrides,
    read_yaml,
)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


# ------------------------------------------------------------------------------ data


def prepare_data(cfg: TrainConfig, info: engine.DistInfo):
    """Data root, labelled/unlabelled image split and (semi stage) proposal library path.

    With ``data_root`` unset, a synthetic RefCOCO-format dataset is written to ``synthetic_dir``
    and, when proposals are needed, its library is built with the ``classical`` generator
    through ``samrefine.library.build_library`` (the code path of ``samrefine build``).
    """
    from examples.semires_lavt.data import (
        load_refer,
        make_split,
        read_semires_split,
        read_split,
        write_synthetic_refcoco,
    )

    synthetic = cfg.data_root is None
    root = Path(cfg.synthetic_dir if synthetic else cfg.data_root)
    if synthetic and info.is_main:
        marker = root / "synthetic.json"
        params = {
            "n_images": cfg.synthetic_images,
            "size": list(cfg.synthetic_size),
            "dataset": cfg.dataset,
            "seed": 0,
        }
        if not marker.is_file() or json.loads(marker.read_text()) != params:
            write_synthetic_refcoco(
                root,
                cfg.synthetic_images,
                seed=0,
                dataset=cfg.dataset,
                size_range=tuple(cfg.synthetic_size),
                progress=cfg.progress,
            )
            marker.write_text(json.dumps(params))
    engine.barrier(info)
    index = load_refer(root, cfg.dataset, cfg.split_by)
    if cfg.split_file is None:
        split = make_split(
            index.train_image_ids(), cfg.labelled_percent, cfg.split_seed, dataset=cfg.dataset
        )
    elif cfg.split_file.endswith(".json"):
        split = read_semires_split(cfg.split_file, index.train_image_ids())
    else:
        split = read_split(cfg.split_file)
    library = cfg.library
    if cfg.stage == "semi" and cfg.strategy != "none" and library is None:
        if not synthetic:
            raise ConfigError(
                f"strategy {cfg.strategy!r} needs a proposal library; build one with "
                "`samrefine build <lib>.srlib --refs <root>/<dataset>/refs(<split_by>).p "
                "--images <root>/images/mscoco/images/train2014 --checkpoint sam_vit_h.pth` "
                "and pass --library <lib>.srlib"
            )
        library = build_classical_library(root, split.unlabelled, info, cfg.progress)
    return root, split, library


def _build_shard(args: tuple) -> str:
    from samrefine.library import build_library

    path, ids, images, shard, progress = args
    result = build_library(path, ids, "classical", images=images, shard=shard, progress=progress)
    return result.path


def build_classical_library(root: Path, image_ids, info: engine.DistInfo, progress: bool):
    """Classical-generator library of ``image_ids`` under ``root`` (built once, then reused).

    Built as two shards in two processes (a sharded build, as on a cluster); the shard files
    are opened together as one library. Returns the list of shard paths.
    """
    import concurrent.futures
    import multiprocessing
    import os

    from examples.semires_lavt.data.refer import IMAGE_DIR
    from samrefine.library import ProposalLibrary, shard_path

    path = root / "classical.srlib"
    n = max(1, min(2, os.cpu_count() or 1))
    shards = [shard_path(path, i, n) for i in range(n)]
    if info.is_main:
        done = all(Path(s).is_file() for s in shards) and ProposalLibrary.open(shards).finished
        if not done:
            jobs = [
                (str(path), list(image_ids), str(root / IMAGE_DIR), (i, n), progress and i == 0)
                for i in range(n)
            ]
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(n, mp_context=context) as pool:
                list(pool.map(_build_shard, jobs))
    engine.barrier(info)
    return shards


def build_loaders(
    cfg: TrainConfig, info: engine.DistInfo, root: Path, split, library, image_size: int
) -> dict[str, Any]:
    """Labelled, unlabelled (semi) and evaluation loaders with their samplers."""
    from torch.utils.data import DataLoader, DistributedSampler

    from examples.semires_lavt.data import (
        RandomCrop,
        RandomHorizontalFlip,
        ReferDataset,
        Resize,
        StrongAugment,
        collate,
    )
    from examples.semires_lavt.lavt import build_tokenizer

    tokenizer = build_tokenizer(cfg.bert_weights)
    geometry = []
    if cfg.crop_p > 0:
        geometry.append(RandomCrop(tuple(cfg.crop_scale), p=cfg.crop_p))
    if cfg.hflip_p > 0:
        geometry.append(RandomHorizontalFlip(cfg.hflip_p))
    geometry.append(Resize(image_size))
    common = {
        "split_by": cfg.split_by,
        "image_size": image_size,
        "tokenizer": tokenizer,
        "max_tokens": cfg.max_tokens,
    }

    def loader(dataset, batch_size: int, salt: int):
        sampler = engine.GlobalBatchSampler(
            len(dataset), batch_size, info.rank, info.world_size, seed=cfg.seed + 7919 * salt
        )
        data = engine.SeededSamples(dataset, cfg.seed, salt)
        return sampler, DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=cfg.workers,
            generator=torch.Generator(),
        )

    out: dict[str, Any] = {}
    labelled = ReferDataset(
        root, cfg.dataset, "train", image_ids=split.labelled, transforms=geometry, **common
    )
    out["labelled_sampler"], out["labelled"] = loader(labelled, cfg.batch_size, 0)
    if cfg.stage == "semi":
        source = None
        if library is not None and cfg.strategy != "none":
            from samrefine.library import ProposalLibrary

            source = ProposalLibrary.open(library)
        strong = StrongAugment(
            jitter_p=cfg.jitter_p if cfg.strong_aug else 0.0,
            blur_p=cfg.blur_p if cfg.strong_aug else 0.0,
        )
        unlabelled = ReferDataset(
            root,
            cfg.dataset,
            "train",
            image_ids=split.unlabelled,
            transforms=geometry,
            proposals=source,
            views=("weak", "strong"),
            strong_augment=strong,
            with_mask=cfg.crop_p == 0,  # GT only for logging corrections; it would steer crops
            **common,
        )
        out["unlabelled_sampler"], out["unlabelled"] = loader(
            unlabelled, cfg.unlabelled_batch_size, 1
        )
    evaluation = ReferDataset(
        root,
        cfg.dataset,
        cfg.eval_split,
        sentences="all",
        transforms=[Resize(image_size, mask_rule="pil")],
        **common,
    )
    sampler = DistributedSampler(evaluation, shuffle=False) if info.distributed else None
    out["eval"] = DataLoader(
        evaluation,
        batch_size=cfg.eval_batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
    )
    return out


def _stream(loader, sampler: engine.GlobalBatchSampler, position: int):
    """Endless batches of a loader, starting at global batch number ``position``."""
    epoch, batch = divmod(position, sampler.batches_per_epoch)
    while True:
        sampler.start_at(epoch, batch)
        yield from loader
        epoch, batch = epoch + 1, 0


def evaluate_models(
    models: dict[str, torch.nn.Module], loader, cfg: TrainConfig, info: engine.DistInfo
) -> dict[str, dict]:
    """oIoU / mIoU / precision of each model on the evaluation split (part 1's ``evaluate``)."""
    from examples.semires_lavt.evaluate import evaluate

    return {
        name: evaluate(
            model,
            loader,
            device=info.device,
            protocols=("model_size",),
            progress=False,
            max_batches=cfg.eval_max_batches,
        )
        for name, model in models.items()
    }


# ------------------------------------------------------------------------------ one stage


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one stage (``cfg.stage``) to the end, resuming from ``out_dir/latest.pth``.

    Returns
    -------
    dict
        ``{"stage", "steps", "final": {model name: metrics}, "history": [...], "wall_s"}``
        (the content of ``results.json``); ``{"stopped_at": step}`` when ``stop_after_steps``
        interrupted the run.
    """
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)  # do not leak the setting into a calling process


def _train(cfg: TrainConfig) -> dict[str, Any]:
    import random

    import numpy as np

    from examples.semires_lavt.lavt import build_lavt, load_lavt_checkpoint
    from samrefine import EMATeacher, PWABCELoss

    start_time = time.time()
    info = engine.setup_distributed()
    out_dir = Path(cfg.out_dir)
    semi = cfg.stage == "semi"
    root, split, library = prepare_data(cfg, info)

    # ---- model: student (and EMA teacher) ------------------------------------------------
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    overrides = {} if cfg.drop_path_rate is None else {"drop_path_rate": cfg.drop_path_rate}
    student = build_lavt(
        cfg.model,
        img_size=cfg.image_size,
        bert_weights=cfg.bert_weights,
        swin_weights=cfg.swin_weights if cfg.init_checkpoint is None else None,
        verbose=info.is_main,
        **overrides,
    )
    student.text_encoder.dropout = semi and cfg.text_dropout
    image_size = student.spec.img_size
    latest = out_dir / "latest.pth"
    state = engine.load_checkpoint(latest) if cfg.resume and latest.is_file() else None
    if state is None and cfg.init_checkpoint is not None:  # never over a resumed state
        report = load_lavt_checkpoint(student, engine.load_checkpoint(cfg.init_checkpoint))
        if info.is_main:
            print(f"initial weights {cfg.init_checkpoint}: {report}")
    elif state is None and semi:
        raise ConfigError(
            "the semi stage starts from burn-in weights: pass --init-checkpoint "
            "<burn-in out_dir>/final.pth"
        )
    student.to(info.device)
    if info.distributed or (cfg.exact_batchnorm and info.device.type == "cpu"):
        student = engine.convert_sync_batchnorm(student, info.device)
    teacher = EMATeacher(student, decay=cfg.ema_decay, warmup=cfg.ema_warmup) if semi else None
    model = student
    if info.distributed:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(student, device_ids=ids)

    # ---- data, optimiser, schedule, loss --------------------------------------------------
    loaders = build_loaders(cfg, info, root, split, library, image_size)
    main_sampler = loaders["unlabelled_sampler" if semi else "labelled_sampler"]
    main_loader = loaders["unlabelled" if semi else "labelled"]
    steps_per_epoch = main_sampler.batches_per_epoch
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    optimizer = engine.build_optimizer(student, cfg.lr, cfg.weight_decay, cfg.adam_eps)
    scheduler = engine.poly_scheduler(optimizer, total_steps, cfg.poly_power)
    criterion = PWABCELoss(
        class_weight=cfg.class_weight,
        reduction=cfg.loss_reduction,
        gamma=cfg.pwa_gamma,
        mu=cfg.pwa_mu,
        var=cfg.pwa_var,
    )

    # ---- resume (exact: weights, teacher, optimiser, schedule, RNG, data position) ---------
    step, history = 0, []
    if state is not None:
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if semi:
            teacher.load_state_dict(state["teacher"])
        step, history = int(state["step"]), list(state["history"])
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            engine.set_rng_state(rngs[info.rank])
        else:
            torch.manual_seed(engine.mix_seed(cfg.seed, info.rank, step))
        if info.is_main:
            print(f"resumed {latest} at step {step}/{total_steps}")
    else:
        torch.manual_seed(engine.mix_seed(cfg.seed, info.rank))  # per-rank dropout streams
        np.random.seed(engine.mix_seed(cfg.seed, info.rank) % 2**32)
        random.seed(engine.mix_seed(cfg.seed, info.rank))
    labelled_stream = (
        _stream(loaders["labelled"], loaders["labelled_sampler"], step) if semi else None
    )

    writer = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        import yaml

        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"), purge_step=step)
        print(
            f"{cfg.stage}: {len(split.labelled)} labelled / {len(split.unlabelled)} unlabelled "
            f"images, {total_steps} steps ({steps_per_epoch} per epoch), world {info.world_size}"
            + (f", strategy {cfg.strategy}, pwa {cfg.pwa}" if semi else "")
        )

    def checkpoint() -> None:
        rng = engine.gather_rng_states(info)  # collective: every rank calls it
        if info.is_main:
            engine.save_checkpoint(
                latest,
                {
                    "model": student.state_dict(),
                    "teacher": teacher.state_dict() if semi else None,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "rng": rng,
                    "history": history,
                    "config": cfg.to_dict(),
                },
            )

    def run_evaluation(tag: str) -> dict:
        models = {"teacher": teacher.module} if semi else {"model": student}
        if semi and cfg.eval_student:
            models["student"] = student
        results = evaluate_models(models, loaders["eval"], cfg, info)
        record = {
            "step": step,
            "tag": tag,
            **{name: {"oIoU": r["oIoU"], "mIoU": r["mIoU"]} for name, r in results.items()},
        }
        history.append(record)
        if info.is_main:
            text = ", ".join(f"{n} oIoU {100 * r['oIoU']:.2f}" for n, r in results.items())
            print(f"[{cfg.stage} step {step}] {cfg.eval_split}: {text}")
            for name, r in results.items():
                if writer is not None:
                    writer.add_scalar(f"eval/{name}_oIoU", r["oIoU"], step)
                    writer.add_scalar(f"eval/{name}_mIoU", r["mIoU"], step)
        return results

    # ---- loop ---------------------------------------------------------------------------------
    from tqdm import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=cfg.stage,
        dynamic_ncols=True,
        disable=not (cfg.progress and info.is_main),
    )
    logged: dict[str, list[float]] = {}
    while step < total_steps:
        epoch, first_batch = divmod(step, steps_per_epoch)
        main_sampler.start_at(epoch, first_batch)
        model.train()
        for batch in main_loader:
            if semi:
                loss, stats = engine.semi_step(
                    model, teacher.module, next(labelled_stream), batch, criterion, cfg, info.device
                )
            else:
                loss, stats = engine.supervised_step(
                    model, batch, criterion, info.device, amp=cfg.amp
                )
            engine.check_finite(loss, step)
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
                means = engine.mean_across_ranks(
                    {
                        k: float(np.nanmean(v)) if not all(map(math.isnan, v)) else math.nan
                        for k, v in logged.items()
                    },
                    info,
                )
                logged = {}
                if writer is not None:
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    for key, value in means.items():
                        if not math.isnan(value):
                            writer.add_scalar(f"train/{key}", value, step)
            bar.update(1)
            bar.set_postfix(
                loss=f"{stats['loss']:.3f}",
                **({"match": f"{stats['match_rate']:.2f}"} if semi else {}),
            )
            if step % cfg.ckpt_every == 0 and step < total_steps:
                checkpoint()
            if cfg.stop_after_steps is not None and step >= cfg.stop_after_steps:
                bar.close()
                return {"stopped_at": step}  # simulated crash: nothing more is saved
            if step >= total_steps:
                break
        epoch_done = step % steps_per_epoch == 0 and step < total_steps
        if (
            epoch_done
            and cfg.eval_every_epochs
            and (step // steps_per_epoch) % cfg.eval_every_epochs == 0
        ):
            run_evaluation(f"epoch {step // steps_per_epoch}")
    bar.close()

    # ---- end: final evaluation, weights, results ------------------------------------------
    final = run_evaluation("final")
    checkpoint()
    results = {
        "stage": cfg.stage,
        "method": cfg.method,
        "strategy": cfg.strategy if semi else None,
        "steps": step,
        "world_size": info.world_size,
        "final": {
            name: {k: v for k, v in r.items() if k != "protocols"}
            | {"metrics": r["protocols"]["model_size"]["all"]}
            for name, r in final.items()
        },
        "history": history,
        "wall_s": time.time() - start_time,
    }
    if info.is_main:
        weights = teacher.module.state_dict() if semi else student.state_dict()
        engine.save_checkpoint(
            out_dir / "final.pth",
            {
                "model": weights,
                "student": student.state_dict() if semi else None,
                "config": cfg.to_dict(),
                "step": step,
            },
        )
        (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
        if writer is not None:
            writer.close()
    return results


# ------------------------------------------------------------------------------ demo


def demo(overrides: dict[str, Any]) -> dict[str, Any]:
    """The CPU demo: synthetic data, classical proposal library, burn-in, baseline, SemiRES.

    Settings come from ``configs/demo.yaml`` plus ``overrides``. The plain semi-supervised
    baseline and SemiRES start from the same burn-in weights and run the same steps with the
    same seed; only the pseudo-label treatment differs: none (baseline) against refinement with
    the configured ``strategy`` plus PWA (SemiRES). Prints the oIoU of the three models on
    ``eval_split``.
    """
    start = time.time()
    base = read_yaml(CONFIG_DIR / "demo.yaml")
    layers = [base, overrides]
    probe = build_config(layers)
    if probe.strategy == "none":
        raise ConfigError("the demo's SemiRES run needs a refinement strategy (iom, cpi, ...)")
    run_dir = Path(probe.out_dir) / f"seed{probe.seed}"
    burnin = build_config(layers + [{"method": "supervised", "out_dir": str(run_dir / "burnin")}])
    results = {"supervised": train(burnin)}
    weights = str(run_dir / "burnin" / "final.pth")
    semires = {"stage": "semi", "pwa": True, "conf_filter": 0.0}  # strategy: from the config
    for name, setting in (("baseline", {"method": "baseline"}), ("semires", semires)):
        cfg = build_config(
            layers + [{**setting, "init_checkpoint": weights, "out_dir": str(run_dir / name)}]
        )
        results[name] = train(cfg)
    if "stopped_at" in results["semires"]:
        return results
    rows = [
        ("supervised only (burn-in)", results["supervised"]["final"]["model"]),
        ("plain semi-supervised baseline (teacher)", results["baseline"]["final"]["teacher"]),
        (
            f"SemiRES {probe.strategy.upper()} + PWA (teacher)",
            results["semires"]["final"]["teacher"],
        ),
    ]
    summary = {
        "seed": probe.seed,
        "eval_split": probe.eval_split,
        "wall_s": time.time() - start,
        "oIoU": {label: r["oIoU"] for label, r in rows},
        "student_oIoU": {
            k: results[k]["final"]["student"]["oIoU"]
            for k in ("baseline", "semires")
            if "student" in results[k]["final"]
        },
    }
    print(
        f"\nSemiRES demo, seed {probe.seed}: oIoU on the held-out '{probe.eval_split}' split "
        f"({results['supervised']['final']['model']['n_samples']} sentences)"
    )
    for label, r in rows:
        print(f"  {label:<42} {100 * r['oIoU']:6.2f}   (mIoU {100 * r['mIoU']:.2f})")
    print(f"  total wall time {summary['wall_s']:.0f} s; details in {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


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
        return demo(overrides)
    return train(build_config([read_yaml(config_path), overrides]))


if __name__ == "__main__":
    try:
        main()
    except ConfigError as err:
        sys.exit(f"config error: {err}")
