"""The data of a run: dataset root, labelled/unlabelled split, proposal library, DataLoaders.

:func:`prepare_data` finds (or, without ``data_root``, writes) the dataset, draws or reads the
split and builds the synthetic data's classical proposal library; :func:`build_loaders` makes
the labelled, unlabelled and evaluation loaders with the samplers of :mod:`.sampling`.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from samrefine.library import ProposalLibrary, build_library, shard_path

from .config import ConfigError, TrainConfig
from .data import (
    ImageSplit,
    RandomCrop,
    RandomHorizontalFlip,
    ReferDataset,
    Resize,
    StrongAugment,
    collate,
    load_refer,
    make_split,
    read_semires_split,
    read_split,
    write_synthetic_refcoco,
)
from .data.refer import IMAGE_DIR
from .distributed import DistInfo, barrier
from .lavt import build_tokenizer
from .sampling import GlobalBatchSampler, SeededSamples

__all__ = ["Loaders", "build_classical_library", "build_loaders", "prepare_data"]


def prepare_data(
    cfg: TrainConfig, info: DistInfo
) -> tuple[Path, ImageSplit, str | list[str] | None]:
    """Data root, labelled/unlabelled image split and (semi stage) proposal library path.

    With ``data_root`` unset, a synthetic RefCOCO-format dataset is written to ``synthetic_dir``
    and, when proposals are needed, its library is built with the ``classical`` generator
    through ``samrefine.library.build_library`` (the code path of ``samrefine build``).
    """
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
    barrier(info)
    index = load_refer(root, cfg.dataset, cfg.split_by)
    if cfg.split_file is None:
        split = make_split(
            index.train_image_ids(), cfg.labelled_percent, cfg.split_seed, dataset=cfg.dataset
        )
    elif cfg.split_file.endswith(".json"):
        split = read_semires_split(cfg.split_file, index.train_image_ids())
    else:
        split = read_split(cfg.split_file)
    library: str | list[str] | None = cfg.library
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
    path, ids, images, shard, progress = args
    result = build_library(path, ids, "classical", images=images, shard=shard, progress=progress)
    return result.path


def build_classical_library(
    root: Path, image_ids: Sequence[int], info: DistInfo, progress: bool
) -> list[str]:
    """Classical-generator library of ``image_ids`` under ``root`` (built once, then reused).

    Built as two shards in two processes (a sharded build, as on a cluster); the shard files
    are opened together as one library. Returns the list of shard paths. The file is named
    after the generator's method, so a library made by an older method is never reused.
    """
    path = root / "classical-hierarchy.srlib"
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
    barrier(info)
    return shards


@dataclass
class Loaders:
    """The loaders of one stage (``unlabelled`` and its sampler only in the semi stage)."""

    labelled: DataLoader
    labelled_sampler: GlobalBatchSampler
    evaluation: DataLoader
    unlabelled: DataLoader | None = None
    unlabelled_sampler: GlobalBatchSampler | None = None


def build_loaders(
    cfg: TrainConfig,
    info: DistInfo,
    root: Path,
    split: ImageSplit,
    library: str | list[str] | None,
    image_size: int,
) -> Loaders:
    """Labelled, unlabelled (semi) and evaluation loaders with their samplers.

    Every loader has its own ``torch.Generator``, so iterating one (worker seeds) never draws
    from the global RNG: an evaluation does not change what the next training step draws.
    """
    tokenizer = build_tokenizer(cfg.bert_weights)
    geometry: list = []
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

    def training_loader(
        dataset: Dataset, batch_size: int, salt: int
    ) -> tuple[GlobalBatchSampler, DataLoader]:
        sampler = GlobalBatchSampler(
            len(dataset), batch_size, info.rank, info.world_size, seed=cfg.seed + 7919 * salt
        )
        data = SeededSamples(dataset, cfg.seed, salt)
        return sampler, DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=cfg.workers,
            generator=torch.Generator(),
        )

    labelled = ReferDataset(
        root, cfg.dataset, "train", image_ids=split.labelled, transforms=geometry, **common
    )
    labelled_sampler, labelled_loader = training_loader(labelled, cfg.batch_size, 0)
    unlabelled_sampler = unlabelled_loader = None
    if cfg.stage == "semi":
        source = None
        if library is not None and cfg.strategy != "none":
            source = ProposalLibrary.open(library)
        strong = StrongAugment(
            jitter_p=cfg.jitter_p if cfg.strong_aug else 0.0,
            hue=cfg.jitter_hue,
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
        unlabelled_sampler, unlabelled_loader = training_loader(
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
    evaluation_loader = DataLoader(
        evaluation,
        batch_size=cfg.eval_batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
        generator=torch.Generator(),
    )
    return Loaders(
        labelled_loader, labelled_sampler, evaluation_loader, unlabelled_loader, unlabelled_sampler
    )
