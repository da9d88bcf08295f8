"""Batch augmentation: shapes, determinism from the generator, identities, the old random_shift."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crate_lite import data


def _batch(dtype=torch.float32):
    return torch.arange(6 * 3 * 8 * 8, dtype=torch.float32).reshape(6, 3, 8, 8).to(dtype)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "augment",
    [
        data.random_crop(2),
        data.random_shift(3),
        data.random_hflip(0.5),
        data.compose(data.random_crop(4), data.random_hflip()),
    ],
)
def test_same_generator_same_output(augment):
    x = _batch()
    out = augment(x, _g(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, augment(x, _g(1)))
    assert not torch.equal(augment(x, _g(1)), augment(x, _g(2)))


def test_crop_with_zero_shift_is_identity():
    x = _batch()
    assert torch.equal(data.random_crop(0)(x, _g()), x)
    centre = torch.full((6,), 3)
    assert torch.equal(data.crop(x, centre, centre, 3), x)  # offset = padding: no move


def test_crop_moves_content_and_zero_fills():
    x = _batch()
    B = len(x)
    out = data.crop(x, torch.zeros(B, dtype=torch.int64), torch.full((B,), 4), 2)  # down 2, left 2
    assert torch.equal(out[:, :, 2:, :6], x[:, :, :6, 2:])
    assert float(out[:, :, :2].abs().max()) == 0 and float(out[:, :, :, 6:].abs().max()) == 0


def test_random_shift_matches_old_implementation():
    """random_shift draws dy then dx per image and pads with zeros, as train.py's did."""
    x, s = _batch(), 2
    g = _g(5)
    dy = torch.randint(0, 2 * s + 1, (6,), generator=g)
    dx = torch.randint(0, 2 * s + 1, (6,), generator=g)
    padded = F.pad(x, (s, s, s, s))
    want = torch.stack([padded[b, :, dy[b] : dy[b] + 8, dx[b] : dx[b] + 8] for b in range(6)])
    assert torch.equal(data.random_shift(s)(x, _g(5)), want)


def test_flip_is_an_involution_and_random_flip_is_per_image():
    x = _batch()
    assert torch.equal(data.hflip(data.hflip(x)), x)
    flip = data.random_hflip(0.5)
    once = flip(x, _g(3))
    assert torch.equal(flip(once, _g(3)), x)  # same draws flip the same images back
    flipped = [not torch.equal(once[b], x[b]) for b in range(6)]
    assert all(torch.equal(once[b], x[b].flip(-1)) for b in range(6) if flipped[b])
    assert torch.equal(data.random_hflip(1.0)(x, _g()), data.hflip(x))
    assert torch.equal(data.random_hflip(0.0)(x, _g()), x)


def test_integer_images_and_pixel_multiset():
    x = _batch(torch.uint8)
    out = data.random_hflip()(x, _g())
    assert out.dtype == torch.uint8 and torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_gpu_equals_cpu():
    aug = data.compose(data.random_crop(4), data.random_hflip())
    x = torch.rand(16, 3, 32, 32)
    out = aug(x.cuda(), _g(7))
    assert out.device.type == "cuda" and torch.equal(out.cpu(), aug(x, _g(7)))


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: data.random_crop(-1), ValueError, "padding"),
        (lambda: data.random_shift(-1), ValueError, "max_shift"),
        (lambda: data.random_hflip(1.5), ValueError, "p"),
        (lambda: data.compose(3), TypeError, "augments"),
        (lambda: data.random_crop(2)(torch.zeros(3, 8, 8), _g()), ValueError, "x"),
    ],
)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


# ----------------------------------------------------------------------------- multi-crop (chapter 11)
def test_resized_crop_whole_box_is_identity_and_halves_are_halves():
    x = torch.rand(4, 3, 8, 8)
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]]).expand(4, 4)
    torch.testing.assert_close(data.augment.resized_crop(x, whole, 8), x)
    # a box of half the width and height at the top-left, resized to 4 x 4, is the top-left quarter
    quarter = torch.tensor([[0.25, 0.25, 0.5, 0.5]]).expand(4, 4)
    torch.testing.assert_close(data.augment.resized_crop(x, quarter, 4), x[..., :4, :4])


def test_random_boxes_within_the_image_and_scale():
    boxes = data.augment.random_boxes(500, (0.05, 0.4), generator=_g(0))
    cx, cy, w, h = boxes.unbind(1)
    assert bool(
        ((cx - w / 2 >= -1e-6) & (cx + w / 2 <= 1 + 1e-6) & (cy - h / 2 >= -1e-6) & (cy + h / 2 <= 1 + 1e-6)).all()
    )
    area = w * h
    assert bool(((area >= 0.05 - 1e-6) & (area <= 0.4 + 1e-6)).all())
    assert torch.equal(boxes, data.augment.random_boxes(500, (0.05, 0.4), generator=_g(0)))


def test_multi_crop_views_shapes_and_determinism():
    x = torch.rand(5, 3, 16, 16)
    mc = data.augment.multi_crop(
        16, 8, 3, color=data.compose(data.augment.color_jitter(), data.augment.random_grayscale())
    )
    views = mc(x, _g(1))
    assert [tuple(v.shape) for v in views] == [(5, 3, 16, 16)] * 2 + [(5, 3, 8, 8)] * 3
    assert all(torch.equal(a, b) for a, b in zip(views, mc(x, _g(1))))
    assert not torch.equal(views[0], views[1])
    assert all(float(v.min()) >= 0 and float(v.max()) <= 1 for v in views)


def test_color_jitter_and_grayscale():
    x = torch.rand(6, 3, 8, 8)
    assert torch.equal(data.augment.color_jitter(p=0.0)(x, _g()), x)
    torch.testing.assert_close(data.augment.color_jitter(0.0, 0.0, 0.0, p=1.0)(x, _g()), x)
    gray = data.augment.random_grayscale(1.0)(x, _g())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert all(torch.allclose(gray[:, c], luma) for c in range(3))
    # saturation 0 of a gray image changes nothing; brightness scales a dark image
    dark = torch.full((2, 3, 4, 4), 0.2)
    out = data.augment.color_jitter(0.5, 0.0, 0.0, p=1.0)(dark, _g(3))
    ratio = out[:, :, 0, 0] / 0.2
    assert bool(((ratio >= 0.5 - 1e-6) & (ratio <= 1.5 + 1e-6)).all()) and torch.allclose(
        out, out[:, :1, :1, :1].expand_as(out)
    )


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: data.augment.random_resized_crop(8, (0.5, 0.2)), ValueError, "scale"),
        (lambda: data.augment.random_resized_crop(8, (0.1, 1.5)), ValueError, "scale"),
        (lambda: data.augment.random_resized_crop(8, 0.5), TypeError, "scale"),
        (lambda: data.augment.random_resized_crop(0, (0.1, 1.0)), ValueError, "size"),
        (
            lambda: data.augment.random_resized_crop(4, (0.1, 1.0))(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)),
            TypeError,
            "x",
        ),
        (lambda: data.augment.resized_crop(torch.zeros(2, 3, 8, 8), torch.zeros(3, 4), 4), ValueError, "boxes"),
        (lambda: data.augment.random_grayscale(2.0), ValueError, "p"),
        (lambda: data.augment.random_grayscale()(torch.zeros(2, 1, 4, 4), _g()), ValueError, "x"),
        (lambda: data.augment.color_jitter(brightness=1.5), ValueError, "brightness"),
        (lambda: data.augment.multi_crop(16, 8, -1), ValueError, "n_local"),
        (lambda: data.augment.multi_crop(16, 8, 2, flip=1), TypeError, "flip"),
        (lambda: data.augment.multi_crop(16, 8, 2, color=3), TypeError, "color"),
    ],
)
def test_bad_input_multi_crop(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
