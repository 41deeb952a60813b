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
