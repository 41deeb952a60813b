"""The ``samrefine`` command line. ``samrefine --help`` lists the commands.

Every command prints one line ``samrefine <command>: error: <reason>`` and exits with status 2
when it cannot do its work; ``verify`` exits 1 when a library is damaged and ``build`` exits 1
when some images failed (the library is then left resumable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["build_parser", "main"]


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.photo, size=args.size, samples=args.samples, seed=args.seed)
    return 0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _parse_params(items) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _load_factory(spec: str):
    """``module:attr`` or ``path/to/file.py:attr`` to the callable it names."""
    import importlib
    import importlib.util

    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"--model-factory takes MODULE:FUNCTION or FILE.py:FUNCTION, got {spec!r}")
    if target.endswith(".py"):
        if not os.path.isfile(target):
            raise FileNotFoundError(f"model factory file {target} does not exist")
        spec_ = importlib.util.spec_from_file_location("_samrefine_model_factory", target)
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise TypeError(f"{spec}: {attr} is not a callable in {target}")
    return fn


def _read_ids(path: str) -> list[int]:
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
        ids = data if isinstance(data, list) else None
    except json.JSONDecodeError:
        ids = None
    if ids is None:
        ids = [tok for tok in text.replace(",", " ").split()]
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: image ids must be integers, one a line (or a JSON list)") \
            from None


def _image_ids(args):
    """``(ids, file_names)`` from --ids / --refs / --instances."""
    from .library.importers import load_instances, load_refs

    names = {}
    if args.instances:
        inst = load_instances(args.instances)
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
    raise ValueError("give the images to process: --ids FILE, --refs refs(unc).p or "
                     "--instances instances.json")


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def _cmd_build(args) -> int:
    from .library.generate import build_library, get_generator

    ids, names = _image_ids(args)
    if args.limit is not None:
        ids = sorted(ids)[: args.limit]
    kw = _parse_params(args.param)
    if args.generator in ("sam", "sam2"):
        if args.checkpoint:
            kw["checkpoint"] = args.checkpoint
        if args.device:
            kw["device"] = args.device
        if args.model_factory:
            kw["model"] = _load_factory(args.model_factory)()
        if args.generator == "sam" and args.model_type:
            kw["model_type"] = args.model_type
        if args.generator == "sam2" and args.config:
            kw["config"] = args.config
    elif args.checkpoint or args.model_factory or args.model_type or args.config:
        raise ValueError(f"--checkpoint/--model-type/--config/--model-factory apply to the sam "
                         f"and sam2 generators, not {args.generator!r} (use --param)")
    gen = get_generator(args.generator, **kw)
    result = build_library(
        args.output, ids, gen, images=args.images, file_pattern=args.file_pattern,
        file_names=names, shard=args.shard, retries=args.retries,
        if_exists="overwrite" if args.overwrite else "resume",
        allow_failures=args.allow_failures, progress=not args.no_progress,
        compression=args.compression)
    print(result)
    if result.failures and not result.finished:
        first = next(iter(result.failures.items()))
        print(f"samrefine build: {len(result.failures)} images failed (first: image {first[0]}: "
              f"{first[1]}); re-run to retry them or pass --allow-failures", file=sys.stderr)
        return 1
    return 0


def _cmd_import(args) -> int:
    from .library import importers as im
    from .library.writer import create_library

    fmt = args.format
    sources = args.source
    writer = create_library(
        args.output, generator=args.generator or ("imported" if fmt == "coco" else "sam"),
        model=args.model, params={"imported_from": fmt},
        if_exists="overwrite" if args.overwrite else "resume", commit_every=256,
        compression=args.compression,
        extra={"sources": [os.path.abspath(s) for s in sources]})
    progress = not args.no_progress
    try:
        if fmt == "sa1b":
            report = im.import_sa1b(writer, _one_or_many(sources), progress=progress)
        elif fmt == "amg":
            report = im.import_amg(writer, _one_or_many(sources), progress=progress)
        elif fmt == "coco":
            if len(sources) != 1:
                raise ValueError("--format coco takes one JSON file")
            report = im.import_coco(writer, sources[0], progress=progress)
        else:
            if len(sources) != 1 or not args.refs:
                raise ValueError("--format semires takes one sam_rle_mask folder and --refs "
                                 "refs(<splitBy>).p")
            report = im.import_semires(writer, sources[0], args.refs, instances=args.instances,
                                       on_conflict=args.on_conflict, progress=progress)
    except BaseException:
        writer.close()
        raise
    writer.finish()
    print(f"{writer.path}: {report}")
    return 0


def _one_or_many(sources):
    return sources[0] if len(sources) == 1 else sources


def _cmd_merge(args) -> int:
    from .library.writer import merge_libraries

    shards = args.shards[0] if len(args.shards) == 1 else args.shards
    out = merge_libraries(shards, args.output,
                          if_exists="overwrite" if args.overwrite else "error",
                          progress=not args.no_progress)
    print(f"merged into {out}")
    return 0


def _cmd_info(args) -> int:
    from .library.reader import ProposalLibrary

    lib = ProposalLibrary.open(args.library[0] if len(args.library) == 1 else args.library)
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


def _cmd_verify(args) -> int:
    from .library.writer import verify_library

    src = args.library[0] if len(args.library) == 1 else args.library
    report = verify_library(src, deep=args.deep, progress=not args.no_progress)
    print(report)
    if not report.ok:
        print(f"samrefine verify: {len(report.errors)} problem(s); first: {report.errors[0]}",
              file=sys.stderr)
        return 1
    return 0


def _cmd_export(args) -> int:
    from .library import importers as im
    from .library.reader import ProposalLibrary

    lib = ProposalLibrary.open(args.library)
    progress = not args.no_progress
    if args.format == "coco":
        n = im.export_coco(lib, args.output, progress=progress)
        print(f"wrote {n} masks to {args.output}")
    elif args.format == "sa1b":
        n = im.export_sa1b(lib, args.output, progress=progress)
        print(f"wrote {n} SA-1B files to {args.output}")
    else:
        if not args.refs:
            raise ValueError("--format semires needs --refs refs(<splitBy>).p")
        n = im.export_semires(lib, args.output, args.refs, progress=progress)
        print(f"wrote {n} per-referent files to {args.output}")
    return 0


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samrefine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="refine corrupted pseudo-labels on a real photo; print a table")
    d.add_argument("--photo", default="coffee", help="skimage.data photo name (default coffee)")
    d.add_argument("--size", type=int, default=480, help="model input size (default 480)")
    d.add_argument("--samples", type=int, default=8)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser(
        "build", help="generate a proposal library over a folder of images",
        description="Run a mask generator over images and write a library. Re-running the same "
                    "command resumes an interrupted build. Under torchrun each rank writes its "
                    "own shard (RANK/WORLD_SIZE); --shard i/n does the same for array jobs. "
                    "Merge shards with `samrefine merge`.")
    b.add_argument("output", help="library file to write (e.g. refcoco_sam_vit_h.srlib)")
    b.add_argument("--images", required=True, help="folder of the image files")
    src = b.add_argument_group("which images (one of)")
    src.add_argument("--ids", help="file of image ids (one a line, or a JSON list)")
    src.add_argument("--refs", help="RefCOCO refs(<splitBy>).p: the images of its referents")
    src.add_argument("--split", default="train",
                     help="split of --refs to take (default train; 'all' for every split)")
    src.add_argument("--instances", help="instances.json: file names (and, alone, the ids)")
    b.add_argument("--file-pattern", default="COCO_train2014_{image_id:012d}.jpg",
                   help="image file name from its id (default %(default)s)")
    g = b.add_argument_group("generator")
    g.add_argument("--generator", default="sam",
                   help="registered generator: sam, sam2, classical (default sam)")
    g.add_argument("--checkpoint", help="sam/sam2 checkpoint file (SHA-256 is recorded)")
    g.add_argument("--model-type", help="sam architecture: vit_h (default), vit_l, vit_b")
    g.add_argument("--config", help="sam2 model config, e.g. configs/sam2.1/sam2.1_hiera_l.yaml")
    g.add_argument("--model-factory",
                   help="MODULE:FUNCTION or FILE.py:FUNCTION returning a prebuilt model")
    g.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="generator parameter (JSON value), repeatable, e.g. points_per_side=16")
    b.add_argument("--shard", help="i/n: build only shard i of n (default from RANK/WORLD_SIZE)")
    b.add_argument("--retries", type=int, default=1, help="extra attempts per failed image")
    b.add_argument("--allow-failures", action="store_true",
                   help="finish the library even if some images failed")
    b.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    b.add_argument("--compression", choices=("none", "zlib"), default="zlib",
                   help="record compression (default zlib: about half the bytes)")
    b.add_argument("--limit", type=int, help="only the first N ids (sorted), for a trial run")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=_cmd_build)

    i = sub.add_parser("import", help="convert existing proposals into a library",
                       description="Formats: sa1b (per-image SA-1B JSON), amg "
                                   "(<image_id>.json lists of SamAutomaticMaskGenerator "
                                   "records), semires (SemiRES sam_rle_mask folder + --refs), "
                                   "coco (a COCO results-style RLE JSON list).")
    i.add_argument("output", help="library file to write")
    i.add_argument("source", nargs="+", help="input folder or files")
    i.add_argument("--format", required=True, choices=("sa1b", "amg", "semires", "coco"))
    i.add_argument("--refs", help="refs(<splitBy>).p mapping referents to images (semires)")
    i.add_argument("--instances", help="instances.json, sizes of images without masks")
    i.add_argument("--on-conflict", choices=("first", "error"), default="first",
                   help="semires: referents of one image with different proposals")
    i.add_argument("--generator", help="generator name to record (default sam)")
    i.add_argument("--model", help="model name to record, e.g. vit_h")
    i.add_argument("--compression", choices=("none", "zlib"), default="zlib")
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--no-progress", action="store_true")
    i.set_defaults(func=_cmd_import)

    m = sub.add_parser("merge", help="merge the shards of one build into one library")
    m.add_argument("output", help="merged library file")
    m.add_argument("shards", nargs="+", help="shard files or a glob pattern")
    m.add_argument("--overwrite", action="store_true")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=_cmd_merge)

    f = sub.add_parser("info", help="print a library's provenance and size")
    f.add_argument("library", nargs="+", help="library file, shard files or a glob pattern")
    f.add_argument("--json", action="store_true", help="machine-readable output")
    f.set_defaults(func=_cmd_info)

    v = sub.add_parser("verify", help="check a library's integrity and checksums",
                       description="Exit status 0: intact; 1: damaged (problems are listed).")
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
    from .audit import add_cli as _add_audit_cli  # samrefine audit (issue 7)
    from .viz import add_cli as _add_viz_cli  # samrefine viz (issue 7)

    _add_audit_cli(sub)
    _add_viz_cli(sub)
    return p


def main(argv=None) -> int:
    import sqlite3

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyError as e:
        msg = e.args[0] if e.args else repr(e)
    except (ValueError, TypeError, OSError, RuntimeError, ImportError, sqlite3.Error) as e:
        msg = str(e) or type(e).__name__
    print(f"samrefine {args.command}: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
