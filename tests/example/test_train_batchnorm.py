"""The CPU all-reduce BatchNorm: plain BatchNorm's values, and the same bits for any batch split."""

from __future__ import annotations

import torch
from torch import nn

from examples.semires_lavt.distributed import AllReduceBatchNorm2d


def test_equals_plain_batchnorm_values_gradients_and_running_stats():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 7, 3) * 3 + 1
    reference = nn.BatchNorm2d(5)
    exact = AllReduceBatchNorm2d(5)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    exact.load_state_dict(reference.state_dict())
    weights = torch.randn_like(x)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (reference(a) * weights).sum().backward()
    out = exact(b)
    (out * weights).sum().backward()
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference(x.clone()).detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(exact.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-5)
    # the reference ran twice in train mode above; compare after one update each
    fresh = nn.BatchNorm2d(5)
    fresh(x)
    check = AllReduceBatchNorm2d(5)
    check(x)
    torch.testing.assert_close(check.running_mean, fresh.running_mean)
    torch.testing.assert_close(check.running_var, fresh.running_var)
    assert int(check.num_batches_tracked) == 1
    check.eval()
    torch.testing.assert_close(check(x), fresh.eval()(x))


def test_statistics_do_not_depend_on_the_order_of_the_batch():
    """float64 statistics: permuting the samples permutes the output bits exactly.

    A float32 sum of a permuted (or split) batch rounds differently, by about 1e-7: enough for
    a value near 0 to fall on the other side of the next ReLU, which is what made a 1-process
    and a 2-process run differ by percents (tests/example/test_train_ddp.py).
    """
    torch.manual_seed(1)
    x = torch.randn(8, 16, 9, 9) * 5 + 3
    layer = AllReduceBatchNorm2d(16)
    order = torch.randperm(8)
    out = layer(x)
    assert torch.equal(layer(x[order]), out[order])
