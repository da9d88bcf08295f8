"""Batch augmentation on the batch's device, driven by one CPU generator.

An augmentation is a function ``augment(x, generator) -> x`` on a whole batch
``x`` (B, C, H, W), any dtype, on any device. The few random numbers it needs (B offsets,
B coin flips) are drawn on the CPU from ``generator``, so the result is a pure function of
the generator's state, the same on CPU and GPU; the pixels are then moved by indexing on
``x.device``, so a GPU is never starved by a per-image CPU loop. The training loop
passes a generator seeded by ``(seed, step, rank)``, which keeps exact resume.

Why pure torch and not torchvision: torchvision 0.28.0, the release pinned to torch 2.13.0
(``torch==2.13.0`` exactly), is on the package index here, and its ``transforms.v2`` do
run on tensors on any device. But given a batch, ``v2.RandomCrop`` and
``v2.RandomHorizontalFlip`` draw *one* offset or coin for the whole batch (every image moves
the same way), and they draw it from torch's global RNG (``torch.randint(..., size=())``
in ``make_params``), not from a generator passed in. Per-image draws from a given
generator would need a Python loop over the batch (one call per image, one kernel launch
each on a GPU) around torchvision's functional ops. The batched version below is a dozen
lines of indexing, so we write those and add no dependency (which would also pin the
torch version exactly).

- :func:`random_crop` (``padding``): zero-pad by ``padding`` on every side, crop back to
  (H, W) at a random offset per image (the CIFAR recipe, ``padding=4``).
- :func:`random_shift` (``max_shift``): the same operation under the name chapter 07 uses.
- :func:`random_hflip` (``p``): mirror each image left-right with probability ``p``;
  :func:`hflip` is the deterministic mirror.
- :func:`compose`: apply several in turn with the same generator.

For self-distillation (chapter 11), on floating images:

- :func:`random_resized_crop` (``size``, ``scale``, ``ratio``): a random box per image
  (:func:`random_boxes`) resized to (size, size) by bilinear interpolation (:func:`resized_crop`);
- :func:`color_jitter` and :func:`random_grayscale`: per-image brightness, contrast, saturation
  and grey conversion (RGB images);
- :func:`multi_crop`: DINO's views, ``(x, generator) -> [global views..., local views...]``, a
  list of batches of two sizes; as ``augment=`` of ``train.fit`` the list becomes the batch's
  first element.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .. import _validate as v

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check_batch(x: torch.Tensor) -> torch.Tensor:
    return v.tensor("x", x, ndim=4, floating=False, finite=False)


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if v.generator("generator", generator) is not None and generator.device.type != "cpu":
        raise ValueError(f"generator: expected a CPU torch.Generator, got one on {generator.device}")
    return generator


def crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad ``x`` (B, C, H, W) by ``padding`` and take for image b the (H, W) window whose
    corner is at ``(top[b], left[b])`` of the padded image (offsets in [0, 2 padding]).
    ``top = left = padding`` gives ``x`` back. Returns (B, C, H, W) on ``x.device``."""
    B, _, H, W = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    rows = (top[:, None] + torch.arange(H)[None, :]).to(x.device)  # (B, H)
    cols = (left[:, None] + torch.arange(W)[None, :]).to(x.device)  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def random_crop(padding: int) -> Augment:
    """Augmentation: zero-pad each image (B, C, H, W) by ``padding`` and crop (H, W) back at
    an offset drawn per image, i.e. translate it by up to ``padding`` pixels each way.

    Draws: ``top`` then ``left``, each ``randint(0, 2 padding + 1, (B,))`` from the generator.
    ``padding=0`` is the identity (and draws nothing).
    """
    v.integer("padding", padding, minimum=0)

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x)
        if padding == 0:
            return x
        g = _cpu_generator(generator)
        B = x.shape[0]
        top = torch.randint(0, 2 * padding + 1, (B,), generator=g)
        left = torch.randint(0, 2 * padding + 1, (B,), generator=g)
        return crop(x, top, left, padding)

    return augment


def random_shift(max_shift: int) -> Augment:
    """Augmentation: translate each image (B, C, H, W) by up to ``max_shift`` pixels in each
    direction (zero fill), drawn from the generator the loop passes (seeded by seed, step, rank).
    The same operation, and the same draws, as ``random_crop(max_shift)``."""
    v.integer("max_shift", max_shift, minimum=0)
    return random_crop(max_shift)


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror every image of ``x`` (B, C, H, W) left-right (an involution)."""
    return _check_batch(x).flip(-1)


def random_hflip(p: float = 0.5) -> Augment:
    """Augmentation: mirror each image (B, C, H, W) left-right with probability ``p``.

    Draws: ``rand(B)`` from the generator; image b flips when its draw is below ``p``.
    """
    p = v.positive("p", p, allow_zero=True)
    if p > 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(x)
        flip = torch.rand(x.shape[0], generator=_cpu_generator(generator)) < p  # (B,)
        return torch.where(flip.to(x.device)[:, None, None, None], hflip(x), x)

    return augment


def compose(*augments: Augment) -> Augment:
    """Augmentation: apply ``augments`` in order, all drawing from the one generator."""
    for i, a in enumerate(augments):
        if not callable(a):
            raise TypeError(f"augments[{i}]: expected a callable (x, generator) -> x, got {type(a).__name__}")

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for a in augments:
            x = a(x, generator)
        return x

    return augment


# ----------------------------------------------------------------------------- multi-crop (chapter 11)
def _interval(name: str, value: object, *, upper: float | None = None) -> tuple[float, float]:
    """A pair (lo, hi) of finite numbers with 0 < lo <= hi (and hi <= ``upper`` when given)."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(f"{name}: expected a pair (lo, hi), got {value!r}")
    lo, hi = v.positive(f"{name}[0]", value[0]), v.positive(f"{name}[1]", value[1])
    if lo > hi or (upper is not None and hi > upper):
        bound = f" and hi <= {upper}" if upper is not None else ""
        raise ValueError(f"{name}: expected 0 < lo <= hi{bound}, got ({lo}, {hi})")
    return lo, hi


def _check_images(x: torch.Tensor) -> torch.Tensor:
    return v.tensor("x", x, ndim=4, finite=False)  # floating: resampling interpolates


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box b of image b of ``x`` (B, C, H, W) and resize it to (size, size) by bilinear
    interpolation. ``boxes`` (B, 4) holds (centre_x, centre_y, width, height) as fractions of the
    image's width and height. The box (0.5, 0.5, 1, 1) is the whole image. Returns
    (B, C, size, size) on ``x.device``: output pixel (i, j) samples the box at the centre of cell
    (i, j) of a size x size grid laid over it (``align_corners=False``)."""
    x = _check_images(x)
    boxes = v.tensor("boxes", boxes, ndim=2)
    v.shape("boxes", boxes, (x.shape[0], 4))
    v.integer("size", size, minimum=1)
    B = x.shape[0]
    cx, cy, w, h = boxes.to(device=x.device, dtype=x.dtype).unbind(1)  # (B,) each
    theta = torch.zeros(B, 2, 3, dtype=x.dtype, device=x.device)  # output grid [-1, 1]^2 -> input coordinates
    theta[:, 0, 0], theta[:, 0, 2] = w, 2 * cx - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
    grid = F.affine_grid(theta, [B, x.shape[1], size, size], align_corners=False)  # (B, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_boxes(
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` random crop boxes (n, 4) as (centre_x, centre_y, width, height), fractions of the image.

    The area fraction a ~ U(scale) and the aspect ratio r = exp(U(log ratio)) are drawn per box;
    width sqrt(a r) and height sqrt(a / r), each capped at 1; the centre uniform over the places
    where the box fits. Draws, in this order: a, log r, centre_x, centre_y, each ``rand(n)``.
    (torchvision's ``RandomResizedCrop`` redraws up to 10 times where a box does not fit and then
    falls back to a centre crop; capping at 1 keeps the draws a fixed number, batched.)
    """
    v.integer("n", n, minimum=1)
    lo, hi = _interval("scale", scale, upper=1.0)
    rlo, rhi = _interval("ratio", ratio)
    g = _cpu_generator(generator)
    area = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    log_r = math.log(rlo) + (math.log(rhi) - math.log(rlo)) * torch.rand(n, generator=g, dtype=torch.float64)
    w = (area * log_r.exp()).sqrt().clamp(max=1.0)
    h = (area / log_r.exp()).sqrt().clamp(max=1.0)
    cx = w / 2 + (1 - w) * torch.rand(n, generator=g, dtype=torch.float64)
    cy = h / 2 + (1 - h) * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.stack([cx, cy, w, h], dim=1).float()  # (n, 4)


def random_resized_crop(size: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Augment:
    """Augmentation: from each image (B, C, H, W) cut a random box (:func:`random_boxes`: area
    fraction in ``scale``, aspect ratio in ``ratio``) and resize it to (size, size) by bilinear
    interpolation (:func:`resized_crop`). Floating images only. DINO's crops: ``scale=(0.4, 1)``
    for the global views, ``(0.05, 0.4)`` for the local ones (chapter 11)."""
    v.integer("size", size, minimum=1)
    scale, ratio = _interval("scale", scale, upper=1.0), _interval("ratio", ratio)

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _check_images(x)
        return resized_crop(x, random_boxes(x.shape[0], scale, ratio, generator=generator), size)

    return augment


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W) of RGB images (B, 3, H, W), ITU-R 601 weights (as torchvision)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def random_grayscale(p: float = 0.2) -> Augment:
    """Augmentation: replace each RGB image (B, 3, H, W) by its luma in all three channels
    with probability ``p``. Draws: ``rand(B)``."""
    p = _probability(p)

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _check_rgb(x)
        pick = torch.rand(x.shape[0], generator=_cpu_generator(generator)) < p  # (B,)
        return torch.where(pick.to(x.device)[:, None, None, None], _gray(x).expand_as(x), x)

    return augment


def color_jitter(brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.2, p: float = 0.8) -> Augment:
    """Augmentation: with probability ``p`` per RGB image (B, 3, H, W) in [0, 1], scale its
    brightness, contrast and saturation, in this order, by factors drawn from
    U(1 - s, 1 + s) for s = ``brightness``, ``contrast``, ``saturation``:

        x <- b x;   x <- m + c (x - m), m = mean luma of the image;   x <- g + s (x - g), g = luma,

    each followed by clipping to [0, 1] (DINO's ``ColorJitter(0.4, 0.4, 0.2, hue=0.1)`` applied
    with p = 0.8, in a fixed order and without the hue shift). Draws: ``rand(B)`` for the coin,
    then ``rand(B)`` for each factor."""
    s = [v.positive(n, x, allow_zero=True) for n, x in (("brightness", brightness), ("contrast", contrast))]
    s.append(v.positive("saturation", saturation, allow_zero=True))
    for name, x in zip(("brightness", "contrast", "saturation"), s):
        if x > 1:
            raise ValueError(f"{name}: expected a strength in [0, 1], got {x}")
    p = _probability(p)

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = _check_rgb(x)
        g, B = _cpu_generator(generator), x.shape[0]
        apply = (torch.rand(B, generator=g) < p).to(x.device)[:, None, None, None]  # (B, 1, 1, 1)
        f = [(1 - st + 2 * st * torch.rand(B, generator=g)).to(x.device, x.dtype)[:, None, None, None] for st in s]
        y = (x * f[0]).clamp(0, 1)  # brightness
        m = _gray(y).mean((-2, -1), keepdim=True)  # (B, 1, 1, 1)
        y = (m + f[1] * (y - m)).clamp(0, 1)  # contrast
        gray = _gray(y)  # (B, 1, H, W)
        y = (gray + f[2] * (y - gray)).clamp(0, 1)  # saturation
        return torch.where(apply, y, x)

    return augment


def _probability(p: object) -> float:
    p = v.positive("p", p, allow_zero=True)
    if p > 1:
        raise ValueError(f"p: expected a probability in [0, 1], got {p}")
    return p


def _check_rgb(x: torch.Tensor) -> torch.Tensor:
    x = _check_images(x)
    if x.shape[1] != 3:
        raise ValueError(f"x: expected RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
    return x


def multi_crop(
    global_size: int,
    local_size: int,
    n_local: int,
    *,
    n_global: int = 2,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
    flip: bool = True,
    color: Augment | None = None,
) -> Callable[[torch.Tensor, torch.Generator], list[torch.Tensor]]:
    """DINO's multi-crop (Caron et al., arXiv:2104.14294; chapter 11): a
    function ``(x, generator) -> views`` that turns a batch (B, C, H, W) into ``n_global``
    views (B, C, global_size, global_size) followed by ``n_local`` views (B, C, local_size,
    local_size), each a :func:`random_resized_crop` (scales ``global_scale``, ``local_scale``),
    then a random horizontal flip (``flip``), then ``color`` (e.g. ``compose(color_jitter(),
    random_grayscale())``) when given. All views come from the one generator, view after view, so
    the list is a pure function of its state.

    Passed as ``augment=`` to :func:`crate_lite.train.fit`, the list replaces the batch's first
    tensor: the loss receives ``(views, ...)``.
    """
    for name, n in (("global_size", global_size), ("local_size", local_size), ("n_global", n_global)):
        v.integer(name, n, minimum=1)
    v.integer("n_local", n_local, minimum=0)
    v.flag("flip", flip)
    if color is not None and not callable(color):
        raise TypeError(f"color: expected a callable (x, generator) -> x or None, got {type(color).__name__}")
    crops = [random_resized_crop(global_size, global_scale)] * n_global
    crops += [random_resized_crop(local_size, local_scale)] * n_local
    mirror = random_hflip(0.5)

    def augment(x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        views = []
        for crop_view in crops:
            y = crop_view(x, generator)
            y = mirror(y, generator) if flip else y
            views.append(color(y, generator) if color is not None else y)
        return views

    return augment
