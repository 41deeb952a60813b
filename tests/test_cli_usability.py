"""Command-line rough edges (issue 12): --version, ``python -m samrefine``, a closed output
pipe, install hints for missing extras, --param checks, --fail-fast, ``merge --resume`` and
generators named on the command line."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import samrefine
from samrefine.cli import build_parser, main
from samrefine.cli._common import FLAG_FOR, error_line, install_hint
from samrefine.cli.generators import check_params
from samrefine.library import (
    LibraryError,
    ProposalLibrary,
    create_library,
    list_generators,
    merge_libraries,
)
from samrefine.library import writer as writer_module

SRC = str(Path(samrefine.__file__).resolve().parents[1])  # the samrefine under test


def run_module(*args, **kw):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", *args], env=env, **kw)


def photos(folder, ids, pattern="{image_id}.png"):
    """Small real photos (downscaled skimage.data pictures) named by ``pattern``."""
    import skimage.data

    folder.mkdir(exist_ok=True)
    names = ["coffee", "astronaut", "chelsea", "rocket"]
    for n, key in enumerate(ids):
        img = getattr(skimage.data, names[n % 4])()[::12, ::12]
        Image.fromarray(np.ascontiguousarray(img)).save(folder / pattern.format(image_id=key))
    return folder


@pytest.fixture
def dataset(tmp_path):
    images = photos(tmp_path / "img", [3, 5, 8])
    (tmp_path / "ids.txt").write_text("3\n5\n8\n")
    return images, tmp_path / "ids.txt"


def build_argv(out, dataset, *extra):
    images, ids = dataset
    return [
        "build",
        str(out),
        "--images",
        str(images),
        "--ids",
        str(ids),
        "--file-pattern",
        "{image_id}.png",
        "--no-progress",
        *extra,
    ]


# ------------------------------------------------------------------ --version, python -m


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"samrefine {samrefine.__version__}"


def test_python_dash_m_samrefine_runs_the_cli():
    p = run_module(
        "samrefine", "--version", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.strip() == f"samrefine {samrefine.__version__}"


# ------------------------------------------------------------------ closed output pipe


def test_info_json_into_a_closed_pipe_exits_quietly(tmp_path):
    lib = tmp_path / "one.srlib"
    w = create_library(lib, generator="custom")
    w.append(1, samrefine.Proposals.from_dense(np.eye(4, dtype=bool)[None]))
    w.finish()
    # the reader closes its end before the command writes (as `| head -c 0` would)
    p = run_module(
        "samrefine", "info", "--json", str(lib), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err and "Broken pipe" not in err, err
    assert p.returncode == 141


# ------------------------------------------------------------------ missing extras


def test_missing_extra_names_the_pip_install(tmp_path, dataset, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sam2", None)  # as if sam2 were not installed
    assert main(build_argv(tmp_path / "x.srlib", dataset, "--generator", "sam2")) == 2
    err = capsys.readouterr().err
    assert err.startswith("samrefine build: error: ")
    assert 'pip install "samrefine[sam2]"' in err


def test_install_hints():
    assert (
        install_hint(ModuleNotFoundError("x", name="skimage.segmentation"))
        == 'pip install "samrefine[classical]"'
    )
    assert (
        install_hint(ModuleNotFoundError("x", name="segment_anything"))
        == 'pip install "samrefine[sam]"'
    )
    assert install_hint(ModuleNotFoundError("x", name="PIL")) == "pip install pillow"
    assert install_hint(ModuleNotFoundError("x", name="my_own_module")) is None


# ------------------------------------------------------------------ --param checks


@pytest.mark.parametrize(
    "param, words",
    [
        ("max_masks=abc", ["max_masks", "an int >= 1"]),
        ("max_masks=-5", ["max_masks", "an int >= 1"]),
        ("max_masks=2.5", ["max_masks", "an int >= 1"]),
        ("dedup_iou=1.5", ["dedup_iou", "a number in (0, 1]"]),
        ("scales=[64,-1]", ["scales", "a list of numbers > 0"]),
        ("max_mask=5", ["no parameter 'max_mask'", "valid: scales", "max_masks"]),
    ],
)
def test_bad_classical_params_fail_before_any_work(tmp_path, dataset, capsys, param, words):
    images, _ = dataset
    # the ids file does not exist: the parameter error comes first, before anything is read
    argv = [
        "build",
        str(tmp_path / "x.srlib"),
        "--images",
        str(images),
        "--ids",
        str(tmp_path / "missing.txt"),
        "--generator",
        "classical",
        "--param",
        param,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("samrefine build: error: --param ")
    for w in words:
        assert w in err
    assert not (tmp_path / "x.srlib").exists()


@pytest.mark.parametrize(
    "param, words",
    [
        ("pred_iou_thresh=1.5", ["pred_iou_thresh", "[0, 1]"]),
        ("points_per_side=0", ["points_per_side", ">= 1"]),
        ("output_mode=png", ["output_mode", "one of binary_mask, uncompressed_rle, coco_rle"]),
        ("model_type=vit_x", ["model_type", "one of vit_h, vit_l, vit_b"]),
        ("point_grids=[[0.5,0.5]]", ["point_grids", "Python API"]),
    ],
)
def test_bad_sam_params(tmp_path, dataset, capsys, param, words):
    assert main(build_argv(tmp_path / "x.srlib", dataset, "--param", param)) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


def test_good_params_are_converted():
    got = check_params("classical", None, {"max_masks": 50, "scales": [64, 256], "dedup_iou": 1})
    assert got == {"max_masks": 50, "scales": [64.0, 256.0], "dedup_iou": 1.0}
    assert isinstance(got["dedup_iou"], float)
    got = check_params(
        "sam", None, {"pred_iou_thresh": 0, "output_mode": "coco_rle", "crop_n_layers": 1}
    )
    assert got == {"pred_iou_thresh": 0.0, "output_mode": "coco_rle", "crop_n_layers": 1}


# ------------------------------------------------------------------ --fail-fast


def test_fail_fast_when_the_first_images_all_fail(tmp_path, dataset, capsys):
    out = tmp_path / "x.srlib"
    base = build_argv(
        out, dataset, "--generator", "classical", "--param", "max_masks=5", "--retries", "0"
    )
    base[base.index("{image_id}.png")] = "{image_id}.jpg"  # wrong pattern: every file missing
    assert main(base + ["--fail-fast", "2"]) == 2
    err = capsys.readouterr().err
    assert "the first 2 images all failed" in err and "image 3" in err and "3.jpg" in err
    assert "--fail-fast 0" in err
    assert not out.exists()  # nothing was built
    # switched off: the old behaviour, every image tried and the library left resumable
    assert main(base + ["--fail-fast", "0"]) == 1
    assert "3 images failed" in capsys.readouterr().err
    assert out.exists()


# ------------------------------------------------------------------ merge --resume


def test_a_killed_merge_resumes_from_the_command_line(tmp_path, dataset, monkeypatch, capsys):
    for i in range(2):
        assert (
            main(
                build_argv(
                    tmp_path / "s.srlib",
                    dataset,
                    "--generator",
                    "classical",
                    "--param",
                    "max_masks=5",
                    "--shard",
                    f"{i}/2",
                )
            )
            == 0
        )
    shards = str(tmp_path / "s-shard-*.srlib")
    merged = tmp_path / "m.srlib"
    original = writer_module.LibraryWriter.append_record

    def killed_after_one(self, image_id, record):
        original(self, image_id, record)
        self.close()  # what was appended is committed, as after a kill between transactions
        raise RuntimeError("killed")

    monkeypatch.setattr(writer_module.LibraryWriter, "append_record", killed_after_one)
    assert main(["merge", str(merged), shards, "--no-progress"]) == 2
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["merge", str(merged), shards, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pass --resume" in err and "--overwrite" in err and "if_exists" not in err
    assert main(["merge", str(merged), shards, "--no-progress", "--resume"]) == 0
    lib, parts = ProposalLibrary.open(merged), ProposalLibrary.open(shards)
    assert lib.info["state"] == "finished"
    assert lib.image_ids().tolist() == parts.image_ids().tolist() == [3, 5, 8]
    assert all(lib[k] == parts[k] for k in (3, 5, 8))
    assert main(["merge", str(merged), shards, "--resume", "--overwrite"]) == 2
    assert "not both" in capsys.readouterr().err


# ------------------------------------------------------------------ --generator MODULE:FACTORY

BANDS = '''
import numpy as np


def bands(n_bands: int = 2):
    """Horizontal bands: a generator factory as register_generator expects."""
    def run(image):
        h, w = image.shape[:2]
        masks = np.zeros((n_bands, h, w), bool)
        for k in range(n_bands):
            masks[k, k * h // n_bands:(k + 1) * h // n_bands] = True
        return masks
    return run
'''


def expected_bands(key_image, n):
    h, w = key_image.shape[:2]
    masks = np.zeros((n, h, w), bool)
    for k in range(n):
        masks[k, k * h // n : (k + 1) * h // n] = True
    return masks


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module ``samrefine_test_bands`` on sys.path, installed with an entry point ``bands``."""
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "samrefine_test_bands.py").write_text(BANDS)
    dist = tmp_path / "plugin" / "samrefine_test_bands-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: samrefine-test-bands\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[samrefine.generators]\nbands = samrefine_test_bands:bands\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    before = list_generators()
    yield tmp_path / "plugin"
    sys.modules.pop("samrefine_test_bands", None)
    assert list_generators() == before  # the CLI leaves the process-wide registry alone


@pytest.mark.parametrize("how", ["module", "file", "entry point"])
def test_generator_named_on_the_command_line(tmp_path, dataset, plugin, how):
    name = {
        "module": "samrefine_test_bands:bands",
        "entry point": "bands",
        "file": f"{plugin / 'samrefine_test_bands.py'}:bands",
    }[how]
    out = tmp_path / "b.srlib"
    assert main(build_argv(out, dataset, "--generator", name, "--param", "n_bands=3")) == 0
    lib = ProposalLibrary.open(out)
    assert lib.info["generator"] == name and lib.info["params"] == {"n_bands": 3}
    for key in (3, 5, 8):
        image = np.asarray(Image.open(dataset[0] / f"{key}.png").convert("RGB"))
        assert np.array_equal(lib[key].to_dense(), expected_bands(image, 3))


def test_plugin_params_are_checked_by_their_defaults(tmp_path, dataset, plugin, capsys):
    argv = build_argv(tmp_path / "b.srlib", dataset, "--generator", "samrefine_test_bands:bands")
    assert main(argv + ["--param", "n_bands=abc"]) == 2
    assert "n_bands" in capsys.readouterr().err
    assert main(argv + ["--param", "colour=1"]) == 2
    assert "valid: n_bands" in capsys.readouterr().err


def test_unknown_generator_says_how_to_name_one(tmp_path, dataset, capsys):
    assert main(build_argv(tmp_path / "b.srlib", dataset, "--generator", "nope")) == 2
    err = capsys.readouterr().err
    assert "unknown generator 'nope'" in err and "MODULE:FACTORY" in err
    assert "samrefine.generators" in err


def test_info_json_still_prints(tmp_path, capsys):
    lib = tmp_path / "one.srlib"
    w = create_library(lib, generator="custom")
    w.append(1, samrefine.Proposals.from_dense(np.eye(4, dtype=bool)[None]))
    w.finish()
    assert main(["info", "--json", str(lib)]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 1


# ------------------------------------------------------------------ progress bars in logs


def test_no_carriage_return_progress_bar_in_a_log(tmp_path, dataset, capsys):
    images, ids = dataset
    argv = [
        "build",
        str(tmp_path / "x.srlib"),
        "--images",
        str(images),
        "--ids",
        str(ids),
        "--file-pattern",
        "{image_id}.png",
        "--generator",
        "classical",
        "--param",
        "max_masks=5",
    ]  # no --no-progress: stderr (captured here) is not a terminal
    assert main(argv) == 0
    assert main(["verify", str(tmp_path / "x.srlib")]) == 0
    assert "\r" not in capsys.readouterr().err


def test_ids_file_keeps_voc_style_names(tmp_path):
    """``--ids`` lines like ``2007_000032`` stay names (they once became int 2007000032)."""
    from samrefine.cli.library import _read_ids

    ids = tmp_path / "voc_train.txt"
    ids.write_text("2007_000032\n2007_000039\n42\n")
    assert _read_ids(str(ids)) == ["2007_000032", "2007_000039", 42]
    floats = tmp_path / "ids.json"
    floats.write_text("[1.2, 1.9]")
    with pytest.raises(ValueError, match="ints or names"):
        _read_ids(str(floats))


# ------------------------------------------------------------------ info after a resumed build

FLAKY = '''
import os

import numpy as np


def flaky():
    """One whole-image mask; images of odd height fail while SAMREFINE_TEST_FLAKY is set."""
    def run(image):
        if os.environ.get("SAMREFINE_TEST_FLAKY") and image.shape[0] % 2:
            raise RuntimeError("flaky generator")
        return np.ones((1,) + image.shape[:2], bool)
    return run
'''


def test_info_drops_failures_a_resumed_build_finished(tmp_path, dataset, monkeypatch, capsys):
    (tmp_path / "flaky_plugin").mkdir()
    (tmp_path / "flaky_plugin" / "samrefine_test_flaky.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path / "flaky_plugin"))
    out = tmp_path / "f.srlib"
    argv = build_argv(out, dataset, "--generator", "samrefine_test_flaky:flaky")
    monkeypatch.setenv("SAMREFINE_TEST_FLAKY", "1")
    assert main(argv) == 1  # images 5 (43 rows) and 8 (25 rows) fail
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "images    1  (2 failed)" in capsys.readouterr().out
    monkeypatch.delenv("SAMREFINE_TEST_FLAKY")
    assert main(argv) == 0  # resumed: 5 and 8 are made now
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "images    3\n" in shown and "failed" not in shown
    assert main(["info", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["n_failures"] == 0


def test_a_failure_row_of_an_image_that_is_there_is_not_a_failure(tmp_path, capsys):
    """Two writers on one file (before writers were locked) could leave a failure row for an
    image the other writer appended; ``info`` then showed "(1 failed)" for good."""
    import sqlite3

    from samrefine.library import DuplicateImageError

    path = tmp_path / "raced.srlib"
    w = create_library(path, generator="custom")
    for key in (1, 2):
        w.append(key, samrefine.Proposals.from_dense(np.eye(4, dtype=bool)[None]))
    w.record_failure(3, "RuntimeError: really failed")
    with pytest.raises(DuplicateImageError, match="already in"):
        w.record_failure(2, "RuntimeError: the other writer's duplicate")
    w.close()
    con = sqlite3.connect(path)  # what the second, racing writer wrote
    con.execute("INSERT INTO failures VALUES (2, 1, 'DuplicateImageError: image 2')")
    con.commit()
    con.close()
    with ProposalLibrary.open(path) as lib:
        assert lib.failures() == {3: "RuntimeError: really failed"}
    w = create_library(path, generator="custom")  # resume: the writer agrees
    assert w.failures() == {3: "RuntimeError: really failed"}
    w.append(3, samrefine.Proposals.from_dense(np.eye(4, dtype=bool)[None]))
    assert w.failures() == {}
    w.finish()
    assert main(["info", str(path)]) == 0
    assert "failed" not in capsys.readouterr().out


# ------------------------------------------------------------------ Python names vs CLI flags

PYTHON_HINT = re.compile(r"\b(?:if_exists|allow_partial|fail_fast|shard|sizes)=[^\s;,)]*")


def _raised_texts(path: Path):
    """The string pieces of every ``raise`` in a module (f-string parts included), and the
    module's string constants (message pieces like ``NEED_SIZES``)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                yield node.value.value
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for n in ast.walk(node.exc):
                if isinstance(n, ast.Constant) and isinstance(n.value, str):
                    yield n.value


def test_every_python_argument_named_in_a_library_error_has_its_flag():
    """A library message tells a Python user the argument to pass; ``error_line`` must turn
    each such hint into the flag of the command that raised it, or a CLI user is told
    ``if_exists='resume'`` where the flag is ``--resume``."""
    library = Path(samrefine.__file__).parent / "library"
    hints = {
        hint
        for module in library.glob("*.py")
        for text in _raised_texts(module)
        for hint in PYTHON_HINT.findall(text)
    }
    assert {"if_exists='overwrite'", "allow_partial=True", "sizes={image_key:"} <= hints
    for hint in hints:
        assert any(key.startswith(hint) or hint in key for key in FLAG_FOR), hint
    options = {
        opt
        for action in build_parser()._subparsers._group_actions  # type: ignore[union-attr]
        for sub in action.choices.values()
        for a in sub._actions
        for opt in a.option_strings
    }
    for words, flag in FLAG_FOR.items():
        named = re.findall(r"--[a-z-]+", flag)
        assert named and all(f in options for f in named), (words, flag)
        assert "=" not in error_line(ValueError(f"x; pass {words}")).split("pass ")[-1].split()[0]


def test_merge_errors_name_the_flag_on_the_command_line_and_the_argument_in_python(
    tmp_path, dataset, capsys
):
    argv = build_argv(tmp_path / "s.srlib", dataset, "--generator", "classical")
    assert main(argv + ["--param", "max_masks=5", "--shard", "0/2"]) == 0
    shard0 = str(tmp_path / "s-shard-00000-of-00002.srlib")
    merged = tmp_path / "m.srlib"
    with pytest.raises(LibraryError, match="allow_partial=True") as python_error:
        merge_libraries(shard0, merged, progress=False)
    assert "--allow-partial" not in str(python_error.value)
    capsys.readouterr()
    assert main(["merge", str(merged), shard0, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "missing shard(s) 1/2" in err and "pass --allow-partial" in err
    assert "allow_partial" not in err
    assert main(["merge", str(merged), shard0, "--no-progress", "--allow-partial"]) == 0
    with ProposalLibrary.open(merged) as lib, ProposalLibrary.open(shard0) as part:
        assert lib.image_ids().tolist() == part.image_ids().tolist()
    with pytest.raises(LibraryError) as python_error:
        merge_libraries(shard0, merged, progress=False, allow_partial=True)
    text = str(python_error.value)
    assert "if_exists='resume'" in text and "if_exists='overwrite'" in text and "--" not in text
    assert main(["merge", str(merged), shard0, "--no-progress", "--allow-partial"]) == 2
    err = capsys.readouterr().err
    assert "pass --resume to continue" in err and "or --overwrite to start" in err
    assert "if_exists" not in err


def test_amg_json_without_masks_names_instances_on_the_command_line(tmp_path, capsys):
    (tmp_path / "amg").mkdir()
    (tmp_path / "amg" / "2007_000032.json").write_text("[]")  # amg.py found no mask
    out = tmp_path / "a.srlib"
    argv = ["import", str(out), str(tmp_path / "amg"), "--format", "amg", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no masks and no image size" in err and "--instances" in err and "sizes=" not in err
    instances = tmp_path / "instances.json"
    instances.write_text(
        json.dumps({"images": [{"id": 7, "file_name": "2007_000032.jpg", "height": 5, "width": 6}]})
    )
    assert main(argv + ["--instances", str(instances), "--overwrite"]) == 0
    with ProposalLibrary.open(out) as lib:
        assert lib.image_ids().tolist() == ["2007_000032"]
        assert lib["2007_000032"].size == (5, 6) and len(lib["2007_000032"]) == 0


def test_build_with_two_workers_writes_the_library_one_worker_writes(tmp_path, dataset):
    built = {}
    for n in (1, 2):
        out = tmp_path / f"w{n}.srlib"
        argv = build_argv(out, dataset, "--generator", "classical", "--workers", str(n))
        assert main(argv + ["--param", "max_masks=5"]) == 0
        with ProposalLibrary.open(out) as lib:
            built[n] = (lib.image_ids().tolist(), lib.info["content_sha256"])
    assert built[1] == built[2] and built[1][0] == [3, 5, 8]
