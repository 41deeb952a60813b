"""Generator parameters are checked at construction, and any factory can be named (issue 12)."""

from __future__ import annotations

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


def test_build_stops_when_the_first_images_all_fail(tmp_path):
    from samrefine.library import ProposalLibrary, build_library

    images = tmp_path / "images"
    images.mkdir()
    with pytest.raises(RuntimeError, match="first 5 images all failed.*FileNotFoundError"):
        build_library(
            tmp_path / "x.srlib",
            range(100),
            Generator("g", two_boxes()),
            images=images,
            file_pattern="{image_id}.jpg",
            fail_fast=5,
            progress=False,
        )
    lib = ProposalLibrary.open(tmp_path / "x.srlib")
    assert len(lib.failures()) == 5 and len(lib) == 0
    lib.close()
    # the writer was closed: the run can be repeated (resumed) at once
    got = build_library(
        tmp_path / "x.srlib",
        range(3),
        Generator("g", two_boxes()),
        load=lambda k: np.zeros((5, 5, 3), np.uint8),
        progress=False,
    )
    assert got.finished and got.added == 3


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
