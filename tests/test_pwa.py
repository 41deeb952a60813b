"""pwa_weight: values at known points, agreement with the formula, gradients, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from samrefine.pwa import pwa_weight


def psi_formula(p: float, gamma: float = 1.3, mu: float = 0.5, var: float = 0.1) -> float:
    """Eq. 9 with var a variance, transcribed with the math module."""
    return gamma - math.exp(-((p - mu) ** 2) / (2.0 * var)) / math.sqrt(2.0 * math.pi * var)


def test_known_points():
    assert psi_formula(0.5) == pytest.approx(0.0384, abs=5e-5)
    assert psi_formula(0.0) == pytest.approx(0.9386, abs=5e-5)
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        assert float(pwa_weight(p)) == pytest.approx(psi_formula(p), rel=0, abs=1e-12)
    got = pwa_weight(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert got[0] == got[2]
    assert got[1] == pytest.approx(0.0384, abs=5e-5)


def test_not_the_literal_printed_normaliser():
    # The paper's printed 1/sqrt(2*pi*sigma) with sigma = sqrt(0.1) would give 0.591 at 0.5.
    literal = 1.3 - 1.0 / math.sqrt(2 * math.pi * math.sqrt(0.1))
    assert literal == pytest.approx(0.591, abs=1e-3)
    assert abs(float(pwa_weight(0.5)) - literal) > 0.5


probs = arrays(
    np.float64,
    st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)),
    elements=st.floats(0.0, 1.0, allow_nan=False),
)


@settings(max_examples=40, deadline=None)
@given(
    p=probs,
    gamma=st.floats(0.0, 3.0),
    mu=st.floats(0.0, 1.0),
    var=st.floats(0.01, 2.0),
)
def test_matches_formula_numpy_and_torch(p, gamma, mu, var):
    expected = np.vectorize(lambda x: psi_formula(x, gamma, mu, var))(p)
    got_np = pwa_weight(p, gamma, mu, var)
    assert isinstance(got_np, np.ndarray) and got_np.dtype == np.float64
    np.testing.assert_allclose(got_np, expected, rtol=1e-12, atol=1e-12)
    got_t = pwa_weight(torch.from_numpy(p), gamma, mu, var)
    assert got_t.dtype == torch.float64 and got_t.shape == p.shape
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=1e-12, atol=1e-12)
    got_f32 = pwa_weight(torch.from_numpy(p).float(), gamma, mu, var)
    assert got_f32.dtype == torch.float32
    np.testing.assert_allclose(got_f32.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_dtypes_and_shapes():
    p = torch.rand(2, 3, 4, 5)
    assert pwa_weight(p).shape == p.shape
    for dt in (torch.float16, torch.bfloat16):
        out = pwa_weight(p.to(dt))
        assert out.dtype == torch.float32
        expected = np.vectorize(psi_formula)(p.to(dt).double().numpy())
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert pwa_weight(np.float32(0.5)).dtype == np.float32
    assert pwa_weight(np.zeros((0, 3), np.float32)).shape == (0, 3)
    assert pwa_weight(np.array([0.5], np.float16)).dtype == np.float32


def test_gradcheck():
    p = torch.rand(3, 4, dtype=torch.float64).clamp(0.01, 0.99).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: pwa_weight(x, 1.3, 0.4, 0.2), (p,))
    # The derivative at a point, against the closed form written independently.
    x = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    pwa_weight(x).backward()
    d = 0.3 - 0.5
    closed = d / 0.1 * math.exp(-(d**2) / 0.2) / math.sqrt(2 * math.pi * 0.1)
    assert float(x.grad) == pytest.approx(closed, rel=1e-12)


@pytest.mark.parametrize(
    "bad",
    [np.array([0.2, 1.5]), np.array([-0.1]), np.array([0.3, np.nan]), torch.tensor([2.0])],
)
def test_rejects_values_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pwa_weight(bad)


def test_validate_false_skips_value_check():
    got = pwa_weight(torch.tensor([1.5], dtype=torch.float64), validate=False)
    assert float(got[0]) == pytest.approx(psi_formula(1.5), abs=1e-12)


@pytest.mark.parametrize(
    "bad, exc",
    [
        (np.array([0, 1]), TypeError),
        (torch.tensor([True]), TypeError),
        (True, TypeError),
        ("0.5", TypeError),
        ([0.5], TypeError),
    ],
)
def test_rejects_non_probabilities(bad, exc):
    with pytest.raises(exc, match="prob"):
        pwa_weight(bad)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="var"):
        pwa_weight(0.5, var=0.0)
    with pytest.raises(TypeError, match="gamma"):
        pwa_weight(0.5, gamma=float("nan"))


def test_compiles_without_graph_break():
    fn = torch.compile(lambda x: pwa_weight(x), backend="aot_eager", fullgraph=True)
    p = torch.rand(2, 8, 8)
    torch.testing.assert_close(fn(p), pwa_weight(p))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stays_on_device():
    p = torch.rand(2, 16, 16, device="cuda")
    out = pwa_weight(p)
    assert out.device == p.device
    torch.testing.assert_close(out.cpu(), pwa_weight(p.cpu()))
