"""The classical (non-SAM) proposal generator: the properties SemiRES needs from SAM's output.

Synthetic scenes with known objects: whole objects and their parts as nested masks, boundaries
on the objects' edges, and no mask that merges an object with its background (the property that
keeps CPI / CPI-U's union of every proposal covering the pseudo-label close to the object).
"""

import numpy as np
import pytest

from samrefine import refine
from samrefine.library.classical import classical_proposals


def textured_background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Grey-green checkerboard (low contrast, 12 px squares) with a slow shading and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    check = ((yy // 12 + xx // 12) % 2).astype(float)
    img = np.empty((h, w, 3))
    img[..., 0] = 120 + 14 * check
    img[..., 1] = 135 + 6 * check
    img[..., 2] = 115 - 4 * check
    img += (xx / w * 20)[..., None]
    img += rng.normal(0, 4, img.shape)
    return img


def disc_scene(h=120, w=130, centre=(55, 70), radius=22, colour=(235, 140, 30), seed=0):
    img = textured_background(h, w, seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    rng = np.random.default_rng(seed + 1)
    img[disc] = np.array(colour, float) + rng.normal(0, 4, (disc.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8), disc


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def edge_distance(mask):
    """Distance (px) of every pixel to the mask's boundary."""
    from scipy import ndimage

    return np.minimum(ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_disc_on_texture_is_found_and_never_merged_with_background(seed):
    img, disc = disc_scene(seed=seed)
    props = classical_proposals(img)
    dense = props.to_dense()
    ious = np.array([iou(m, disc) for m in dense])
    cover = (dense & disc).sum((1, 2)) / disc.sum()  # CPI's s1 with the disc as P
    assert ious.max() > 0.9
    assert (ious[cover > 0.7] >= 0.8).all(), "a proposal merges the disc with its background"
    # so CPI-U's union with the disc as the pseudo-label stays on the disc
    res = refine(disc.astype(np.uint8), props, "cpi-u")
    refined = np.asarray(res.masks).astype(bool).reshape(disc.shape)
    assert bool(np.asarray(res.matched).ravel()[0]) and iou(refined, disc) > 0.9


def test_boundaries_are_crisp():
    img, disc = disc_scene()
    dense = classical_proposals(img).to_dense()
    best = dense[np.argmax([iou(m, disc) for m in dense])]
    wrong = best ^ disc
    # every wrongly labelled pixel is at the disc's edge (anti-aliasing band), none beyond
    assert edge_distance(disc)[wrong].max() <= 1.5


def two_tone_square(seed=0):
    """A square of two halves (orange, a slightly darker orange) on the texture."""
    img = textured_background(110, 120, seed)
    rng = np.random.default_rng(seed + 5)
    left = np.zeros(img.shape[:2], bool)
    right = np.zeros(img.shape[:2], bool)
    left[25:85, 30:60] = True
    right[25:85, 60:90] = True
    img[left] = np.array([230, 130, 40]) + rng.normal(0, 3, (left.sum(), 3))
    img[right] = np.array([205, 115, 35]) + rng.normal(0, 3, (right.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8), left, right


def test_object_and_its_parts_come_out_nested():
    img, left, right = two_tone_square()
    props = classical_proposals(img)
    dense = props.to_dense()
    whole = left | right
    best = {
        name: int(np.argmax([iou(m, ref) for m in dense]))
        for name, ref in (("left", left), ("right", right), ("whole", whole))
    }
    for name, ref in (("left", left), ("right", right), ("whole", whole)):
        assert iou(dense[best[name]], ref) > 0.9, name
    for part in ("left", "right"):  # nested: each part's mask lies inside the whole's mask
        p, w = dense[best[part]], dense[best["whole"]]
        assert (p & w).sum() / p.sum() > 0.97
    # and nothing merges the square with the background
    cover = (dense & whole).sum((1, 2)) / whole.sum()
    assert all(iou(m, whole) >= 0.8 for m in dense[cover > 0.7])
    # the part boundary is the weaker one: the whole's inner contrast exceeds each part's
    c = props.meta["contrast"]
    assert c[best["whole"]] > max(c[best["left"]], c[best["right"]])


def test_large_image_is_built_at_work_size_and_refitted_at_full_size():
    img, disc = disc_scene(h=330, w=390, centre=(160, 200), radius=70)
    props = classical_proposals(img, work_size=128)
    assert props.size == (330, 390)
    dense = props.to_dense()
    k = int(np.argmax([iou(m, disc) for m in dense]))
    assert iou(dense[k], disc) > 0.95
    # boundaries drawn on the full-size image, not blocky upsampled work-size pixels (x3)
    assert edge_distance(disc)[dense[k] ^ disc].max() <= 1.5


def test_meta_limits_and_determinism():
    img, _ = disc_scene()
    a = classical_proposals(img, max_contrast=10.0, min_persistence=3.0)
    b = classical_proposals(img, max_contrast=10.0, min_persistence=3.0)
    assert a == b and len(a) > 0
    assert (a.meta["contrast"] <= 10.0).all() and (a.meta["persistence"] >= 3.0).all()
    assert (a.meta["predicted_iou"] == 1.0).all()
    h, w = a.size
    assert (a.area >= 0.0005 * h * w).all() and (a.area < h * w).all()
    capped = classical_proposals(img, max_masks=3)
    assert len(capped) == 3
    dense = a.to_dense()
    inter = (dense[:, None] & dense[None]).sum((2, 3))
    union = (dense[:, None] | dense[None]).sum((2, 3))
    np.fill_diagonal(inter, 0)
    assert (inter / union <= 0.9).all()  # deduplicated at dedup_iou


def test_flat_image_has_no_regions():
    props = classical_proposals(np.full((40, 50, 3), 128, np.uint8))
    assert len(props) == 0 and props.size == (40, 50) and "contrast" in props.meta


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (3, 2), (17, 5), (2, 300), (64, 64)])
def test_odd_sizes_give_valid_proposals(hw):
    rng = np.random.default_rng(hw[0] * 1000 + hw[1])
    noise = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    for img in (noise, np.full((*hw, 3), 90, np.uint8)):
        props = classical_proposals(img)
        assert props.size == hw and (props.area < hw[0] * hw[1]).all()
        assert set(props.meta) == {"predicted_iou", "contrast", "persistence"}
    if hw[1] >= 5:  # two flat halves of different colours: exactly those two regions
        img = np.full((*hw, 3), 90, np.uint8)
        img[:, hw[1] // 2 :] = 200
        dense = classical_proposals(img).to_dense()
        left = np.zeros(hw, bool)
        left[:, : hw[1] // 2] = True
        assert len(dense) == 2 and {m.tobytes() for m in dense} == {
            left.tobytes(),
            (~left).tobytes(),
        }


def test_legacy_multiscale_parameters_select_the_old_method():
    img, _ = disc_scene(h=60, w=70, centre=(30, 35), radius=12)
    old = classical_proposals(img, scales=(64, 256), slic_segments=())
    assert "scale" in old.meta and set(old.meta["scale"]) <= {0, 1}
    assert old == classical_proposals(img, method="multiscale", scales=(64, 256), slic_segments=())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "sam"}, "method must be"),
        ({"method": "hierarchy", "smooth_radius": 2}, "only apply to method='multiscale'"),
        ({"min_persistence": 0.5}, "min_persistence >= 1"),
        ({"dedup_iou": 0.0}, "dedup_iou"),
        ({"max_masks": -1}, "max_masks"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    img, _ = disc_scene(h=40, w=40, centre=(20, 20), radius=8)
    with pytest.raises(ValueError, match=match):
        classical_proposals(img, **kwargs)
    with pytest.raises(ValueError, match="uint8 RGB"):
        classical_proposals(img.astype(float))
