"""crate_lite.flops: counts of known operations, the per-call term of CRATE's fast ISTA step,
the peak table, the achieved fraction, and clear refusals of bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crate_lite import flops
from crate_lite.models import CRATE, CRATEConfig, ViT

B, D_IN, D_OUT = 4, 16, 8


def test_linear_layer_forward_is_2_b_in_out_and_backward_doubles_it():
    layer = nn.Linear(D_IN, D_OUT)
    x = torch.randn(B, D_IN)
    forward = 2 * B * D_IN * D_OUT
    assert flops.count_flops(layer, x, backward=False) == forward
    # backward: the weight's gradient (2 B in out) and, when the input requires grad, the input's
    assert flops.count_flops(layer, x) == 2 * forward
    assert flops.count_flops(layer, x.clone().requires_grad_()) == 3 * forward
    assert flops.flops_per_example(layer, x, backward=False) == forward / B


def test_counting_leaves_gradients_as_they_were():
    layer = nn.Linear(D_IN, D_OUT)
    assert layer.weight.grad is None
    flops.count_flops(layer, torch.randn(B, D_IN))
    assert layer.weight.grad is None
    layer.weight.grad = torch.ones_like(layer.weight)
    flops.count_flops(layer, torch.randn(B, D_IN))
    assert torch.equal(layer.weight.grad, torch.ones_like(layer.weight))


def test_cpu_attention_kernel_is_counted_like_the_explicit_products():
    """sdpa's CPU kernel has no formula in PyTorch; ours counts it as Q K^T and A V: 4 b h s^2 d."""
    q = torch.randn(2, 3, 40, 8)
    sdpa = flops.count_flops(lambda t: F.scaled_dot_product_attention(t, t, t), q, backward=False)
    explicit = flops.count_flops(lambda t: torch.softmax(t @ t.mT, -1) @ t, q, backward=False)
    assert sdpa == explicit == 4 * 2 * 3 * 40 * 40 * 8


def test_batch_size_extrapolation_equals_a_direct_count_and_removes_the_per_call_term():
    cfg = CRATEConfig(image_size=8, patch_size=2, channels=1, num_classes=10, dim=16, depth=2, heads=2, dim_head=8)
    X = torch.rand(4, 1, 8, 8)
    for model in (CRATE(cfg), ViT(cfg)):
        direct = flops.flops_per_example(model, X)
        assert flops.flops_per_example(model, X, batch_size=4) == pytest.approx(direct, rel=1e-12)
    # CRATE's fast ISTA forms M = I + eta (D - D^T D) once per call: 2 d^3 FLOPs per layer forward
    crate = CRATE(cfg)
    at_1 = flops.flops_per_example(crate, X, batch_size=1, backward=False)
    at_big = flops.flops_per_example(crate, X, batch_size=10**9, backward=False)
    assert at_1 - at_big == pytest.approx(cfg.depth * 2 * cfg.dim**3, rel=1e-6)


@pytest.mark.parametrize("name, dtype, tflops", [
    ("NVIDIA H200", torch.bfloat16, 989.5), ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.5),
    ("NVIDIA H100 PCIe", torch.float16, 756.5), ("NVIDIA H200 NVL", torch.bfloat16, 835.5),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312.0), ("NVIDIA A100 80GB PCIe", torch.float32, 19.5),
    ("NVIDIA L4", torch.bfloat16, 121.0),
])  # fmt: skip
def test_peak_table(name, dtype, tflops):
    assert flops.peak_flops(name, dtype) == tflops * 1e12


@pytest.mark.parametrize("device, dtype", [
    ("cpu", torch.bfloat16), (torch.device("cpu"), torch.float32), ("NVIDIA H200", torch.float64),
    ("Some Future GPU", torch.bfloat16), ("NVIDIA L40", torch.bfloat16), ("meta", torch.bfloat16),
])  # fmt: skip
def test_peak_unknown_is_none(device, dtype):
    assert flops.peak_flops(device, dtype) is None


def test_achieved():
    out = flops.achieved(2e9, 1000.0, 1e15)
    assert out["flops_per_s"] == 2e12 and out["fraction_of_peak"] == pytest.approx(2e-3)
    assert flops.achieved(2e9, 1000.0, None)["fraction_of_peak"] is None


@pytest.mark.parametrize("call, error, words", [
    (lambda: flops.count_flops("not a model", torch.ones(1)), TypeError, "fn_or_model: expected a callable"),
    (lambda: flops.count_flops(nn.Linear(2, 2), torch.ones(1, 2), backward=1), TypeError, "backward: expected a bool"),
    (lambda: flops.count_flops(lambda x: x @ x.T, torch.ones(2, 2)), ValueError, "backward: expected an output"),
    (lambda: flops.count_flops(lambda x: {"y": x}, torch.ones(2, 2, requires_grad=True)), TypeError,
     "expected its output to be a tensor"),
    (lambda: flops.flops_per_example(nn.Linear(2, 2), [[1.0, 2.0]]), TypeError, "example_batch: expected a torch"),
    (lambda: flops.flops_per_example(nn.Linear(2, 2), torch.ones(0, 2)), ValueError, "at least one example"),
    (lambda: flops.flops_per_example(nn.Linear(2, 2), torch.ones(1, 2), batch_size=8), ValueError,
     "at least two examples"),
    (lambda: flops.flops_per_example(nn.Linear(2, 2), torch.ones(2, 2), batch_size=0), ValueError, "batch_size"),
    (lambda: flops.peak_flops("cuda", "bfloat16"), TypeError, "dtype: expected a torch.dtype"),
    (lambda: flops.peak_flops(0, torch.bfloat16), TypeError, "device: expected a torch.device"),
    (lambda: flops.achieved(0.0, 10.0, None), ValueError, "flops_per_example: expected a finite number > 0"),
    (lambda: flops.achieved(1e9, float("nan"), None), ValueError, "examples_per_s"),
    (lambda: flops.achieved(1e9, 10.0, -1.0), ValueError, "peak"),
])  # fmt: skip
def test_bad_input_is_refused_with_a_clear_message(call, error, words):
    with pytest.raises(error, match=words):
        call()
