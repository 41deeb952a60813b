"""Fixtures for the worked example (examples/semires_lavt): make it importable, write data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("pycocotools")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A 24-image synthetic RefCOCO in the refer layout (written once per session)."""
    from examples.semires_lavt.data.synthetic import write_synthetic_refcoco

    root = tmp_path_factory.mktemp("synthetic_refcoco")
    write_synthetic_refcoco(root, n_images=24, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tokenizer():
    from examples.semires_lavt.lavt.text import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def library(synthetic_root, tmp_path_factory) -> Path:
    """A classical-proposal library of the synthetic train images (built once per session)."""
    from examples.semires_lavt.data import load_refer
    from examples.semires_lavt.data.refer import IMAGE_DIR
    from samrefine.library import build_library, get_generator

    ids = load_refer(synthetic_root).train_image_ids()
    generator = get_generator("classical", scales=(64, 256), slic_segments=(), max_masks=40)
    path = tmp_path_factory.mktemp("classical_library") / "classical.srlib"
    return build_library(
        path, ids, generator, images=synthetic_root / IMAGE_DIR, progress=False
    ).path
