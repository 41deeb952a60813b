"""The command line: build (tiny SAM, classical, shards), import, merge, info, verify, export."""

import json
import pickle

import numpy as np
import pycocotools.mask as pm
import pytest
from PIL import Image

from samrefine.cli import build_parser, main
from samrefine.library import ProposalLibrary

COMMANDS = ["build", "import", "merge", "info", "verify", "export", "demo"]


def _photos(folder, ids, size=(36, 52), pattern="{image_id}.png"):
    from test_library_generate import small_photo

    folder.mkdir(exist_ok=True)
    names = ["coffee", "astronaut", "chelsea", "rocket"]
    for n, key in enumerate(ids):
        img = small_photo(names[n % 4], (size[0] + n, size[1] - n))
        Image.fromarray(img).save(folder / pattern.format(image_id=key))
    return folder


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    assert "usage: samrefine " + command in capsys.readouterr().out


def test_tiny_sam_build_end_to_end(tmp_path, capsys):
    from segment_anything import SamAutomaticMaskGenerator
    from test_library_generate import TINY_PARAMS, tiny_sam

    images = _photos(tmp_path / "img", [7, 3])
    (tmp_path / "ids.txt").write_text("7\n3\n")
    factory = tmp_path / "factory.py"
    factory.write_text("from test_library_generate import tiny_sam\n")
    out = tmp_path / "tiny.srlib"
    argv = [
        "build",
        str(out),
        "--images",
        str(images),
        "--ids",
        str(tmp_path / "ids.txt"),
        "--file-pattern",
        "{image_id}.png",
        "--generator",
        "sam",
        "--device",
        "cpu",
        "--model-factory",
        f"{factory}:tiny_sam",
        "--no-progress",
    ]
    argv += [f"--param={k}={v}" for k, v in TINY_PARAMS.items()]
    assert main(argv) == 0
    assert "2 images added" in capsys.readouterr().out
    lib = ProposalLibrary.open(out)
    assert lib.info["generator"] == "sam" and lib.info["params"]["pred_iou_thresh"] == 0.0
    amg = SamAutomaticMaskGenerator(tiny_sam(), **TINY_PARAMS)
    for key in (3, 7):
        img = np.asarray(Image.open(images / f"{key}.png").convert("RGB"))
        direct = np.stack([r["segmentation"] for r in amg.generate(img)])
        assert np.array_equal(lib[key].to_dense(), direct)
    # re-running the finished build does nothing and succeeds
    assert main(argv) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images    2" in text and "generator sam" in text
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 2
    assert main(["verify", str(out), "--deep", "--no-progress"]) == 0
    assert main(["export", str(out), str(tmp_path / "c.json"), "--no-progress"]) == 0
    anns = json.loads((tmp_path / "c.json").read_text())
    for key in (3, 7):
        mine = [a["segmentation"] for a in anns if a["image_id"] == key]
        got = pm.decode([{"size": a["size"], "counts": a["counts"].encode()} for a in mine])
        assert np.array_equal(got.transpose(2, 0, 1).astype(bool), lib[key].to_dense())


def test_refs_build_failures_shards_and_merge(tmp_path, capsys):
    refs = [
        {"ref_id": 10 + i, "image_id": iid, "split": split, "sentences": []}
        for i, (iid, split) in enumerate(
            [(1, "train"), (1, "train"), (2, "train"), (4, "train"), (5, "val")]
        )
    ]
    refs_path = tmp_path / "refs(unc).p"
    refs_path.write_bytes(pickle.dumps(refs))
    pattern = "COCO_train2014_{image_id:012d}.jpg"
    images = _photos(tmp_path / "img", [1, 2], pattern=pattern)
    base = [
        "--images",
        str(images),
        "--refs",
        str(refs_path),
        "--generator",
        "classical",
        "--param",
        "max_masks=30",
        "--no-progress",
        "--retries",
        "0",
    ]
    # image 4 is missing: reported, not fatal; the library stays resumable; exit status 1
    assert main(["build", str(tmp_path / "a.srlib")] + base) == 1
    err = capsys.readouterr().err
    assert "1 images failed (first: image 4" in err
    _photos(images, [4], pattern=pattern)
    assert main(["build", str(tmp_path / "a.srlib")] + base) == 0
    assert "1 images added, 2 already there" in capsys.readouterr().out
    single = ProposalLibrary.open(tmp_path / "a.srlib")
    assert single.image_ids().tolist() == [1, 2, 4]  # train split only (5 is val)
    for i in range(2):
        assert main(["build", str(tmp_path / "s.srlib"), "--shard", f"{i}/2"] + base) == 0
    assert (
        main(
            ["merge", str(tmp_path / "m.srlib"), str(tmp_path / "s-shard-*.srlib"), "--no-progress"]
        )
        == 0
    )
    merged = ProposalLibrary.open(tmp_path / "m.srlib")
    assert merged.info["content_sha256"] == single.info["content_sha256"]
    assert main(["info", str(tmp_path / "s-shard-*.srlib")]) == 0
    assert "shards    2" in capsys.readouterr().out


def test_import_and_export_semires(tmp_path):
    from test_library_io import IMAGES, _refs, _write_semires

    refs = _refs()
    (tmp_path / "refs.p").write_bytes(pickle.dumps(refs))
    _write_semires(tmp_path / "sam_rle_mask", refs)
    out = tmp_path / "r.srlib"
    assert (
        main(
            [
                "import",
                str(out),
                str(tmp_path / "sam_rle_mask"),
                "--format",
                "semires",
                "--refs",
                str(tmp_path / "refs.p"),
                "--model",
                "vit_h",
                "--no-progress",
            ]
        )
        == 0
    )
    lib = ProposalLibrary.open(out)
    assert lib.info["model"] == "vit_h"
    for key, dense in IMAGES.items():
        assert np.array_equal(lib[key].to_dense(), dense)
    assert (
        main(
            [
                "export",
                str(out),
                str(tmp_path / "back"),
                "--format",
                "semires",
                "--refs",
                str(tmp_path / "refs.p"),
                "--no-progress",
            ]
        )
        == 0
    )
    for r in refs[:6]:
        name = f"{r['ref_id']}.json"
        assert json.loads((tmp_path / "back" / name).read_text()) == json.loads(
            (tmp_path / "sam_rle_mask" / name).read_text()
        )


def test_failures_give_one_line_reasons(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.srlib")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("samrefine info: error: ")
    assert "missing.srlib does not exist" in err
    assert main(["build", str(tmp_path / "x.srlib"), "--images", str(tmp_path)]) == 2
    assert "--ids FILE, --refs" in capsys.readouterr().err
    assert (
        main(
            [
                "build",
                str(tmp_path / "x.srlib"),
                "--images",
                str(tmp_path),
                "--ids",
                str(tmp_path / "nope.txt"),
            ]
        )
        == 2
    )
    assert "nope.txt" in capsys.readouterr().err
    assert (
        main(
            [
                "build",
                str(tmp_path / "x.srlib"),
                "--images",
                str(tmp_path),
                "--instances",
                str(tmp_path / "i.json"),
                "--generator",
                "nope",
            ]
        )
        == 2
    )
    assert main(["merge", str(tmp_path / "m.srlib"), str(tmp_path / "none-*.srlib")]) == 2
    assert "no library file matches" in capsys.readouterr().err
    # a damaged library: verify exits 1 and names the file
    lib = tmp_path / "bad.srlib"
    lib.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    assert main(["verify", str(lib), "--no-progress"]) == 1
    assert "bad.srlib" in capsys.readouterr().err


def test_demo_reports_both_library_scenarios_truthfully():
    """``samrefine demo``: per strategy, better + worse + uncorrected = samples, and with the
    objects' own masks in the library IOM repairs labels (every IOM replacement of a label by
    the object's own mask raises its IoU)."""
    from samrefine.demo import run_demo

    lines: list[str] = []
    res = run_demo("coffee", size=128, samples=6, seed=0, print_fn=lines.append)
    assert set(res) == {"holds", "held_out"}
    for scenario in res.values():
        assert set(scenario) == {"iom", "cpi", "cpi-u", "cpi-o"}
        for stats in scenario.values():
            assert stats["positive"] + stats["negative"] + stats["no_correction"] <= 6
    holds = res["holds"]["iom"]
    assert holds["positive"] > 0 and holds["miou_after"] > holds["miou_before"]
    assert any("held out" in line for line in lines)
    assert any("samrefine audit" in line for line in lines)
