"""What a model costs: FLOPs per example, achieved FLOP/s, and the fraction of a device's peak.

Chapter 09 reports, for each model it trains, three numbers:

- **FLOPs per example** F: the floating-point operations of one training step divided by
  the batch size, counted by ``torch.utils.flop_counter.FlopCounterMode`` (forward and
  backward by default). A matrix product (m, k) x (k, n) counts 2 m k n (one multiply and
  one add per term); so a Linear layer on a batch (B, d_in) -> (B, d_out) costs 2 B d_in d_out
  forward and twice that backward (the gradients of its input and of its weight), 3x in all.
  Only matrix products, convolutions and attention are counted: element-wise work (LayerNorm,
  softmax, GELU, the optimizer) is memory-bound and left out, as in the usual "model FLOPs"
  (Kaplan et al. 2020, arXiv:2001.08361, section 2.1; PaLM's MFU, arXiv:2204.02311, appendix B).
- **Achieved FLOP/s** = F x examples per second (of a measured run).
- **Fraction of peak** (model FLOPs utilisation, MFU) = achieved / the device's dense peak for
  the dtype the products ran in (:func:`peak_flops`; None where the peak is not known, e.g. on
  any CPU).

PyTorch's counter has no formula for the CPU kernel of ``scaled_dot_product_attention``
(``aten._scaled_dot_product_flash_attention_for_cpu`` in torch 2.13), so on the CPU the
attention of the fast CRATE path would count zero; :func:`count_flops` adds that formula
(the same one PyTorch uses for its CUDA kernels), so the count does not depend on the device.

    F = flops.flops_per_example(model, X[:8])                 # forward + backward, per image
    flops.achieved(F, result.examples_per_s, flops.peak_flops(device, torch.bfloat16))
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn
from torch.utils import flop_counter

from . import _validate as v

__all__ = ["PEAK_TFLOPS", "achieved", "count_flops", "flops_per_example", "peak_flops"]


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU attention kernel: 2 b h s_q s_k d (Q K^T) + 2 b h s_q s_k d_v (A V)."""
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU attention kernel's backward (PyTorch's formula for the CUDA kernels)."""
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_CUSTOM = {}
for _name, _formula in (
    ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu),
    ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward),
):
    if hasattr(torch.ops.aten, _name):
        _CUSTOM[getattr(torch.ops.aten, _name)] = _formula


def _first_tensor(out: object) -> torch.Tensor:
    """The tensor to differentiate: ``out`` itself, or the first tensor of a tuple or list."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for x in out:
            if isinstance(x, torch.Tensor):
                return x
    raise TypeError(
        f"fn_or_model: expected its output to be a tensor (or a tuple starting with one) for backward=True, "
        f"got {type(out).__name__}"
    )


def count_flops(fn_or_model: Callable[..., object], *inputs: object, backward: bool = True) -> int:
    """FLOPs of one call ``fn_or_model(*inputs)``: forward, plus with ``backward`` one backward
    pass of the output (of its first tensor if it returns a tuple) with all-ones gradients.

    Counted by ``FlopCounterMode`` (matrix products, convolutions, attention; 2 m k n per
    (m, k) x (k, n) product; see the module docstring). The backward pass computes what
    autograd needs: gradients of every parameter and every input that requires grad (an
    input that does not, such as an image batch, costs no input gradient). Gradients already
    stored in ``.grad`` are left as they were. Raises ``ValueError`` when ``backward`` is set
    but the output does not depend on anything that requires grad.
    """
    if not callable(fn_or_model):
        raise TypeError(f"fn_or_model: expected a callable or an nn.Module, got {type(fn_or_model).__name__}")
    v.flag("backward", backward)
    leaves = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    if isinstance(fn_or_model, nn.Module):
        leaves += [p for p in fn_or_model.parameters() if p.requires_grad]
    saved = [x.grad for x in leaves]
    for x in leaves:  # backward would add into a stored gradient in place
        x.grad = None
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_CUSTOM)
    try:
        with counter, torch.set_grad_enabled(backward or torch.is_grad_enabled()):
            out = fn_or_model(*inputs)
            if backward:
                y = _first_tensor(out)
                if not y.requires_grad:
                    raise ValueError(
                        "backward: expected an output that requires grad (a parameter or an input with "
                        "requires_grad=True), got one that does not; pass backward=False to count the forward only"
                    )
                y.backward(torch.ones_like(y))
    finally:
        for x, g in zip(leaves, saved):
            x.grad = g
    return int(counter.get_total_flops())


def flops_per_example(
    model: Callable[..., object], example_batch: torch.Tensor, *, backward: bool = True, batch_size: int | None = None
) -> float:
    """FLOPs of one training example: :func:`count_flops` of ``model(example_batch)``
    (forward + backward by default) divided by its B = ``example_batch.shape[0]`` examples.

    Some costs do not grow with B: CRATE's fast ISTA step forms its d x d matrix
    M = I + eta (D - D^T D) once per call (2 d^3 FLOPs per layer), which a batch of 2 charges
    half to each example and a batch of 512 almost nothing. With ``batch_size`` the count is
    made for that batch size without running it: every counted cost is affine in B,
    F(B) = a + c B, so two counts, on the first one and the first two examples, give
    c = F(2) - F(1) and a = F(1) - c, and the result is c + a / ``batch_size``. Use the
    model's real input shape (the token count N enters attention as N^2).
    """
    x = v.tensor("example_batch", example_batch, min_ndim=1, floating=False, finite=False)
    if batch_size is None:
        if x.shape[0] < 1:
            raise ValueError(f"example_batch: expected at least one example, got shape {tuple(x.shape)}")
        return count_flops(model, x, backward=backward) / x.shape[0]
    v.integer("batch_size", batch_size, minimum=1)
    if x.shape[0] < 2:
        raise ValueError(f"example_batch: expected at least two examples with batch_size, got shape {tuple(x.shape)}")
    one, two = count_flops(model, x[:1], backward=backward), count_flops(model, x[:2], backward=backward)
    per_example, per_call = two - one, 2 * one - two
    return per_example + per_call / batch_size


# Dense (no structured sparsity) peak tensor throughput in TFLOP/s, from NVIDIA's datasheets
# (https://www.nvidia.com/en-us/data-center/h200/, .../h100/, .../a100/, .../l40s/, .../l4/,
# .../products/a10-gpu/; checked 2026-11-30). The datasheets print the tensor-core numbers
# "with sparsity"; the dense peak is half of that. float32 is the plain (non-tensor-core) FP32
# peak: what float32 matmuls get under torch's default float32_matmul_precision "highest"
# (with TF32 enabled they run up to the TF32 peak instead, not listed here).
# Matched in this order, as whole words, against torch.cuda.get_device_name() (first match wins).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200 NVL": {"bfloat16": 835.5, "float16": 835.5, "float32": 60.0},
    "H200": {"bfloat16": 989.5, "float16": 989.5, "float32": 67.0},  # H200 SXM
    "H100 NVL": {"bfloat16": 835.5, "float16": 835.5, "float32": 60.0},
    "H100 PCIe": {"bfloat16": 756.5, "float16": 756.5, "float32": 51.0},
    "H100": {"bfloat16": 989.5, "float16": 989.5, "float32": 67.0},  # H100 SXM ("NVIDIA H100 80GB HBM3")
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},  # SXM and PCIe, 40 and 80 GB
    "L40S": {"bfloat16": 362.05, "float16": 362.05, "float32": 91.6},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3},
    "A10": {"bfloat16": 125.0, "float16": 125.0, "float32": 31.2},
}
"""Dense peak TFLOP/s by device-name fragment and dtype (sources in the comment above)."""


def _device_name(device: str | torch.device) -> str | None:
    """The GPU's marketing name for a CUDA ``device``; None for any other device, or for a
    CUDA device this machine does not have. A string that is not a device (``"NVIDIA H200"``)
    is taken as the name itself."""
    if isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError:
            return device
    if not isinstance(device, torch.device):
        raise TypeError(
            f"device: expected a torch.device, a str such as 'cuda:0', or a GPU name such as 'NVIDIA H200', "
            f"got {type(device).__name__}"
        )
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        return None
    return torch.cuda.get_device_name(index)


def peak_flops(device: str | torch.device, dtype: torch.dtype) -> float | None:
    """The dense peak FLOP/s of ``device`` for matrix products in ``dtype`` (bfloat16, float16
    or float32), from :data:`PEAK_TFLOPS`; None when it is not known: any CPU or Apple GPU, a
    GPU not in the table, another dtype.

    ``device``: a ``torch.device`` or str (``"cuda:0"``: its name is read from the driver), or
    a GPU name as ``torch.cuda.get_device_name`` gives it (``"NVIDIA H200"``)."""
    v.dtype("dtype", dtype)
    name = _device_name(device)
    if name is None:
        return None
    key = str(dtype).removeprefix("torch.")
    for fragment, peaks in PEAK_TFLOPS.items():  # whole words: "L4" does not match "NVIDIA L40"
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(fragment)}(?![A-Za-z0-9])", name, re.IGNORECASE):
            tflops = peaks.get(key)
            return None if tflops is None else tflops * 1e12
    return None


def achieved(flops_per_example: float, examples_per_s: float, peak: float | None) -> dict[str, float | None]:
    """What a run achieved: ``flops_per_example`` (FLOPs per example), ``examples_per_s`` (of
    the run), ``flops_per_s`` (their product), ``peak_flops_per_s`` (``peak``, None if unknown)
    and ``fraction_of_peak`` (model FLOPs utilisation, None when ``peak`` is None)."""
    f = v.positive("flops_per_example", flops_per_example)
    rate = v.positive("examples_per_s", examples_per_s)
    if peak is not None:
        peak = v.positive("peak", peak)
    flops_per_s = f * rate
    return {
        "flops_per_example": f,
        "examples_per_s": rate,
        "flops_per_s": flops_per_s,
        "peak_flops_per_s": peak,
        "fraction_of_peak": None if peak is None else flops_per_s / peak,
    }
