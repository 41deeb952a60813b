"""benchmarks/gpu_check.sh: without CUDA it says so and exits 0; its summary parsers work."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402


def test_without_cuda_it_says_so_and_exits_0():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout


def test_headlines_read_each_check_output():
    pytest_out = "....\n12 passed, 3 skipped in 41.20s\n"
    assert gpu_check.headline("pytest", pytest_out) == "12 passed, 3 skipped"
    match_out = (
        "CUDA (NVIDIA H200): a batch of 16 samples\n"
        "  iom    0.412 ms  bit-identical to numba: True\n"
        "  cpi-u  0.398 ms  bit-identical to numba: True\n"
        "  cpi    0.401 ms  bit-identical to numba: False\n"
    )
    assert gpu_check.headline("match", match_out) == (
        "ms per batch: iom 0.412, cpi-u 0.398, cpi 0.401; bit-identical to numba: False"
    )
    pieces_out = (
        "piece                          variant                                   median ms  "
        "speed-up\n"
        "EMA update, 88 M floats        reference: state_dict rebuild + load         730.74     "
        "1.00x\n"
        "EMA update, 88 M floats        samrefine EMATeacher.update (foreach)        164.71     "
        "4.44x\n"
    )
    assert gpu_check.headline("pieces", pieces_out) == (
        "EMA update, 88 M floats 164.71 ms (4.44x ref)"
    )
    step_out = (
        "SemiRES step (teacher fwd, targets, student fwd+bwd, AdamW, EMA)      600.5\n"
        "semires_targets / step: 0.1%; peak GPU memory 21.3 GiB\n"
    )
    assert gpu_check.headline("step", step_out) == (
        "step 600.5 ms; semires_targets 0.1% of it; peak 21.3 GiB"
    )
