"""Generator registry, the SAM / SAM 2 / classical generators, and the build loop."""

import os
from functools import partial

import numpy as np
import pytest

from samrefine import Proposals
from samrefine.library import (
    Generator,
    ProposalLibrary,
    build_library,
    get_generator,
    list_generators,
    register_generator,
)
from samrefine.library.generate import _REGISTRY


def tiny_sam(img_size: int = 64, seed: int = 0):
    """A randomly initialised, tiny Segment Anything model (no weights are downloaded)."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    patch, dim = 16, 32
    encoder = ImageEncoderViT(
        depth=1,
        embed_dim=32,
        img_size=img_size,
        mlp_ratio=2,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2,
        patch_size=patch,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=(0,),
        window_size=2,
        out_chans=dim,
    )
    prompt = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(img_size // patch,) * 2,
        input_image_size=(img_size, img_size),
        mask_in_chans=4,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=32, num_heads=2),
        transformer_dim=dim,
        iou_head_depth=1,
        iou_head_hidden_dim=16,
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder).eval()


#: Thresholds at 0 so a random model's masks survive SAM's filters.
TINY_PARAMS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def small_photo(name="coffee", size=(40, 60)):
    from skimage.transform import resize

    from samrefine.demo import photo

    img = resize(photo(name), size, anti_aliasing=True, preserve_range=True)
    return img.astype(np.uint8)


def test_registry():
    assert {"sam", "sam2", "classical"} <= set(list_generators())
    with pytest.raises(KeyError, match="unknown generator 'nope'; registered: classical"):
        get_generator("nope")
    try:

        @register_generator("test-halves")
        def halves(axis=1):
            def run(image):
                h, w = image.shape[:2]
                m = np.zeros((2, h, w), bool)
                if axis == 1:
                    m[0, :, : w // 2] = m[1, :, w // 2 :] = True
                else:
                    m[0, : h // 2] = m[1, h // 2 :] = True
                return m

            return run

        with pytest.raises(ValueError, match="already registered"):
            register_generator("test-halves", halves)
        gen = get_generator("test-halves", axis=0)
        assert gen.provenance == {
            "generator": "test-halves",
            "model": None,
            "checkpoint_sha256": None,
            "params": {"axis": 0},
        }
        props = gen(np.zeros((4, 6, 3), np.uint8))
        expect = np.zeros((2, 4, 6), bool)
        expect[0, :2] = expect[1, 2:] = True
        assert np.array_equal(props.to_dense(), expect)
    finally:
        _REGISTRY.pop("test-halves", None)


def test_classical_generator_records_its_parameters():
    gen = get_generator("classical", max_masks=40)
    assert gen.name == "classical" and gen.params["max_masks"] == 40
    assert gen.params["max_contrast"] == 8.0  # defaults filled in
    assert gen.model == "watershed-hierarchy"
    img = small_photo()
    props = gen(img)
    assert props.size == (40, 60) and 0 < len(props) <= 40
    legacy = get_generator("classical", scales=(64, 256), slic_segments=())
    assert legacy.model == "felzenszwalb+slic" and "scale" in legacy(img).meta
    with pytest.raises(ValueError, match="only apply to method='multiscale'"):
        get_generator("classical", method="hierarchy", scales=(64,))
    with pytest.raises(ValueError, match="unknown classical_proposals parameter"):
        get_generator("classical", bogus=1)


def test_tiny_sam_generator_matches_segment_anything():
    from segment_anything import SamAutomaticMaskGenerator

    img = small_photo("astronaut", (48, 40))
    gen = get_generator("sam", model=tiny_sam(), device="cpu", **TINY_PARAMS)
    props = gen(img)
    assert len(props) > 0 and props.size == (48, 40)
    assert gen.params["box_nms_thresh"] == 0.7 and gen.params["points_per_side"] == 4
    assert gen.model == "Sam"
    direct = SamAutomaticMaskGenerator(tiny_sam(), **TINY_PARAMS).generate(img)
    assert len(direct) == len(props)
    dense = np.stack([r["segmentation"] for r in direct])
    assert np.array_equal(props.to_dense(), dense)
    np.testing.assert_allclose(props.meta["predicted_iou"], [r["predicted_iou"] for r in direct])
    with pytest.raises(ValueError, match="unknown SamAutomaticMaskGenerator parameter"):
        get_generator("sam", model=tiny_sam(), points_per_sid=3)
    with pytest.raises(ValueError, match="needs checkpoint"):
        get_generator("sam")


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("SAMREFINE_SLOW_TESTS"),
    reason="a random SAM 2 (Hiera-T, 1024 px) takes ~10 s on CPU; set SAMREFINE_SLOW_TESTS=1",
)
def test_sam2_generator_with_a_random_model():
    from sam2.build_sam import build_sam2

    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
    gen = get_generator(
        "sam2",
        model=model,
        device="cpu",
        points_per_side=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
    )
    props = gen(small_photo("chelsea", (32, 48)))
    assert props.size == (32, 48) and len(props) > 0 and "predicted_iou" in props.meta


def test_build_retries_reports_failures_and_resumes(tmp_path):
    calls = {}

    def flaky(image):
        key = int(image[0, 0, 0])
        calls[key] = calls.get(key, 0) + 1
        if key == 3:
            raise RuntimeError("boom")
        if key == 5 and calls[key] == 1:
            raise RuntimeError("transient")
        return image[None, ..., 1] > key * 10

    def load(key):
        img = np.zeros((6, 9, 3), np.uint8)
        img[..., 0] = key
        img[..., 1] = np.arange(54).reshape(6, 9) * 4
        return img

    gen = Generator("flaky", flaky, params={"v": 1})
    res = build_library(tmp_path / "f.srlib", range(8), gen, load=load, retries=1, progress=False)
    assert not res.finished and set(res.failures) == {3} and "boom" in res.failures[3]
    assert calls[5] == 2 and calls[3] == 2  # one retry each
    lib = ProposalLibrary.open(tmp_path / "f.srlib")
    assert 3 not in lib and len(lib) == 7 and lib.failures() == {3: "RuntimeError: boom"}
    lib.close()
    # a fixed generator, same provenance: only image 3 is generated again
    calls.clear()
    fixed = Generator("flaky", lambda im: im[None, ..., 1] > 30, params={"v": 1})
    res = build_library(tmp_path / "f.srlib", range(8), fixed, load=load, progress=False)
    assert res.finished and res.added == 1 and res.skipped == 7 and not calls
    lib = ProposalLibrary.open(tmp_path / "f.srlib")
    assert len(lib) == 8 and lib.failures() == {}
    assert lib[5] == Proposals.from_dense(load(5)[None, ..., 1] > 50)
    # re-running a finished build does nothing
    again = build_library(tmp_path / "f.srlib", range(8), fixed, load=load, progress=False)
    assert again.finished and again.added == 0


def test_build_checks_its_inputs(tmp_path):
    gen = get_generator("classical")
    with pytest.raises(FileNotFoundError, match="image folder"):
        build_library(tmp_path / "x.srlib", [1], gen, images=tmp_path / "none")
    with pytest.raises(ValueError, match="images="):
        build_library(tmp_path / "x.srlib", [1], gen)
    with pytest.raises(ValueError, match="0 <= i < n"):
        build_library(tmp_path / "x.srlib", [1], gen, images=tmp_path, shard="2/2")


def _pid_logging_levels(log_dir):
    """A generator of two level-set masks that notes the pid of the process that ran it; it
    fails on images whose first pixel is 3 (the image's key, see ``_keyed_image``)."""

    def run(image):
        with open(os.path.join(log_dir, f"{os.getpid()}.pid"), "a") as f:
            f.write(f"{int(image[0, 0, 0])}\n")
        if image[0, 0, 0] == 3:
            raise RuntimeError("boom on 3")
        return np.stack([image[..., 1] > 60, image[..., 1] > 120])

    return run


def _keyed_image(key):
    img = np.zeros((7, 9, 3), np.uint8)
    img[..., 0] = key
    img[..., 1] = (np.arange(63).reshape(7, 9) * 3 + key * 5) % 256
    return img


def test_workers_generate_in_other_processes_and_write_the_same_library(tmp_path):
    logs = {n: tmp_path / f"log{n}" for n in (1, 2)}
    results = {}
    for n, log_dir in logs.items():
        log_dir.mkdir()
        gen = Generator("levels", _pid_logging_levels(str(log_dir)), params={"v": 1})
        results[n] = build_library(
            tmp_path / f"w{n}.srlib",
            range(10),
            gen,
            load=_keyed_image,  # a plain function; the generator is a closure (not picklable)
            workers=n,
            retries=1,
            allow_failures=True,
            progress=False,
        )
    for res in results.values():
        assert res.finished and res.added == 9 and set(res.failures) == {3}
        assert "boom on 3" in res.failures[3]
    pids = {int(p.stem) for p in logs[2].iterdir()}
    worker_pids = pids - {os.getpid()}
    assert worker_pids and len(worker_pids) <= 2  # generated in the worker processes
    # key 3's retry ran here, in the writing process, after its worker attempt failed
    assert "3" in (logs[2] / f"{os.getpid()}.pid").read_text().split()
    with (
        ProposalLibrary.open(tmp_path / "w1.srlib") as one,
        ProposalLibrary.open(tmp_path / "w2.srlib") as two,
    ):
        assert one.image_ids().tolist() == two.image_ids().tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
        assert one.info["content_sha256"] == two.info["content_sha256"]  # byte-equal records
        for key in one.image_ids().tolist():
            img = _keyed_image(key)
            expected = Proposals.from_dense(np.stack([img[..., 1] > 60, img[..., 1] > 120]))
            assert two[key] == expected
        assert two.failures() == {3: results[2].failures[3]}


def test_workers_fail_fast_and_check_their_count(tmp_path):
    gen = Generator("bad", lambda image: 1 / 0)
    with pytest.raises(RuntimeError, match="first 4 images all failed, so nothing was built"):
        build_library(
            tmp_path / "x.srlib",
            range(50),
            gen,
            load=_keyed_image,
            workers=2,
            fail_fast=4,
            progress=False,
        )
    assert not (tmp_path / "x.srlib").exists()
    for bad in (0, -1, 1.0):
        with pytest.raises(ValueError, match="workers must be"):
            build_library(tmp_path / "y.srlib", [1], gen, load=_keyed_image, workers=bad)


def test_workers_without_fork_are_refused_up_front(tmp_path, monkeypatch):
    """Where fork is missing (Windows, or a Python that drops it), the build says so and names
    the alternatives before it opens the library."""
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    gen = Generator("id", lambda image: Proposals.empty(image.shape[:2]))
    with pytest.raises(ValueError, match="needs forked processes"):
        build_library(tmp_path / "z.srlib", [1], gen, load=_keyed_image, workers=2)
    assert not (tmp_path / "z.srlib").exists()
