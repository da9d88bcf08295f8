"""Character-level text data (chapter 10's language model), after nanoGPT's shakespeare_char.

- :func:`load_text`: a registered corpus as one string (Tiny Shakespeare, SHA-256 checked).
- :class:`CharVocab`: the sorted distinct characters; ``encode`` str -> int64 (T,),
  ``decode`` back.
- :class:`CharDataset`: map-style data set of windows; item ``i`` is
  ``(x, y) = (ids[i : i + block_size], ids[i + 1 : i + block_size + 1])``, both int64
  (block_size,): the target is the input shifted by one. Item ``i`` is a fixed window, so
  a loop that picks indices as a pure function of ``(seed, step)`` resumes exactly.
- :func:`random_windows`: a batch of random windows drawn from a generator (nanoGPT's
  ``get_batch``), a pure function of the generator's state.
- :func:`load_char_dataset`: corpus -> vocabulary + train / val windows (first 90 % /
  last 10 % of the characters, as nanoGPT splits them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .. import _validate as v
from .registry import fetch


def load_text(
    name: str = "tinyshakespeare", *, root: str | os.PathLike | None = None, download_missing: bool | None = None
) -> str:
    """A registered plain-text corpus as one string (Tiny Shakespeare: 1,115,394 characters)."""
    return fetch(name, "input.txt", root=root, download_missing=download_missing).read_text(encoding="utf-8")


@dataclass(frozen=True)
class CharVocab:
    """A character vocabulary: token ``k`` is ``chars[k]`` (sorted, distinct)."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The vocabulary of every distinct character in ``text``, sorted."""
        if not isinstance(text, str) or not text:
            raise ValueError("text: expected a non-empty str")
        return cls("".join(sorted(set(text))))

    def __post_init__(self):
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("chars: expected distinct characters")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def size(self) -> int:
        """Number of tokens (the language model's vocab_size)."""
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """``text`` -> token ids int64 (len(text),); unknown characters raise ValueError."""
        try:
            return torch.tensor([self._index[c] for c in text], dtype=torch.int64)
        except KeyError as err:
            raise ValueError(f"text: character {err.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Token ids (T,) -> the string they spell."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if any(not 0 <= i < len(self.chars) for i in ids):
            raise ValueError(f"ids: expected token ids in [0, {len(self.chars)}), got {min(ids)}..{max(ids)}")
        return "".join(self.chars[i] for i in ids)


class CharDataset(torch.utils.data.Dataset):
    """Every window of ``block_size`` + 1 consecutive tokens of ``ids`` int64 (T,).

    ``len`` is ``T - block_size``; item ``i`` is ``(ids[i : i + block_size],
    ids[i + 1 : i + 1 + block_size])``, each int64 (block_size,).
    """

    def __init__(self, ids: torch.Tensor, block_size: int):
        ids = v.tensor("ids", ids, ndim=1, floating=False)
        if ids.dtype != torch.int64:
            raise TypeError(f"ids: expected dtype torch.int64, got {ids.dtype}")
        v.integer("block_size", block_size, minimum=1)
        if len(ids) <= block_size:
            raise ValueError(f"ids: expected more than block_size={block_size} tokens, got {len(ids)}")
        self.ids, self.block_size = ids, block_size

    def __len__(self) -> int:
        return len(self.ids) - self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        i %= len(self)
        chunk = self.ids[i : i + self.block_size + 1]  # (block_size + 1,)
        return chunk[:-1], chunk[1:]


def random_windows(
    ids: torch.Tensor, block_size: int, batch_size: int, *, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of windows at random starts: ``(x, y)`` int64 (batch_size, block_size) with
    ``y[:, t] = x[:, t + 1]`` and ``y[:, -1]`` the next token. The starts are
    ``randint(0, T - block_size, (batch_size,))`` from ``generator`` (a CPU generator;
    None uses the global one), so the batch is a pure function of its state."""
    ids = v.tensor("ids", ids, ndim=1, floating=False)
    v.integer("block_size", block_size, minimum=1)
    v.integer("batch_size", batch_size, minimum=1)
    if len(ids) <= block_size:
        raise ValueError(f"ids: expected more than block_size={block_size} tokens, got {len(ids)}")
    starts = torch.randint(0, len(ids) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = starts[:, None] + torch.arange(block_size + 1)[None, :]  # (B, block_size + 1)
    chunks = ids[offsets.to(ids.device)]
    return chunks[:, :-1], chunks[:, 1:]


def load_char_dataset(
    name: str = "tinyshakespeare",
    block_size: int = 64,
    *,
    val_fraction: float = 0.1,
    root: str | os.PathLike | None = None,
    download_missing: bool | None = None,
) -> tuple[CharDataset, CharDataset, CharVocab]:
    """``(train, val, vocab)`` for a registered corpus: the vocabulary of the whole text,
    the first ``1 - val_fraction`` of its characters as train windows and the rest as val
    windows (nanoGPT's 90 / 10 split; no window crosses the boundary)."""
    v.positive("val_fraction", val_fraction)
    if val_fraction >= 1:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction}")
    text = load_text(name, root=root, download_missing=download_missing)
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)  # (T,)
    n_train = int(len(ids) * (1 - val_fraction))
    return CharDataset(ids[:n_train], block_size), CharDataset(ids[n_train:], block_size), vocab
