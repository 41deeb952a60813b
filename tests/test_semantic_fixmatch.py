"""The semantic worked example (examples/semantic_fixmatch): readers, keys, trainer, demo."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("skimage")
pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import samrefine as sr  # noqa: E402
from examples.semantic_fixmatch import data, demo, synthetic  # noqa: E402
from examples.semantic_fixmatch.train import (  # noqa: E402
    TrainConfig,
    evaluate,
    make_model,
    train,
    unlabelled_loss,
)
from samrefine.cli import main as samrefine_cli  # noqa: E402
from samrefine.library import ProposalLibrary  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _png(path: Path, array: np.ndarray, mode: str = "P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array.astype(np.uint8), mode=mode if mode != "RGB" else None)
    if mode == "P":
        im.putpalette(synthetic.voc_palette())
    im.save(path)


def _jpg(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(path)


@pytest.fixture
def voc_root(tmp_path) -> Path:
    """Three VOC images: palette labels (class 15 and the 255 border), one Aug-style grey."""
    root = tmp_path / "VOC2012"
    for key in ("2007_000032", "2007_000033", "2008_000001"):
        _jpg(root / "JPEGImages" / f"{key}.jpg", 6, 8)
        label = np.zeros((6, 8), np.uint8)
        label[1:4, 2:6] = 15
        label[0] = 255
        _png(root / "SegmentationClass" / f"{key}.png", label)
        _png(root / "SegmentationClassAug" / f"{key}.png", label, mode="L")
    (root / "labeled.txt").write_text(
        "JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png\n"
        "\n"
        "JPEGImages/2008_000001.jpg SegmentationClass/2008_000001.png\n"
    )
    (root / "keys.txt").write_text("2007_000033\n2008_000001\n")
    return root


def test_voc_reader_parses_unimatch_and_key_lines(voc_root):
    s = data.voc_samples(voc_root, voc_root / "labeled.txt")
    assert [x.key for x in s] == ["2007_000032", "2008_000001"]
    assert s[0].image == voc_root / "JPEGImages" / "2007_000032.jpg"
    assert s[0].label == voc_root / "SegmentationClass" / "2007_000032.png"
    k = data.voc_samples(voc_root, voc_root / "keys.txt", label_dir="SegmentationClassAug")
    assert [x.key for x in k] == ["2007_000033", "2008_000001"]
    assert k[1].label == voc_root / "SegmentationClassAug" / "2008_000001.png"
    # palette PNG -> indices (15, 255), not colours; the grey Aug PNG reads the same
    a = data.read_label(s[0].label, 21)
    b = data.read_label(k[0].label, 21)
    assert a.dtype == np.uint8 and set(np.unique(a)) == {0, 15, 255}
    np.testing.assert_array_equal(a, b)
    assert data.read_image(s[0].image).shape == (6, 8, 3)


def test_voc_reader_errors(voc_root, tmp_path):
    (voc_root / "SegmentationClass" / "2008_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 image/label.*2008_000001\.png"):
        data.voc_samples(voc_root, voc_root / "labeled.txt")
    with pytest.raises(FileNotFoundError, match="split file"):
        data.voc_samples(voc_root, voc_root / "nope.txt")
    with pytest.raises(FileNotFoundError, match="data root"):
        data.voc_samples(tmp_path / "absent", voc_root / "keys.txt")
    bad = voc_root / "bad.txt"
    bad.write_text("a b c\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        data.voc_samples(voc_root, bad)
    bad.write_text("2007_000032\n2007_000032\n")
    with pytest.raises(ValueError, match="more than once"):
        data.voc_samples(voc_root, bad)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match="'RGB' image; expected an index PNG"):
        data.read_label(rgb, 21)
    big = tmp_path / "big.png"
    _png(big, np.full((4, 4), 30))
    with pytest.raises(ValueError, match=r"\[30\] outside 0\.\.20"):
        data.read_label(big, 21)


def test_cityscapes_reader(tmp_path):
    root = tmp_path / "cityscapes"
    keys = ["jena_000078_000019", "jena_000079_000019", "ulm_000001_000019"]
    for key in keys:
        city = key.split("_")[0]
        _jpg(root / "leftImg8bit" / "train" / city / f"{key}_leftImg8bit.png", 4, 8)
        label = np.full((4, 8), 13, np.uint8)
        label[:, :2] = 255
        _png(root / "gtFine" / "train" / city / f"{key}_gtFine_labelTrainIds.png", label, "L")
    found = data.cityscapes_samples(root)
    assert [s.key for s in found] == keys
    assert set(np.unique(data.read_label(found[0].label, 19))) == {13, 255}
    split = root / "labeled.txt"
    split.write_text(
        "leftImg8bit/train/ulm/ulm_000001_000019_leftImg8bit.png "
        "gtFine/train/ulm/ulm_000001_000019_gtFine_labelTrainIds.png\n"
    )
    assert [s.key for s in data.cityscapes_samples(root, split)] == ["ulm_000001_000019"]
    (root / "gtFine/train/jena/jena_000079_000019_gtFine_labelTrainIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="createTrainIdLabelImgs"):
        data.cityscapes_samples(root)
    with pytest.raises(FileNotFoundError, match="Cityscapes root"):
        data.cityscapes_samples(root, split="val")
    labelids = root / "labelids.png"
    _png(labelids, np.full((4, 8), 26), "L")  # a labelIds value (car), not a train id
    with pytest.raises(ValueError, match="labelTrainIds"):
        data.read_label(labelids, 19)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    """Synthetic VOC layout (3 labelled, 4 unlabelled, 2 val) and its library, built by the
    ``samrefine build`` command line with string keys."""
    root = tmp_path_factory.mktemp("synvoc")
    synthetic.write_synthetic_voc(root, n_labelled=3, n_unlabelled=4, n_val=2, seed=0)
    rc = samrefine_cli(
        [
            "build", str(root / "lib.srlib"), "--images", str(root / "JPEGImages"),
            "--ids", str(root / "ImageSets/Segmentation/unlabeled.txt"),
            "--file-pattern", "{image_id}.jpg", "--generator", "classical", "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    return root


def test_synthetic_voc_layout(synthetic_root):
    splits = json.loads((synthetic_root / "synthetic.json").read_text())["splits"]
    assert [len(splits[k]) for k in ("labeled", "unlabeled", "val")] == [3, 4, 2]
    for name, keys in splits.items():
        samples = data.voc_samples(synthetic_root, synthetic_root / "splits" / f"{name}.txt")
        assert [s.key for s in samples] == keys
        for s in samples:
            with Image.open(s.label) as im:
                assert im.mode == "P"
            label = data.read_label(s.label, len(synthetic.CLASSES))
            assert label.shape == data.read_image(s.image).shape[:2]
            assert 0 in label and label.max() >= 1  # background and at least one object


def test_dataset_keys_into_library_and_resize_rule(synthetic_root):
    lib = ProposalLibrary.open(synthetic_root / "lib.srlib")
    samples = data.voc_samples(synthetic_root, synthetic_root / "splits" / "unlabeled.txt")
    assert sorted(lib.image_ids().tolist()) == sorted(s.key for s in samples)  # string keys
    ds = data.SegmentationDataset(samples, 40, len(synthetic.CLASSES), lib)
    item = ds[1]
    assert item["key"] == samples[1].key and item["image"].shape == (3, 40, 40)
    label = data.read_label(samples[1].label, 6)
    want = np.asarray(Image.fromarray(label).resize((40, 40), Image.NEAREST))
    np.testing.assert_array_equal(item["label"].numpy(), want)
    props = item["proposals"]
    assert props.size == (40, 40) and len(props) == len(lib[samples[1].key])
    # each proposal resized exactly as PIL resizes a label map
    for dense_small, dense_full in zip(props.to_dense(), lib[samples[1].key].to_dense()):
        pil = Image.fromarray(dense_full.astype(np.uint8)).resize((40, 40), Image.NEAREST)
        np.testing.assert_array_equal(dense_small, np.asarray(pil).astype(bool))
    labelled = data.voc_samples(synthetic_root, synthetic_root / "splits" / "labeled.txt")
    with pytest.raises(KeyError, match="no proposals"):
        data.SegmentationDataset(labelled, 40, 6, lib)


def _datasets(root: Path, size: int = 32):
    lib = ProposalLibrary.open(root / "lib.srlib")
    split = root / "splits"
    return (
        data.SegmentationDataset(data.voc_samples(root, split / "labeled.txt"), size, 6),
        data.SegmentationDataset(data.voc_samples(root, split / "unlabeled.txt"), size, 6, lib),
        data.voc_samples(root, split / "val.txt"),
    )


@pytest.mark.parametrize(
    "method, refine", [("supervised", "none"), ("fixmatch", "none"), ("fixmatch", "iom"),
                       ("fixmatch", "cpi-u")]
)  # fmt: skip
def test_one_training_step_per_arm(synthetic_root, method, refine):
    labelled, unlabelled, val = _datasets(synthetic_root)
    cfg = TrainConfig(
        num_classes=6, method=method, refine=refine, size=32, iters=2, batch=2, batch_u=2,
        width=8, conf=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    init = make_model(6, 8).state_dict()
    model, stats = train(cfg, labelled, unlabelled, {k: v.clone() for k, v in init.items()})
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, init[k])]
    assert changed  # the step moved the weights
    if method == "fixmatch":
        assert stats["kept"] > 0.5  # conf=0: the unlabelled loss had targets
        if refine != "none":
            assert "matched_fraction" in stats
    again, _ = train(cfg, labelled, unlabelled, {k: v.clone() for k, v in init.items()})
    for k, v in model.state_dict().items():  # same seed, same batches and views
        assert torch.equal(v, again.state_dict()[k]), k
    res = evaluate(model, val, 6, 32)
    assert 0.0 <= res["miou"] <= 1.0 and len(res["iou"]) == 6


def test_refinement_moves_the_loss_to_the_proposals_boundary():
    """The teacher labels a 6x6 object as 5x5 (IoU 25/36); the proposal is the whole object.
    Plain FixMatch rewards a student that copies the teacher; with IOM refinement the loss
    prefers the student that predicts the whole object."""
    h = w = 12
    obj = np.zeros((h, w), bool)
    obj[3:9, 3:9] = True
    centre = np.zeros((h, w), bool)
    centre[3:8, 3:8] = True

    def logits(mask: np.ndarray, scale: float) -> torch.Tensor:
        lab = torch.from_numpy(mask.astype(np.int64))
        return scale * F.one_hot(lab, 3).permute(2, 0, 1)[None].float()

    teacher = logits(centre, 10.0)  # confident everywhere: FixMatch keeps every pixel
    props = sr.ProposalBatch([sr.Proposals.from_dense(obj[None])])
    copy_teacher, whole_object = logits(centre, 4.0), logits(obj, 4.0)
    pwa = sr.PWACELoss()
    cfg = TrainConfig(num_classes=3, per="component")
    plain = {
        name: float(unlabelled_loss(s, teacher, props, replace(cfg, refine="none"), pwa)[0])
        for name, s in (("copy", copy_teacher), ("whole", whole_object))
    }
    refined = {
        name: float(unlabelled_loss(s, teacher, props, replace(cfg, refine="iom"), pwa)[0])
        for name, s in (("copy", copy_teacher), ("whole", whole_object))
    }
    assert plain["copy"] < plain["whole"]
    assert refined["whole"] < refined["copy"]
    # the refined loss is the cross-entropy against the proposal's mask: 36 matched pixels
    # (weight 1) and 108 unmatched background pixels (weight Psi of a confident teacher)
    t = sr.semires_targets(teacher, props, "iom", per="component", skip_classes=(0,))
    assert int(t.matched.sum()) == 36 and torch.equal(t.target[0], torch.from_numpy(obj).long())
    ce = F.cross_entropy(copy_teacher, t.target, reduction="none")
    psi = sr.class_pwa_weight(teacher.softmax(1))
    want = float(torch.where(t.matched, ce, ce * psi).mean())
    assert refined["copy"] == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="needs proposals"):
        unlabelled_loss(copy_teacher, teacher, None, replace(cfg, refine="iom"), pwa)


def test_evaluate_counts_a_constant_prediction(synthetic_root):
    """A model that always says background: IoU(bg) = bg share, 0 for the other classes."""

    class Background(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 6, *x.shape[2:])
            out[:, 0] = 1.0
            return out

    val = data.voc_samples(synthetic_root, synthetic_root / "splits" / "val.txt")
    labels = [data.read_label(s.label, 6) for s in val]
    bg = sum(int((lab == 0).sum()) for lab in labels) / sum(lab.size for lab in labels)
    present = len(set(np.unique(np.concatenate([lab.ravel() for lab in labels]))))
    res = evaluate(Background(), val, 6, 32)
    assert res["iou"][0] == pytest.approx(bg)
    assert res["miou"] == pytest.approx(bg / present)


def test_demo_end_to_end_tiny(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "N_LABELLED", 2)
    monkeypatch.setattr(demo, "N_UNLABELLED", 3)
    monkeypatch.setattr(demo, "N_VAL", 2)
    monkeypatch.setattr(demo, "BURNIN_ITERS", 2)
    monkeypatch.setattr(demo, "ARM_ITERS", 2)
    summary = demo.run_demo(seed=3, out=tmp_path, workers=1)
    assert list(summary["miou"]) == ["supervised only (burn-in)", *demo.ARMS]
    saved = json.loads((tmp_path / "seed3" / "summary.json").read_text())
    assert saved["miou"] == summary["miou"] and saved["splits"]["unlabeled"] == 3
    assert set(saved["teacher_audit"]["strategies"]) == {"iom", "cpi-u"}
    out = capsys.readouterr().out
    assert "samrefine build" in out and "FixMatch + samrefine IOM" in out


def test_train_command_line_on_voc_layout(synthetic_root, tmp_path, capsys):
    from examples.semantic_fixmatch.train import main

    split = synthetic_root / "splits"
    common = [
        "--dataset", "voc", "--data-root", str(synthetic_root),
        "--labelled", str(split / "labeled.txt"), "--val", str(split / "val.txt"),
        "--iters", "2", "--size", "32", "--width", "8", "--batch-u", "2",
    ]  # fmt: skip
    save = tmp_path / "iom.pth"
    res = main(
        [*common, "--unlabelled", str(split / "unlabeled.txt"), "--refine", "iom",
         "--library", str(synthetic_root / "lib.srlib"), "--save", str(save)]
    )  # fmt: skip
    assert len(res["iou"]) == 21 and "matched_fraction" in res["targets"]  # VOC: 21 classes
    state = torch.load(save, weights_only=True)
    assert state.keys() == make_model(21, 8).state_dict().keys()
    with pytest.raises(SystemExit):
        main([*common, "--unlabelled", str(split / "unlabeled.txt"), "--refine", "iom"])
    assert "needs --library" in capsys.readouterr().err
