"""samrefine.viz: PNGs are written, have the documented size and show the masks; CLI."""

import json

import numpy as np
import pytest
from PIL import Image

import samrefine as sr
from samrefine.cli import main
from samrefine.viz import GAP, TITLE_HEIGHT

RED, GREEN, YELLOW = (230, 40, 40), (30, 200, 60), (255, 220, 0)


def scene():
    """A 64 x 64 picture: a square object (rows/cols 16-47), a noisy pseudo-label, proposals
    made of the object's two halves, the object itself and a background box."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    gt = np.zeros((64, 64), bool)
    gt[16:48, 16:48] = True
    pseudo = np.zeros_like(gt)
    pseudo[16:48, 16:40] = True  # under-segmented: the left three quarters
    left, right, bg = (np.zeros_like(gt) for _ in range(3))
    left[16:48, 16:32] = True
    right[16:48, 32:48] = True
    bg[:8, :] = True
    props = sr.Proposals.from_dense(np.stack([left, right, gt, bg]))
    return image, pseudo, props, gt


def has_colour(arr, colour, tol=2):
    return bool((np.abs(arr.astype(int) - colour).max(axis=-1) <= tol).any())


def row_size(n, pw=96, ph=96):
    """Width and height of one row of n panels, from the module's documented layout."""
    return n * pw + (n + 1) * GAP, TITLE_HEIGHT + ph + 2 * GAP


def test_overlay_png_size_and_content(tmp_path):
    image, pseudo, props, gt = scene()
    path = tmp_path / "sub" / "fig5.png"
    arr = sr.overlay_refinement(image, pseudo, props, path, ("iom", "cpi"), gt=gt, panel=96)
    # image, pseudo, iom selected, iom refined, cpi selected, cpi refined, gt: 7 panels
    w, h = row_size(7)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (w, h)
        png = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(png, arr)
    assert png.std() > 20  # not blank
    # the pseudo-label panel (second) has the red outline; refined panels the green one
    x = GAP + 1 * (96 + GAP)
    y = GAP + TITLE_HEIGHT
    assert has_colour(png[y : y + 96, x : x + 96], RED)
    x_iom_refined = GAP + 3 * (96 + GAP)
    assert has_colour(png[y : y + 96, x_iom_refined : x_iom_refined + 96], GREEN)
    x_gt = GAP + 6 * (96 + GAP)
    assert has_colour(png[y : y + 96, x_gt : x_gt + 96], YELLOW)


def test_overlay_unmatched_and_grey_background(tmp_path):
    _, pseudo, props, _ = scene()
    far = np.zeros_like(pseudo)
    far[60:, 60:] = True  # overlaps no proposal: unmatched under every strategy
    arr = sr.overlay_refinement(None, far, props, tmp_path / "u.png", ("cpi-u",), panel=64)
    w, h = row_size(4, 64, 64)
    assert arr.shape == (h, w, 3)
    assert not has_colour(arr, GREEN)  # nothing refined


def test_overlay_rejects_bad_input():
    image, pseudo, props, _gt = scene()
    with pytest.raises(ValueError, match="resize"):
        sr.overlay_refinement(image, pseudo, props.resize((32, 32)))
    with pytest.raises(ValueError, match="unknown strategy"):
        sr.overlay_refinement(image, pseudo, props, strategies=("best",))
    with pytest.raises(ValueError, match="threshold probabilities"):
        sr.overlay_refinement(image, pseudo * 0.6, props)
    with pytest.raises(ValueError, match="channels-last"):
        sr.overlay_refinement(image.transpose(2, 0, 1)[:, :, :50], pseudo, props)


def test_proposal_grid_size(tmp_path):
    image, _, props, _ = scene()
    path = tmp_path / "grid.png"
    arr = sr.proposal_grid(image, props, path, cols=3, panel=64)
    # 1 + 4 panels, 3 per row -> 2 rows
    w, h = row_size(3, 64, 64)
    with Image.open(path) as im:
        assert im.size == (w, 2 * h)
    assert arr.std() > 20
    capped = sr.proposal_grid(image, props, max_masks=1, cols=8, panel=64)
    assert capped.shape == (h, row_size(2, 64, 64)[0], 3)


def test_pwa_map_and_audit_bars(tmp_path):
    image, pseudo, props, gt = scene()
    prob = np.where(pseudo, 0.9, 0.1)
    prob[30:34] = 0.5
    arr = sr.pwa_map(prob, tmp_path / "pwa.png", image=image, panel=64)
    assert arr.shape == (row_size(5, 64, 64)[1], row_size(5, 64, 64)[0], 3)
    # the weight panel (4th) is grey, 255 * Psi(p) / 1.3 with Psi(p) = 1.3 - exp(-(p - .5)^2 /
    # .2) / sqrt(.2 pi): p = .5 -> 0.0384 -> 7.5; p = .1 -> 1.3 - exp(-.8) / .79267 -> 143.8
    x = GAP + 3 * (64 + GAP)
    y = GAP + TITLE_HEIGHT
    weight = arr[y : y + 64, x : x + 64, 0].astype(int)
    assert abs(weight[31, 5] - 7.5) <= 1 and abs(weight[5, 5] - 143.8) <= 1
    with pytest.raises(ValueError, match="probabilities"):
        sr.pwa_map(prob * 3)
    rep = sr.audit(pseudo[None], [props], gt[None], ["iom", "cpi-u"], sweep=None)
    bars = sr.audit_bars(rep, tmp_path / "bars.png", width=400, bar_height=20)
    assert bars.shape == (TITLE_HEIGHT + 3 * (20 + GAP) + GAP, 400, 3)
    assert has_colour(bars, GREEN)  # CPI-U selects the whole object (s1 = 1): positive


def write_library(path, props_by_id):
    from samrefine.library import create_library

    w = create_library(path, generator="custom", if_exists="overwrite")
    for i, p in props_by_id.items():
        w.append(i, p)
    w.finish()


def test_cli_viz_overlay_grid_and_library(tmp_path, capsys):
    image, pseudo, props, gt = scene()
    lib = tmp_path / "lib.srlib"
    # the library holds proposals at twice the size: the CLI resizes them (nearest)
    big = sr.Proposals.from_dense(np.repeat(np.repeat(props.to_dense(), 2, 1), 2, 2))
    write_library(str(lib), {7: big})
    data = tmp_path / "d.npz"
    np.savez(data, pseudo=pseudo[None], gt=gt[None], image=image[None], image_ids=[7])
    out = tmp_path / "out"
    assert (
        main(
            [
                "viz",
                "overlay",
                str(data),
                "--library",
                str(lib),
                "--index",
                "0",
                "--panel",
                "64",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with Image.open(out / "overlay_00000.png") as im:
        assert im.size == row_size(7, 64, 64)
    assert (
        main(
            [
                "viz",
                "grid",
                "--library",
                str(lib),
                "--image-id",
                "7",
                "--panel",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with Image.open(out / "proposals.png") as im:
        assert im.size == row_size(5, 32, 32)
    # audit through the library
    assert (
        main(
            [
                "audit",
                str(data),
                "--library",
                str(lib),
                "--strategies",
                "iom",
                "--sweep",
                "none",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    s = json.loads((out / "audit.json").read_text())["strategies"]["iom"]
    # pseudo (768 px) inside gt (1024 px): IoU(pseudo, gt) = .75 > .5 is the best IoU, so IOM
    # picks gt itself: a positive correction
    assert (s["positive"], s["negative"], s["tie"], s["no_correction"]) == (1, 0, 0, 0)
    assert main(["viz", "grid", "--library", str(lib), "--image-id", "8", "--out", str(out)]) == 2
    assert "samrefine viz: error" in capsys.readouterr().err


def test_cli_viz_demo(tmp_path):
    out = tmp_path / "v"
    assert (
        main(
            [
                "viz",
                "grid",
                "--demo",
                "--size",
                "64",
                "--max-masks",
                "7",
                "--panel",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with Image.open(out / "proposals.png") as im:
        assert im.size == row_size(8, 32, 32)
        assert np.asarray(im).std() > 20
