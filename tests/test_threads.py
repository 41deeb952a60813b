"""samrefine never changes torch's (or numpy's) global thread settings (issue 14).

numba's ``omp`` threading layer calls ``omp_set_num_threads`` when it starts, and torch shares
that OpenMP runtime: the first parallel ``refine`` used to turn a user's
``torch.set_num_threads(1)`` into 2. Measured in a fresh process (the layer starts once per
process) with two numba threads, so the parallel kernel really runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys
import numpy as np
import torch
torch.set_num_threads(1)
torch.set_num_interop_threads(1)
import numba
import samrefine as sr

rng = np.random.default_rng(0)
masks = rng.random((3, 4, 16, 16)) > 0.5
props = [sr.Proposals.from_dense(m) for m in masks]
pseudo = rng.random((3, 16, 16)) > 0.5
before = [torch.get_num_threads(), torch.get_num_interop_threads()]
out = sr.refine(pseudo, props, "cpi-u")
after = [torch.get_num_threads(), torch.get_num_interop_threads()]
out2 = sr.refine(pseudo, props, "iom")
again = [torch.get_num_threads(), torch.get_num_interop_threads()]
print(json.dumps({"before": before, "after": after, "again": again,
                  "numba_threads": numba.get_num_threads(), "layer": numba.threading_layer()}))
"""


def _run(extra_env: dict) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_THREADING_LAYER")
    }
    env.update(NUMBA_NUM_THREADS="2", **extra_env)
    src = os.path.join(os.path.dirname(__file__), os.pardir, "src")
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    got = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert got.returncode == 0, got.stderr[-3000:]
    return json.loads(got.stdout.strip().splitlines()[-1])


def test_refine_keeps_torch_thread_count_with_default_layer():
    got = _run({})
    assert got["numba_threads"] == 2  # the parallel kernel ran with 2 threads
    assert got["before"] == [1, 1]
    assert got["after"] == [1, 1], got
    assert got["again"] == [1, 1], got


def test_refine_keeps_torch_thread_count_with_openmp_layer():
    # the layer that caused it, chosen explicitly (what 'default' picks without TBB)
    got = _run({"NUMBA_THREADING_LAYER": "omp"})
    assert got["layer"] == "omp"
    assert got["after"] == [1, 1], got
