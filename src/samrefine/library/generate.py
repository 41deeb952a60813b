"""Mask generators behind one registry, and the library build loop.

A *generator* turns one RGB image ``(H, W, 3)`` uint8 into :class:`~samrefine.Proposals` at the
image's size, and says what it is (name, model, checkpoint SHA-256, parameters) so the library
records its provenance. Registered:

``"sam"``
    ``segment_anything.SamAutomaticMaskGenerator`` with SAM's own defaults (every parameter
    settable), from a local checkpoint (``vit_h``, ``vit_l``, ``vit_b``) or a prebuilt model.
``"sam2"``
    ``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator`` from a config and checkpoint, or
    a prebuilt model.
``"classical"``
    :func:`~samrefine.library.classical.classical_proposals`, a contrast hierarchy of image
    regions (or the older multi-scale superpixels): not SAM; for demos and tests without a
    checkpoint.

Plug in your own::

    @register_generator("mine")
    def mine(**params):
        return lambda image: my_masks(image, **params)   # Proposals, SAM records or (N, H, W)
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..proposals import Proposals
from .format import LibraryFinishedError

__all__ = [
    "BuildResult",
    "Generator",
    "as_proposals",
    "build_library",
    "get_generator",
    "list_generators",
    "load_image",
    "register_generator",
]

log = logging.getLogger("samrefine.library")

#: Default ``fail_fast`` (``samrefine build --fail-fast``): stop when this many first images
#: of a run all fail.
FAIL_FAST = 20

_REGISTRY: dict[str, Callable[..., Generator]] = {}


class Generator:
    """A named mask generator with provenance.

    Parameters
    ----------
    name : str
        Registry name (``"sam"``, ``"classical"``, ...), stored as the library's ``generator``.
    fn : callable
        ``fn(image) -> masks`` for an ``(H, W, 3)`` uint8 RGB image; masks may be
        :class:`~samrefine.Proposals`, a list of ``SamAutomaticMaskGenerator`` records (any
        ``output_mode``), a list of pycocotools RLE dicts, a dense ``(N, H, W)`` array, or a
        ``transformers`` ``pipeline("mask-generation")`` output dict.
    model : str, optional
        Model name (e.g. ``"vit_h"``).
    checkpoint_sha256 : str, optional
        SHA-256 of the weights.
    params : mapping, optional
        Every setting that changes the masks (recorded; resumes must match).
    """

    def __init__(
        self,
        name: str,
        fn: Callable,
        *,
        model: str | None = None,
        checkpoint_sha256: str | None = None,
        params: Mapping | None = None,
    ):
        self.name = name
        self.fn = fn
        self.model = model
        self.checkpoint_sha256 = checkpoint_sha256
        self.params = dict(params or {})

    def __call__(self, image: np.ndarray) -> Proposals:
        """Masks of one image ``(H, W, 3)`` uint8 RGB, as Proposals at ``(H, W)``."""
        return as_proposals(self.fn(image), image.shape[:2])

    @property
    def provenance(self) -> dict:
        """Keyword arguments for :func:`~samrefine.library.writer.create_library`."""
        return {
            "generator": self.name,
            "model": self.model,
            "checkpoint_sha256": self.checkpoint_sha256,
            "params": self.params,
        }

    def __repr__(self) -> str:
        return f"Generator({self.name!r}, model={self.model!r})"


def as_proposals(masks, size) -> Proposals:
    """Convert a generator's output (see :class:`Generator`) to Proposals of ``size = (H, W)``."""
    if isinstance(masks, Proposals):
        out = masks
    elif isinstance(masks, Mapping) and ("masks" in masks or "rle_mask" in masks):
        out = Proposals.from_hf(masks, size=size)  # transformers mask-generation pipeline
    elif isinstance(masks, np.ndarray) or type(masks).__module__.startswith("torch"):
        arr = np.asarray(masks.detach().cpu() if hasattr(masks, "detach") else masks)
        out = Proposals.from_dense(arr) if arr.shape[0] else Proposals.empty(size)
    elif isinstance(masks, Sequence):
        if not masks:
            return Proposals.empty(size)
        first = masks[0]
        if isinstance(first, Mapping) and "segmentation" in first:
            out = Proposals.from_sam(masks, size)
        elif isinstance(first, Mapping) and "counts" in first:
            out = Proposals.from_rle(masks, size)
        else:
            raise TypeError(
                "a generator returned a list of "
                f"{type(first).__name__}; expected SAM records or RLE dicts"
            )
    else:
        raise TypeError(
            f"a generator returned {type(masks).__name__}; expected Proposals, SAM "
            "records, RLE dicts or an (N, H, W) array"
        )
    if out.size != tuple(size):
        raise ValueError(
            f"generator masks are {out.size[0]}x{out.size[1]} but the image is {size[0]}x{size[1]}"
        )
    return out


def register_generator(name: str, factory: Callable | None = None, *, overwrite: bool = False):
    """Register ``factory(**params) -> Generator or callable`` under ``name`` (a decorator
    when ``factory`` is omitted). Re-registering a name needs ``overwrite=True``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"generator name must be a non-empty str, got {name!r}")

    def deco(f):
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"generator {name!r} is already registered; pass overwrite=True")
        _REGISTRY[name] = f
        return f

    return deco(factory) if factory is not None else deco


def list_generators() -> list[str]:
    """Registered generator names."""
    return sorted(_REGISTRY)


def _import_factory(name: str) -> Callable:
    """``"package.module:factory"`` to the factory it names (for generators not registered in
    this process, e.g. named on the command line)."""
    import importlib

    module, _, attr = name.partition(":")
    if not module or not attr:
        raise KeyError(f"generator {name!r}: write 'package.module:factory'")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise KeyError(
            f"generator {name!r}: cannot import {module!r} ({e}); is it installed or on PYTHONPATH?"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise KeyError(f"generator {name!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise KeyError(f"generator {name!r}: {attr!r} is not callable")
    return obj


def get_generator(name: str, **params) -> Generator:
    """Build the generator registered as ``name`` with ``params``.

    ``name`` may also be ``"package.module:factory"``: the factory is imported and called with
    ``params`` (what ``samrefine build --generator package.module:factory`` does), and the name
    is recorded as the library's ``generator`` unless the factory returns a :class:`Generator`.

    Raises
    ------
    KeyError
        If ``name`` is neither registered nor an importable ``module:factory`` (the message
        lists the registered names).
    """
    if name in _REGISTRY:
        factory = _REGISTRY[name]
    elif ":" in name:
        factory = _import_factory(name)
    else:
        raise KeyError(
            f"unknown generator {name!r}; registered: {', '.join(list_generators())}"
            " (or name a factory as 'package.module:factory')"
        )
    made = factory(**params)
    if isinstance(made, Generator):
        return made
    if not callable(made):
        raise TypeError(
            f"generator factory {name!r} returned {type(made).__name__}, not a callable"
        )
    return Generator(name, made, params=params)


def _require(module: str, extra: str):
    """Import ``module`` or raise ImportError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f'{e}; the {extra!r} generator needs it: pip install "samrefine[{extra}]"'
        ) from e


def _device(device):
    import torch

    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _amg_params(cls, given: Mapping) -> dict:
    """Every parameter of an automatic mask generator class, defaults filled in."""
    sig = inspect.signature(cls.__init__)
    names = [p for p in sig.parameters if p not in ("self", "model", "kwargs")]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(
            f"unknown {cls.__name__} parameter(s) {unknown}; valid: {', '.join(names)}"
        )
    out = {p: sig.parameters[p].default for p in names}
    out.update(given)
    return out


def _model_name(model, default: str) -> str:
    return default if model is None else type(model).__name__


@register_generator("sam")
def sam_generator(
    *,
    checkpoint: str | None = None,
    model_type: str = "vit_h",
    model=None,
    device=None,
    **amg_params,
) -> Generator:
    """Segment Anything "segment everything" masks.

    Parameters
    ----------
    checkpoint : str, optional
        Local ``sam_vit_{h,l,b}_*.pth``; its SHA-256 is recorded. Needed unless ``model``.
    model_type : {"vit_h", "vit_l", "vit_b"}
        Architecture of ``checkpoint``.
    model : segment_anything.modeling.Sam, optional
        A prebuilt model (e.g. a custom or tiny one); then ``checkpoint`` is only recorded.
    device : str or torch.device, optional
        Default: CUDA (``LOCAL_RANK``) when available, else CPU.
    **amg_params
        Any ``SamAutomaticMaskGenerator`` argument (``points_per_side=32``,
        ``pred_iou_thresh=0.88``, ``stability_score_thresh=0.95``, ...); unset ones keep SAM's
        defaults, and all are recorded.
    """
    import torch

    sa = _require("segment_anything", "sam")
    SamAutomaticMaskGenerator, sam_model_registry = (
        sa.SamAutomaticMaskGenerator,
        sa.sam_model_registry,
    )

    from .writer import sha256_file

    params = _amg_params(SamAutomaticMaskGenerator, amg_params)
    sha = sha256_file(checkpoint) if checkpoint is not None else None
    dev = _device(device)
    if model is None:
        if checkpoint is None:
            raise ValueError(
                "the 'sam' generator needs checkpoint=<sam_vit_*.pth> (or a prebuilt model=)"
            )
        if model_type not in sam_model_registry or model_type == "default":
            raise ValueError(f"model_type={model_type!r}; choose vit_h, vit_l or vit_b")
        model = sam_model_registry[model_type](checkpoint=checkpoint)
        name = model_type
    else:
        name = _model_name(model, model_type)
    model = model.to(dev).eval()
    amg = SamAutomaticMaskGenerator(model, **params)

    def run(image):
        with torch.inference_mode():
            return amg.generate(image)

    return Generator("sam", run, model=name, checkpoint_sha256=sha, params=params)


@register_generator("sam2")
def sam2_generator(
    *,
    checkpoint: str | None = None,
    config: str = "configs/sam2.1/sam2.1_hiera_l.yaml",
    model=None,
    device=None,
    **amg_params,
) -> Generator:
    """SAM 2 "segment everything" masks (``pip install sam2``).

    Parameters
    ----------
    checkpoint : str, optional
        Local SAM 2 checkpoint (e.g. ``sam2.1_hiera_large.pt``); needed unless ``model``.
    config : str
        The ``sam2`` package's model config matching the checkpoint.
    model : sam2.modeling.sam2_base.SAM2Base, optional
        A prebuilt model.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    **amg_params
        Any ``SAM2AutomaticMaskGenerator`` argument; unset ones keep SAM 2's defaults.
    """
    import torch

    SAM2AutomaticMaskGenerator = _require(
        "sam2.automatic_mask_generator", "sam2"
    ).SAM2AutomaticMaskGenerator

    from .writer import sha256_file

    params = _amg_params(SAM2AutomaticMaskGenerator, amg_params)
    sha = sha256_file(checkpoint) if checkpoint is not None else None
    dev = _device(device)
    if model is None:
        if checkpoint is None:
            raise ValueError(
                "the 'sam2' generator needs checkpoint=<sam2*.pt> and config= "
                "(or a prebuilt model=)"
            )
        from sam2.build_sam import build_sam2

        model = build_sam2(config, checkpoint, device=str(dev))
        name = os.path.splitext(os.path.basename(config))[0]
    else:
        name = _model_name(model, "sam2")
    model = model.to(dev).eval()
    amg = SAM2AutomaticMaskGenerator(model, **params)

    def run(image):
        with torch.inference_mode():
            return amg.generate(image)

    return Generator("sam2", run, model=name, checkpoint_sha256=sha, params=params)


@register_generator("classical")
def classical_generator(**params) -> Generator:
    """Classical region proposals (:func:`~samrefine.library.classical.classical_proposals`);
    not SAM. ``params`` are that function's keyword arguments."""
    _require("skimage", "classical")
    from .classical import check_classical_params, classical_proposals, resolve_method

    sig = inspect.signature(classical_proposals)
    names = [p for p in sig.parameters if p != "image"]
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ValueError(
            f"unknown classical_proposals parameter(s) {unknown}; valid: {', '.join(names)}"
        )
    full = {p: sig.parameters[p].default for p in names} | params
    check_classical_params(**full)  # at construction: a build fails before its first image
    method = resolve_method(
        full["method"], full["scales"], full["slic_segments"], full["smooth_radius"]
    )
    model = "watershed-hierarchy" if method == "hierarchy" else "felzenszwalb+slic"
    return Generator(
        "classical", lambda image: classical_proposals(image, **full), model=model, params=full
    )


# --------------------------------------------------------------------------------------------
# build loop
# --------------------------------------------------------------------------------------------


def load_image(path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (Pillow; EXIF orientation is not applied, as in
    the reference code, which reads with OpenCV)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _prefetched(load: Callable, keys: list, prefetch: int):
    """``(key, image or None, exception or None)`` for ``keys`` in order, with up to
    ``prefetch`` images being loaded ahead in threads."""
    if prefetch <= 0:
        for key in keys:
            try:
                yield key, load(key), None
            except Exception as e:
                yield key, None, e
        return
    with ThreadPoolExecutor(prefetch, thread_name_prefix="samrefine-load") as pool:
        yield from _in_order(pool, load, keys, prefetch + 1)
        # leaving early (an exception in the consumer) waits for the few loads in flight


_END = object()


def _in_order(pool, fn: Callable, keys: list, depth: int):
    """``(key, fn(key), None)`` or ``(key, None, exception)`` for every key, in ``keys``
    order, with up to ``depth`` calls submitted to ``pool`` ahead of the one yielded."""
    ahead: deque = deque()
    it = iter(keys)
    for key in it:
        ahead.append((key, pool.submit(fn, key)))
        if len(ahead) >= depth:
            break
    while ahead:
        key, fut = ahead.popleft()
        nxt = next(it, _END)
        if nxt is not _END:
            ahead.append((nxt, pool.submit(fn, nxt)))
        try:
            yield key, fut.result(), None
        except Exception as e:  # the call's error (from a worker: pickled back, or it died)
            yield key, None, e


# (load, generator) of the build whose worker processes this process serves (set in each
# forked worker by _serve; a fork inherits the objects, so lambdas and models need no pickling)
_WORK: tuple[Callable, Callable] | None = None


def _serve(load: Callable, generator: Callable) -> None:
    """Initialise a worker process: its build, and one torch thread (as DataLoader workers:
    each worker is one core's worth of work, and OpenMP pools do not survive a fork)."""
    global _WORK
    _WORK = (load, generator)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _work(key) -> tuple[tuple[int, int], Proposals]:
    """In a worker process: ``(image size, proposals)`` of one image."""
    assert _WORK is not None
    load, generator = _WORK
    image = load(key)
    return image.shape[:2], generator(image)


def _first_attempts(load: Callable, generator: Callable, keys: list, prefetch: int, workers: int):
    """``(key, (size, proposals) or None, exception or None)``: each image's first attempt,
    in ``keys`` order; in ``workers`` forked processes (each loads and generates whole images,
    at most two per worker in flight) or, with one worker, here with ``prefetch`` images
    decoded ahead in threads."""
    if workers <= 1:
        for key, image, error in _prefetched(load, keys, prefetch):
            if error is None:
                try:
                    yield key, (image.shape[:2], generator(image)), None
                    continue
                except Exception as e:
                    error = e
            yield key, None, error
        return
    fork = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        workers, mp_context=fork, initializer=_serve, initargs=(load, generator)
    )
    try:
        yield from _in_order(pool, _work, keys, 2 * workers)
    finally:  # also when the build stops early: drop the queued images, wait for the rest
        pool.shutdown(wait=True, cancel_futures=True)


def _give_up(writer, remove: bool, failures: Mapping) -> None:
    """Stop a build whose first images all failed: the library is removed when this build
    created it and appended nothing (else closed, resumable); raises RuntimeError."""
    path = writer.path
    if remove:
        writer.discard()
        outcome = "so nothing was built"
    else:
        writer.close()
        outcome = f"so the build stopped ({path} stays resumable)"
    key, err = next(iter(failures.items()))
    raise RuntimeError(
        f"{path}: the first {len(failures)} images all failed, {outcome}; first: image "
        f"{key!r}: {err}. Check the image folder, the file pattern and the generator's "
        "parameters, or pass fail_fast=0 to try every image"
    )


@dataclass
class BuildResult:
    """What :func:`build_library` did."""

    path: str
    total: int
    added: int
    skipped: int
    failures: dict = field(default_factory=dict)
    finished: bool = False
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.added / self.seconds if self.seconds > 0 else 0.0
        state = "finished" if self.finished else "unfinished (resumable)"
        return (
            f"{self.path}: {self.added} images added, {self.skipped} already there, "
            f"{len(self.failures)} failed, {self.total} in this build; {state}; "
            f"{self.seconds:.1f} s ({rate:.2f} img/s)"
        )


def build_library(
    output,
    image_ids,
    generator,
    *,
    images=None,
    file_pattern: str = "COCO_train2014_{image_id:012d}.jpg",
    file_names: Mapping | None = None,
    load: Callable | None = None,
    shard=None,
    if_exists: str = "resume",
    retries: int = 1,
    allow_failures: bool = False,
    progress: bool = True,
    compression: str = "zlib",
    commit_every: int = 1,
    extra: Mapping | None = None,
    fail_fast: int = FAIL_FAST,
    prefetch: int = 2,
    workers: int = 1,
) -> BuildResult:
    """Generate proposals for ``image_ids`` and write them to a library (resumable, shardable).

    Parameters
    ----------
    output : str or os.PathLike
        Library file. With ``shard = (i, n)`` this process writes
        :func:`~samrefine.library.writer.shard_path` ``(output, i, n)`` instead.
    image_ids : iterable of int or str
        Images to process: COCO ids or names (``"2007_000032"``; see
        :mod:`samrefine.library.keys`), one type. Duplicates are folded. A shard takes every
        ``n``-th sorted key.
    generator : Generator or str
        A :class:`Generator` or a registered name (built with default parameters).
    images : str or os.PathLike, optional
        Folder of the image files.
    file_pattern : str
        File name of an image, formatted with ``image_id`` (RefCOCO's COCO train2014 names by
        default; ``"{image_id}.jpg"`` for name keys). Ignored for ids in ``file_names``.
    file_names : mapping of int to str, optional
        Image id to file name (e.g. from ``instances.json``).
    load : callable, optional
        ``load(image_id) -> (H, W, 3) uint8`` replacing file loading.
    shard : "i/n" or (i, n), optional
        Default: from the launcher's environment (:func:`~samrefine.library.writer.
        shard_from_env`: ``RANK``/``WORLD_SIZE``, Slurm ``srun`` tasks or job arrays), else no
        sharding.
    if_exists : {"resume", "error", "overwrite"}
        ``"resume"`` skips images already committed by an earlier (interrupted) run.
    retries : int
        Extra attempts per image after a failure; an image that still fails is logged, recorded
        in the library's ``failures`` table and skipped.
    allow_failures : bool
        Finish the library even if some images failed (otherwise it is left resumable).
    progress : bool
        Show a tqdm bar (images/s, ETA).
    fail_fast : int
        Stop with a ``RuntimeError`` when the first ``fail_fast`` images of this run all fail
        (a wrong folder or file pattern, a bad parameter), instead of failing every image one
        by one. A library this call created is then removed again (nothing was built); one
        that existed stays as it was, resumable. ``0`` disables the check.
    prefetch : int
        Images decoded ahead in a pool of this many threads while the generator runs (JPEG
        decoding releases the GIL), so the generator does not wait on loading; ``0`` loads in
        the loop. With ``workers > 1`` the workers load their own images.
    workers : int
        Processes that load and generate images in parallel (forked, so the generator needs
        no pickling; this process writes every record, in key order, into the one library).
        For CPU generators such as ``"classical"``, whose Python code holds the GIL: ``2``
        keeps two cores busy. Leave it at 1 for a CUDA generator (a forked process cannot use
        CUDA set up before the fork): run one process per GPU as shards instead. POSIX only.

    Returns
    -------
    BuildResult
    """
    from tqdm.auto import tqdm

    from .writer import (
        build_identity,
        create_library,
        parse_shard,
        shard_from_env,
        shard_ids,
        shard_path,
    )

    if isinstance(generator, str):
        generator = get_generator(generator)
    if not isinstance(generator, Generator):
        raise TypeError(
            f"generator must be a Generator or a registered name, got {type(generator).__name__}"
        )
    if load is None and images is None:
        raise ValueError("pass images=<folder of image files> (or load=callable)")
    for name, value in (
        ("fail_fast", fail_fast),
        ("prefetch", prefetch),
        ("retries", retries),
        ("workers", workers),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1 (1: generate in this process), got {workers}")
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"workers={workers} needs forked processes, which this platform lacks; use "
            "workers=1, or run one build process per shard (shard='i/n', --shard i/n)"
        )
    if images is not None and not os.path.isdir(images):
        raise FileNotFoundError(f"image folder {images} does not exist")
    shard = parse_shard(shard) if shard is not None else shard_from_env()
    image_ids = list(image_ids)
    ids = shard_ids(image_ids, *shard) if shard else shard_ids(image_ids, 0, 1)
    path = shard_path(output, *shard) if shard else os.fspath(output)
    if shard:
        log.info(
            "building shard %d of %d (%d of %d images) into %s",
            shard[0],
            shard[1],
            len(ids),
            len(set(image_ids)),
            path,
        )
    names = dict(file_names or {})
    if load is None:
        for key in ids:
            if key not in names:
                try:
                    file_pattern.format(image_id=key, id=key)
                except (ValueError, KeyError, IndexError) as e:
                    raise ValueError(
                        f"file_pattern {file_pattern!r} cannot name image {key!r} "
                        f"({e}); for name keys use e.g. '{{image_id}}.jpg'"
                    ) from None
                break

    def default_load(key):
        name = names.get(key) or file_pattern.format(image_id=key, id=key)
        return load_image(os.path.join(images, name))

    load = load or default_load
    t0 = time.perf_counter()
    created = if_exists == "overwrite" or not os.path.exists(path)
    try:
        build_id = (
            build_identity(
                {**generator.provenance, "compression": compression}, image_ids, shard[1]
            )
            if shard
            else None
        )
        writer = create_library(
            path,
            **generator.provenance,
            shard=shard,
            if_exists=if_exists,
            compression=compression,
            commit_every=commit_every,
            extra=extra,
            build_id=build_id,
        )
    except LibraryFinishedError:
        log.info("%s is already finished; nothing to do", path)
        return BuildResult(path, len(ids), 0, len(ids), finished=True)
    todo = [k for k in ids if k not in writer]
    skipped = len(ids) - len(todo)
    failures: dict = {}
    added = 0
    gave_up = False
    bar = tqdm(
        total=len(ids),
        initial=skipped,
        unit="img",
        desc=os.path.basename(path),
        disable=not progress,
        smoothing=0.05,
    )
    try:
        for key, made, first_error in _first_attempts(load, generator, todo, prefetch, workers):
            err = None
            for attempt in range(1 + retries):
                try:
                    if attempt == 0:
                        if first_error is not None:
                            raise first_error
                        size, props = made
                    else:
                        image = load(key)
                        size, props = image.shape[:2], generator(image)
                    writer.append(key, props, image_size=size)
                    err = None
                    break
                except (KeyboardInterrupt, SystemExit, LibraryFinishedError):
                    raise
                except Exception as e:
                    err = f"{type(e).__name__}: {e}"
                    log.warning("image %r failed (attempt %d): %s", key, attempt + 1, err)
            if err is None:
                added += 1
            else:
                failures[key] = err
                writer.record_failure(key, err, attempts=1 + retries)
                if fail_fast and added == 0 and len(failures) >= fail_fast:
                    gave_up = True
                    break
            bar.update(1)
    except BaseException:
        writer.close()  # commits what was appended and releases the writer lock
        raise
    finally:
        bar.close()
    if gave_up:
        _give_up(writer, created and not skipped, failures)
    finished = False
    if not failures or allow_failures:
        writer.finish()
        finished = True
    else:
        writer.close()
    return BuildResult(path, len(ids), added, skipped, failures, finished, time.perf_counter() - t0)
