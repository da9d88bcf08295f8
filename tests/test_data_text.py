"""Character-level text: vocabulary, windows, splits, random batches from a generator."""

from __future__ import annotations

import pytest
import torch

from crate_lite import data

TEXT = "hello, world!\nto be or not to be\n"


def test_vocab_round_trip():
    vocab = data.CharVocab.from_text(TEXT)
    assert vocab.chars == "".join(sorted(set(TEXT))) and len(vocab) == vocab.size
    ids = vocab.encode(TEXT)
    assert ids.dtype == torch.int64 and ids.shape == (len(TEXT),)
    assert vocab.decode(ids) == TEXT and vocab.decode(ids.tolist()) == TEXT
    with pytest.raises(ValueError, match="vocabulary"):
        vocab.encode("xyz?Q")
    with pytest.raises(ValueError, match="ids"):
        vocab.decode([vocab.size])


def test_windows_are_shifted_and_deterministic():
    vocab = data.CharVocab.from_text(TEXT)
    ids = vocab.encode(TEXT)
    ds = data.CharDataset(ids, 8)
    assert len(ds) == len(TEXT) - 8
    for i in (0, 5, len(ds) - 1):
        x, y = ds[i]
        assert x.shape == y.shape == (8,) and x.dtype == y.dtype == torch.int64
        assert torch.equal(x[1:], y[:-1]) and vocab.decode(x) == TEXT[i : i + 8]
        assert vocab.decode(y) == TEXT[i + 1 : i + 9]
        assert torch.equal(ds[i][0], x)  # item i is a fixed window
    with pytest.raises(IndexError):
        ds[len(ds)]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 8)


def test_random_windows_pure_function_of_generator():
    ids = data.CharVocab.from_text(TEXT).encode(TEXT)
    x, y = data.random_windows(ids, 6, 5, generator=torch.Generator().manual_seed(0))
    x2, y2 = data.random_windows(ids, 6, 5, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 6) and torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(x[:, 1:], y[:, :-1])
    starts = [int((ids.unfold(0, 6, 1) == row).all(1).nonzero()[0]) for row in x]
    assert all(torch.equal(ids[s + 1 : s + 7], y[b]) for b, s in enumerate(starts))


def test_tinyshakespeare_split(shared_data):
    train, val, vocab = data.load_char_dataset("tinyshakespeare", block_size=32)
    n = 1_115_394
    assert vocab.size == 65 and len(train.ids) == int(0.9 * n) and len(train.ids) + len(val.ids) == n
    assert len(train) == len(train.ids) - 32 and len(val) == len(val.ids) - 32
    text = data.load_text("tinyshakespeare")
    assert vocab.decode(val[0][0]) == text[int(0.9 * n) : int(0.9 * n) + 32]


@pytest.mark.parametrize(
    "call, exc, word",
    [
        (lambda: data.CharDataset(torch.arange(5), 5), ValueError, "block_size"),
        (lambda: data.CharDataset(torch.arange(5, dtype=torch.int32), 2), TypeError, "int64"),
        (lambda: data.CharDataset(torch.arange(9), 0), ValueError, "block_size"),
        (lambda: data.random_windows(torch.arange(9), 4, 0), ValueError, "batch_size"),
        (lambda: data.load_char_dataset(val_fraction=1.0), ValueError, "val_fraction"),
        (lambda: data.CharVocab.from_text(""), ValueError, "text"),
    ],
)
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
