"""refs(unc).p files are read without running code from them (issue 14)."""

from __future__ import annotations

import os
import pickle

import pytest

from samrefine.library import LibraryError, UnsafePickleError, load_refs, read_refs_pickle

REFS = [
    {
        "ref_id": 0,
        "ann_id": 5,
        "image_id": 9,
        "split": "train",
        "category_id": 1,
        "sent_ids": [0, 1],
        "sentences": [
            {"sent": "the man on the left", "raw": "Man", "tokens": ["the", "man"], "sent_id": 0}
        ],
    },
    {
        "ref_id": 1,
        "ann_id": 6,
        "image_id": 9,
        "split": "val",
        "category_id": 1,
        "sent_ids": [2],
        "sentences": [{"sent": "café sign", "sent_id": 2}],
    },
]


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_plain_refs_load_in_every_protocol(tmp_path, protocol):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(
        pickle.dumps(
            REFS
            + [
                {
                    "ref_id": 2,
                    "image_id": 3,
                    "split": "train",
                    "boxes": (1.5, 2),
                    "ids": {1, 2},
                    "b": b"\x00",
                }
            ],
            protocol=protocol,
        )
    )
    refs = load_refs(path, split=None)
    assert refs[:2] == REFS and refs[2]["ids"] == {1, 2} and refs[2]["b"] == b"\x00"
    assert [r["ref_id"] for r in load_refs(path)] == [0, 2]


def test_crafted_refs_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(REFS + [_Evil(str(marker))], protocol=2))
    # the file really would run the command with pickle.load
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p.*posix\.system|system"):
        load_refs(path)
    with pytest.raises(UnsafePickleError):
        read_refs_pickle(path)
    assert not marker.exists()


def test_not_a_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(LibraryError, match="not a readable refs pickle"):
        load_refs(path)
    path.write_bytes(pickle.dumps({"not": "a list"}))
    with pytest.raises(LibraryError, match="list of refs"):
        load_refs(path)
