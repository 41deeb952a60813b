"""Generator parameters are checked at construction, and any factory can be named (issue 12)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from samrefine import Proposals
from samrefine.library import get_generator
from samrefine.library.generate import Generator


@pytest.mark.parametrize(
    "params, what",
    [
        ({"max_masks": -5}, "max_masks"),
        ({"max_masks": "abc"}, "max_masks"),
        ({"max_masks": 2.5}, "max_masks"),
        ({"scales": [64, -1]}, "scales"),
        ({"dedup_iou": 1.5}, "dedup_iou"),
        ({"min_area_frac": float("nan")}, "min_area_frac"),
        ({"smooth_radius": -1}, "smooth_radius"),
        ({"scales": [], "slic_segments": []}, "scales"),
    ],
)
def test_classical_params_refused_before_any_image(params, what):
    with pytest.raises(ValueError, match=what):
        get_generator("classical", **params)


def two_boxes(*, side: int = 2):
    """A factory importable by name: two square masks of ``side`` pixels."""

    def run(image):
        m = np.zeros((2, *image.shape[:2]), bool)
        m[0, :side, :side] = True
        m[1, -side:, -side:] = True
        return m

    return run


def test_module_factory_name_builds_a_generator():
    g = get_generator("test_library_generators:two_boxes", side=3)
    assert isinstance(g, Generator) and g.name == "test_library_generators:two_boxes"
    assert g.params == {"side": 3}
    got = g(np.zeros((6, 7, 3), np.uint8))
    assert isinstance(got, Proposals) and got.area.tolist() == [9, 9]
    with pytest.raises(KeyError, match="cannot import"):
        get_generator("no_such_module_xyz:factory")
    with pytest.raises(KeyError, match="no attribute"):
        get_generator("test_library_generators:missing")
    with pytest.raises(KeyError, match="module:factory"):
        get_generator("not-registered")


def _loader(good):
    """``load(key)``: a black 5x5 image for keys in ``good``, OSError for the others."""

    def load(key):
        if key not in good:
            raise OSError(f"cannot read image {key}")
        return np.zeros((5, 5, 3), np.uint8)

    return load


def test_build_stops_when_the_first_images_all_fail(tmp_path):
    from samrefine.library import ProposalLibrary, build_library

    images = tmp_path / "images"
    images.mkdir()
    gen = Generator("g", two_boxes())
    with pytest.raises(RuntimeError, match="first 5 images all failed, so nothing was built") as e:
        build_library(
            tmp_path / "x.srlib",
            range(100),
            gen,
            images=images,
            file_pattern="{image_id}.jpg",
            fail_fast=5,
            progress=False,
        )
    assert "image 0: FileNotFoundError" in str(e.value) and "fail_fast=0" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["images"]  # the library it created, and its lock
    # the writer was released: the run can be repeated at once
    got = build_library(tmp_path / "x.srlib", range(3), gen, load=_loader(range(3)), progress=False)
    assert got.finished and got.added == 3

    # a library that holds images already is kept, resumable, when a run's first images all fail
    out = tmp_path / "y.srlib"
    half = build_library(out, range(10), gen, load=_loader({0, 1}), fail_fast=0, progress=False)
    assert half.added == 2 and not half.finished
    with pytest.raises(RuntimeError, match="first 5 images all failed, so the build stopped"):
        build_library(out, range(10), gen, load=_loader(()), fail_fast=5, progress=False)
    with ProposalLibrary.open(out) as lib:
        assert lib.image_ids().tolist() == [0, 1]
        assert sorted(lib.failures()) == list(range(2, 10))

    # one image that works among the first ones is enough: the build goes on
    got = build_library(
        tmp_path / "z.srlib", range(6), gen, load=_loader({3}), fail_fast=4, progress=False
    )
    assert got.added == 1 and sorted(got.failures) == [0, 1, 2, 4, 5] and not got.finished
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="fail_fast must be an int >= 0"):
            build_library(tmp_path / "w.srlib", [1], gen, load=_loader({1}), fail_fast=bad)


def test_missing_extra_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sam2", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "sam2.automatic_mask_generator", None)
    with pytest.raises(ImportError, match=r'pip install "samrefine\[sam2\]"'):
        get_generator("sam2")


def test_build_loads_the_next_images_while_the_generator_runs(tmp_path):
    import threading

    from samrefine.library import ProposalLibrary, build_library

    ids = list(range(6))
    started = {k: threading.Event() for k in ids}

    def load(k):
        started[k].set()
        return np.full((6, 7, 3), 40 * k, np.uint8)

    overlapped = []

    def gen(image):
        k = int(image[0, 0, 0]) // 40
        if k + 1 in started:  # the next image is being loaded before this one is done
            overlapped.append(started[k + 1].wait(timeout=5))
        return image[None, ..., 0] > 100

    got = build_library(
        tmp_path / "p.srlib", ids, Generator("g", gen), load=load, prefetch=2, progress=False
    )
    assert overlapped == [True] * 5
    plain = build_library(
        tmp_path / "q.srlib",
        ids,
        Generator("g", lambda im: im[None, ..., 0] > 100),
        load=load,
        prefetch=0,
        progress=False,
    )
    a, b = ProposalLibrary.open(got.path), ProposalLibrary.open(plain.path)
    assert a.info["content_sha256"] == b.info["content_sha256"]
