"""Regenerate the documentation's pictures from real runs of samrefine.

    python docs/gen_pictures.py            # writes docs/img/*.png (about 10 s on a CPU)

Nothing is drawn by hand. The photograph is scikit-image's ``astronaut`` (a real photo shipped
with the package); the proposals come from :func:`samrefine.library.classical.
classical_proposals` (multi-scale superpixels: not SAM, so no checkpoint is needed), resized
to a 256 x 256 "model input" on runs, as in training; regions covering more than half of the
image are dropped (see :func:`samrefine.demo.demo_data`). The object is the largest proposal
under a fixed pixel of the astronaut's head; the pseudo-labels are that object damaged the way
a noisy teacher would (eroded, dilated, holed, with a spurious blob). Matching is
:func:`samrefine.refine`, the pictures :mod:`samrefine.viz`, the counts :func:`samrefine.audit`.
PNGs are palette-quantised (256 colours) to keep the repository small.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image
from scipy import ndimage

import samrefine as sr
from samrefine.demo import corrupt_mask, demo_data

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "img")
SIZE = 256
PANEL = 160
HEAD = (0.2, 0.45)  # (y, x) as fractions of the image: a pixel of the astronaut's head


def save(arr: np.ndarray, name: str) -> None:
    path = os.path.join(OUT, name)
    Image.fromarray(arr).quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}  {arr.shape[1]}x{arr.shape[0]}  {os.path.getsize(path) // 1024} KiB")


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    d = demo_data("astronaut", samples=1, size=SIZE)
    image, library = d["image"], d["library"]
    dense = library.to_dense()
    share = library.area / SIZE**2
    y, x = int(HEAD[0] * SIZE), int(HEAD[1] * SIZE)
    cand = [k for k in range(len(library)) if dense[k, y, x] and 0.03 < share[k] < 0.3]
    k = max(cand, key=lambda i: share[i])
    gt = dense[k]
    held_out = library[np.arange(len(library)) != k]
    rng = np.random.default_rng(0)
    noisy = corrupt_mask(gt, rng, strength=0.8)

    # Fig. 5 of the paper, twice: the library contains the object, or it does not
    save(
        sr.overlay_refinement(
            image, noisy, library, None, ("iom", "cpi"), gt=gt, panel=PANEL, title="astronaut: head"
        ),
        "iom_cpi_found.png",
    )
    save(
        sr.overlay_refinement(
            image,
            noisy,
            held_out,
            None,
            ("iom", "cpi"),
            gt=gt,
            panel=PANEL,
            title="head, not in library",
        ),
        "iom_cpi_heldout.png",
    )
    # Fig. 3: under-segmentation (full library), over-segmentation (object held out)
    under = ndimage.binary_erosion(gt, iterations=6)
    over = ndimage.binary_dilation(gt, iterations=8)
    save(
        sr.overlay_refinement(
            image,
            under,
            library,
            None,
            ("cpi-u", "cpi-o"),
            gt=gt,
            panel=PANEL,
            title="under-segmented",
        ),
        "cpi_under.png",
    )
    save(
        sr.overlay_refinement(
            image,
            over,
            held_out,
            None,
            ("cpi-u", "cpi-o"),
            gt=gt,
            panel=PANEL,
            title="over-segmented",
        ),
        "cpi_over.png",
    )
    # the proposal library of the image
    save(sr.proposal_grid(image, library, None, max_masks=23, cols=8, panel=112), "proposals.png")
    # PWA on a simulated teacher probability: the noisy mask, blurred
    prob = np.clip(ndimage.gaussian_filter(noisy.astype(np.float64), 6) * 1.1 - 0.05, 0, 1)
    save(sr.pwa_map(prob, None, image=image, panel=PANEL), "pwa.png")
    # Fig. 6: corrections per strategy on 48 corrupted objects of the same photo
    demo = demo_data("astronaut", samples=48, size=SIZE, seed=0)
    report = sr.audit(demo["pseudo"], demo["proposals"], demo["gt"], progress=False)
    save(sr.audit_bars(report, None, width=560), "audit_corrections.png")
    print(report.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
