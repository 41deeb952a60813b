"""``samrefine build | import | merge | info | verify | export``: the proposal library verbs.

Each ``_cmd_*`` reads its arguments, calls the public functions of :mod:`samrefine.library`
and prints what it did; :func:`add_parsers` registers the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from ..library import coco_io, semires_io
from ..library import importers as im
from ..library.generate import FAIL_FAST, BuildResult, build_library
from ..library.keys import parse_image_key
from ..library.merge import merge_libraries
from ..library.reader import ProposalLibrary
from ..library.refs import load_refs
from ..library.verify import verify_library
from ..library.writer import create_library
from ._common import load_callable, one_or_many, show_progress
from .generators import check_params, make_generator, parse_params, resolve_generator

__all__ = ["add_parsers"]

# --------------------------------------------------------------------------------------------
# which images
# --------------------------------------------------------------------------------------------


def _read_ids(path: str) -> list[int | str]:
    """Image keys of an ``--ids`` file: one a line (or whitespace/comma separated, or a JSON
    list). Plain decimals become int ids; anything else (``2007_000032``,
    ``aachen/aachen_000000_000019``) stays a name (:func:`samrefine.library.parse_image_key`)."""
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
        ids = data if isinstance(data, list) else None
    except json.JSONDecodeError:
        ids = None
    if ids is None:
        return [parse_image_key(tok) for tok in text.replace(",", " ").split()]
    out: list[int | str] = []
    for value in ids:
        if isinstance(value, float) or isinstance(value, bool):
            raise ValueError(f"{path}: image ids must be ints or names, got {value!r}")
        out.append(parse_image_key(value) if isinstance(value, str) else int(value))
    return out


def _image_ids(args: argparse.Namespace) -> tuple[list, dict[int, str]]:
    """``(ids, file_names)`` from --ids / --refs / --instances."""
    names: dict[int, str] = {}
    if args.instances:
        inst = semires_io.load_instances(args.instances)
        names = {k: v["file_name"] for k, v in inst.items() if v.get("file_name")}
    if args.ids:
        return _read_ids(args.ids), names
    if args.refs:
        split = None if args.split == "all" else args.split
        refs = load_refs(args.refs, split=split)
        if not refs:
            raise ValueError(f"{args.refs}: no referents in split {args.split!r}")
        return sorted({int(r["image_id"]) for r in refs}), names
    if args.instances:
        return sorted(names), names
    raise ValueError(
        "give the images to process: --ids FILE, --refs refs(unc).p or --instances instances.json"
    )


# --------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------


def _generator_spec(
    args: argparse.Namespace, name: str
) -> tuple[str, Callable[..., Any] | None, dict]:
    """``(name, factory, settings)`` for :func:`make_generator`: --param checked, the sam/sam2
    flags added; a --model-factory is loaded (and called later) as ``settings["model"]``."""
    registry_name, factory = resolve_generator(name)
    kw = check_params(registry_name, factory, parse_params(args.param))
    if registry_name in ("sam", "sam2"):
        if args.checkpoint:
            kw["checkpoint"] = args.checkpoint
        if args.device:
            kw["device"] = args.device
        if args.model_factory:
            kw["model"] = load_callable(args.model_factory, "--model-factory")
        if registry_name == "sam" and args.model_type:
            kw["model_type"] = args.model_type
        if registry_name == "sam2" and args.config:
            kw["config"] = args.config
    elif args.checkpoint or args.model_factory or args.model_type or args.config:
        raise ValueError(
            f"--checkpoint/--model-type/--config/--model-factory apply to the sam "
            f"and sam2 generators, not {name!r} (use --param)"
        )
    return registry_name, factory, kw


def _cmd_build(args: argparse.Namespace) -> int:
    if args.fail_fast < 0:
        raise ValueError(f"--fail-fast must be >= 0 (0: off), got {args.fail_fast}")
    spec = _generator_spec(args, args.generator)  # before any image is read
    ids, names = _image_ids(args)
    if args.limit is not None:
        ids = sorted(ids)[: args.limit]
    name, factory, kw = spec
    if args.model_factory:
        kw["model"] = kw["model"]()  # build the --model-factory model
    gen = make_generator(name, factory, kw)
    result: BuildResult = build_library(
        args.output,
        ids,
        gen,
        images=args.images,
        file_pattern=args.file_pattern,
        file_names=names,
        shard=args.shard,
        retries=args.retries,
        if_exists="overwrite" if args.overwrite else "resume",
        allow_failures=args.allow_failures,
        progress=show_progress(args),
        compression=args.compression,
        fail_fast=args.fail_fast,
        workers=args.workers,
    )
    print(result)
    if result.failures and not result.finished:
        first = next(iter(result.failures.items()))
        print(
            f"samrefine build: {len(result.failures)} images failed (first: image {first[0]}: "
            f"{first[1]}); re-run to retry them or pass --allow-failures",
            file=sys.stderr,
        )
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# import, merge, info, verify, export
# --------------------------------------------------------------------------------------------


def _instance_sizes(path: str | None) -> dict[int | str, tuple[int, int]]:
    """``{key: (H, W)}`` of the images of an ``instances.json``, keyed by id and by file stem
    (amg.py names its outputs after the image file)."""
    if not path:
        return {}
    sizes: dict[int | str, tuple[int, int]] = {}
    for key, image in semires_io.load_instances(path).items():
        size = (image["height"], image["width"])
        sizes[key] = size
        if image.get("file_name"):
            sizes[parse_image_key(os.path.splitext(os.path.basename(image["file_name"]))[0])] = size
    return sizes


def _cmd_import(args: argparse.Namespace) -> int:
    fmt = args.format
    sources = args.source
    writer = create_library(
        args.output,
        generator=args.generator or ("imported" if fmt == "coco" else "sam"),
        model=args.model,
        params={"imported_from": fmt},
        if_exists="overwrite" if args.overwrite else "resume",
        commit_every=256,
        compression=args.compression,
        extra={"sources": [os.path.abspath(s) for s in sources]},
    )
    progress = show_progress(args)
    try:
        if fmt == "sa1b":
            report = im.import_sa1b(writer, one_or_many(sources), progress=progress)
        elif fmt == "amg":
            report = im.import_amg(
                writer,
                one_or_many(sources),
                sizes=_instance_sizes(args.instances),
                progress=progress,
            )
        elif fmt == "coco":
            if len(sources) != 1:
                raise ValueError("--format coco takes one JSON file")
            report = coco_io.import_coco(writer, sources[0], progress=progress)
        else:
            if len(sources) != 1 or not args.refs:
                raise ValueError(
                    "--format semires takes one sam_rle_mask folder and --refs refs(<splitBy>).p"
                )
            report = semires_io.import_semires(
                writer,
                sources[0],
                args.refs,
                instances=args.instances,
                on_conflict=args.on_conflict,
                progress=progress,
            )
    except BaseException:
        writer.close()
        raise
    writer.finish()
    print(f"{writer.path}: {report}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    if args.overwrite and args.resume:
        raise ValueError(
            "pass --resume (continue an interrupted merge) or --overwrite (start again), not both"
        )
    if_exists = "overwrite" if args.overwrite else "resume" if args.resume else "error"
    out = merge_libraries(
        one_or_many(args.shards),
        args.output,
        if_exists=if_exists,
        progress=show_progress(args),
        allow_partial=args.allow_partial,
    )
    print(f"merged into {out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    lib = ProposalLibrary.open(one_or_many(args.library))
    info = lib.info
    info["n_failures"] = len(lib.failures())
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    n = max(int(info.get("n_images") or 0), 1)
    lines = [
        f"library   {lib.path}",
        f"format    {info.get('format')} v{info.get('format_version')}, {info.get('state')}",
        f"images    {info.get('n_images')}"
        + (f"  ({info['n_failures']} failed)" if info["n_failures"] else ""),
        f"masks     {info.get('n_masks', '?')}",
        f"bytes     {info['bytes']:,} ({info['bytes'] / n / 1024:.1f} KiB/image)",
        f"generator {info.get('generator')}  model {info.get('model')}",
        f"checkpoint sha256 {info.get('checkpoint_sha256')}",
        f"params    {json.dumps(info.get('params'), sort_keys=True)}",
        f"created   {info.get('created_at')} by samrefine {info.get('samrefine_version')}",
    ]
    if info.get("shards"):
        lines.append(f"shards    {len(info['shards'])}")
    print("\n".join(lines))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    report = verify_library(one_or_many(args.library), deep=args.deep, progress=show_progress(args))
    print(report)
    if not report.ok:
        print(
            f"samrefine verify: {len(report.errors)} problem(s); first: {report.errors[0]}",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    lib = ProposalLibrary.open(args.library)
    progress = show_progress(args)
    if args.format == "coco":
        n = coco_io.export_coco(lib, args.output, progress=progress)
        print(f"wrote {n} masks to {args.output}")
    elif args.format == "sa1b":
        n = im.export_sa1b(lib, args.output, progress=progress)
        print(f"wrote {n} SA-1B files to {args.output}")
    else:
        if not args.refs:
            raise ValueError("--format semires needs --refs refs(<splitBy>).p")
        n = semires_io.export_semires(lib, args.output, args.refs, progress=progress)
        print(f"wrote {n} per-referent files to {args.output}")
    return 0


# --------------------------------------------------------------------------------------------
# parsers
# --------------------------------------------------------------------------------------------


def _add_build(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "build",
        help="generate a proposal library over a folder of images",
        description="Run a mask generator over images and write a library. Re-running the same "
        "command resumes an interrupted build. Under torchrun each rank writes its "
        "own shard (RANK/WORLD_SIZE); --shard i/n does the same for array jobs. "
        "Merge shards with `samrefine merge`.",
    )
    b.add_argument("output", help="library file to write (e.g. refcoco_sam_vit_h.srlib)")
    b.add_argument("--images", required=True, help="folder of the image files")
    src = b.add_argument_group("which images (one of)")
    src.add_argument("--ids", help="file of image ids (one a line, or a JSON list)")
    src.add_argument("--refs", help="RefCOCO refs(<splitBy>).p: the images of its referents")
    src.add_argument(
        "--split",
        default="train",
        help="split of --refs to take (default train; 'all' for every split)",
    )
    src.add_argument("--instances", help="instances.json: file names (and, alone, the ids)")
    b.add_argument(
        "--file-pattern",
        default="COCO_train2014_{image_id:012d}.jpg",
        help="image file name from its id (default %(default)s)",
    )
    g = b.add_argument_group("generator")
    g.add_argument(
        "--generator",
        default="sam",
        help="registered generator (sam, sam2, classical), a factory "
        "MODULE:FUNCTION or FILE.py:FUNCTION, or the name of an installed "
        "'samrefine.generators' entry point (default sam)",
    )
    g.add_argument("--checkpoint", help="sam/sam2 checkpoint file (SHA-256 is recorded)")
    g.add_argument("--model-type", help="sam architecture: vit_h (default), vit_l, vit_b")
    g.add_argument("--config", help="sam2 model config, e.g. configs/sam2.1/sam2.1_hiera_l.yaml")
    g.add_argument(
        "--model-factory", help="MODULE:FUNCTION or FILE.py:FUNCTION returning a prebuilt model"
    )
    g.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    g.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="generator parameter (JSON value), repeatable, e.g. points_per_side=16; "
        "checked (name, type, range) before anything runs",
    )
    b.add_argument("--shard", help="i/n: build only shard i of n (default from RANK/WORLD_SIZE)")
    b.add_argument("--retries", type=int, default=1, help="extra attempts per failed image")
    b.add_argument(
        "--allow-failures",
        action="store_true",
        help="finish the library even if some images failed",
    )
    b.add_argument(
        "--fail-fast",
        type=int,
        default=FAIL_FAST,
        metavar="N",
        help="stop when the first N images all fail (a wrong folder, file pattern or "
        "parameter; default %(default)s; 0: off); a library this run created is then removed",
    )
    b.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes generating images in parallel into the one library (default 1); "
        "for CPU generators such as classical (2 keeps two cores busy). For GPUs run one "
        "process per GPU as shards (torchrun, srun) instead",
    )
    b.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    b.add_argument(
        "--compression",
        choices=("none", "zlib"),
        default="zlib",
        help="record compression (default zlib: about half the bytes)",
    )
    b.add_argument("--limit", type=int, help="only the first N ids (sorted), for a trial run")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_cmd_build)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register build, import, merge, info, verify and export."""
    _add_build(sub)
    i = sub.add_parser(
        "import",
        help="convert existing proposals into a library",
        description="Formats: sa1b (per-image SA-1B JSON), amg "
        "(<image_id>.json lists of SamAutomaticMaskGenerator "
        "records), semires (SemiRES sam_rle_mask folder + --refs), "
        "coco (a COCO results-style RLE JSON list). Re-running "
        "resumes an interrupted import.",
    )
    i.add_argument("output", help="library file to write")
    i.add_argument("source", nargs="+", help="input folder or files")
    i.add_argument("--format", required=True, choices=("sa1b", "amg", "semires", "coco"))
    i.add_argument("--refs", help="refs(<splitBy>).p mapping referents to images (semires)")
    i.add_argument(
        "--instances", help="instances.json: sizes of images without masks (semires, amg)"
    )
    i.add_argument(
        "--on-conflict",
        choices=("first", "error"),
        default="first",
        help="semires: referents of one image with different proposals",
    )
    i.add_argument("--generator", help="generator name to record (default sam)")
    i.add_argument("--model", help="model name to record, e.g. vit_h")
    i.add_argument("--compression", choices=("none", "zlib"), default="zlib")
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--no-progress", action="store_true")
    i.set_defaults(func=_cmd_import)

    m = sub.add_parser("merge", help="merge the shards of one build into one library")
    m.add_argument("output", help="merged library file")
    m.add_argument("shards", nargs="+", help="shard files or a glob pattern")
    m.add_argument(
        "--resume",
        action="store_true",
        help="continue a merge that was interrupted (OUTPUT exists, unfinished)",
    )
    m.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    m.add_argument(
        "--allow-partial",
        action="store_true",
        help="merge inputs that are not exactly shards 0..n-1 of one build (a shard missing, "
        "shards of two builds with the same settings, separate libraries)",
    )
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=_cmd_merge)

    f = sub.add_parser("info", help="print a library's provenance and size")
    f.add_argument("library", nargs="+", help="library file, shard files or a glob pattern")
    f.add_argument("--json", action="store_true", help="machine-readable output")
    f.set_defaults(func=_cmd_info)

    v = sub.add_parser(
        "verify",
        help="check a library's integrity and checksums",
        description="Exit status 0: intact; 1: damaged (problems are listed).",
    )
    v.add_argument("library", nargs="+", help="library file, shard files or a glob pattern")
    v.add_argument("--deep", action="store_true", help="also recompute areas and boxes")
    v.add_argument("--no-progress", action="store_true")
    v.set_defaults(func=_cmd_verify)

    e = sub.add_parser("export", help="write a library as COCO RLE JSON, SA-1B or SemiRES files")
    e.add_argument("library", help="library file (or shard glob)")
    e.add_argument("output", help="JSON file (coco) or folder (sa1b, semires)")
    e.add_argument("--format", choices=("coco", "sa1b", "semires"), default="coco")
    e.add_argument("--refs", help="refs(<splitBy>).p (semires: one file per referent)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_cmd_export)
