"""The decontamination join: an index of the eval side's word n-grams that slices of training text are
probed against.

Every eval n-gram's hash goes into a sorted array and into a bitmap of its top bits. A training slice's
n-gram hashes are looked up in the bitmap first (one memory access each, almost always a miss), the hits
are confirmed by binary search, and then the n-grams' words are compared key by key. A word of at most 8
bytes is its own key, so for n-grams of such words the key comparison *is* the text comparison; an
n-gram holding a longer (hashed) word is compared as text. A hash collision never makes a match.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.data.word_ngrams import TextWords, locate, text_words, window_hashes

BITMAP_BITS_PER_NGRAM = 16  # bitmap size per eval n-gram: about 1 in 16 training n-grams needs a search


@dataclass
class NgramHits:
    """Pairs (training row, eval row) sharing an n-gram, with the first such n-gram's position in the
    training row, and the words of those training rows."""

    train_rows: np.ndarray
    eval_rows: np.ndarray
    train_positions: np.ndarray
    train_words: dict[int, list[str]]


class EvalNgramIndex:
    """Every n-gram of the eval texts (``slices``: their ``TextWords``), ready to be probed."""

    def __init__(self, slices: list[TextWords], n: int):
        self.n = n
        word_bases = np.cumsum([0] + [len(words.word_keys) for words in slices])
        self.word_keys = _concatenate([words.word_keys for words in slices], np.uint64)
        self.long_words = _concatenate([words.long_words for words in slices], bool)
        hashes, first_words, rows, positions = [], [], [], []
        for words, word_base in zip(slices, word_bases):
            slice_hashes, slice_first_words = window_hashes(words, n)
            texts, slice_positions = locate(words, slice_first_words)
            hashes.append(slice_hashes)
            first_words.append(slice_first_words + word_base)
            rows.append(words.rows[texts])
            positions.append(slice_positions)
        hashes = _concatenate(hashes, np.uint64)
        order = np.argsort(hashes)
        self.hashes = hashes[order]
        self.first_words = _concatenate(first_words, np.int64)[order]
        self.rows = _concatenate(rows, np.int64)[order]
        self.positions = _concatenate(positions, np.int64)[order]
        self.bits = int(min(max(len(hashes) * BITMAP_BITS_PER_NGRAM, 1 << 16), 1 << 30)).bit_length()
        self.bitmap = np.zeros(1 << self.bits, dtype=bool)
        self.bitmap[self.hashes >> np.uint64(64 - self.bits)] = True
        self._text_of_row = {int(row): (words, text) for words in slices for text, row in enumerate(words.rows)}

    def eval_words(self, eval_row: int) -> list[str]:
        words, text = self._text_of_row[eval_row]
        return words.words(text)

    def probe(self, texts: pa.Array, rows: np.ndarray, ascii_only: bool) -> NgramHits:
        """The hits of one slice of training texts (as ``word_ngrams.text_slices`` yields them)."""
        words = text_words(texts, rows, ascii_only)
        hashes, first_words = window_hashes(words, self.n)
        maybe = np.flatnonzero(self.bitmap[hashes >> np.uint64(64 - self.bits)])
        low = np.searchsorted(self.hashes, hashes[maybe], side="left")
        counts = np.searchsorted(self.hashes, hashes[maybe], side="right") - low
        entries = np.repeat(low, counts) + _ranges(counts)
        train_first = np.repeat(first_words[maybe], counts)
        equal, has_long_word = self._compare_keys(words, train_first, self.first_words[entries])
        train_first, entries, has_long_word = train_first[equal], entries[equal], has_long_word[equal]
        texts_hit, train_positions = locate(words, train_first)
        train_words = {int(words.rows[text]): words.words(text) for text in np.unique(texts_hit)}
        train_rows, eval_rows = words.rows[texts_hit], self.rows[entries]
        confirmed = np.ones(len(entries), dtype=bool)
        for hit in np.flatnonzero(has_long_word):
            train_gram = train_words[int(train_rows[hit])][train_positions[hit]:train_positions[hit] + self.n]
            eval_position = self.positions[entries[hit]]
            confirmed[hit] = train_gram == self.eval_words(int(eval_rows[hit]))[eval_position:eval_position + self.n]
        train_rows, eval_rows, train_positions = train_rows[confirmed], eval_rows[confirmed], train_positions[confirmed]
        order = np.lexsort((train_positions, eval_rows, train_rows))
        train_rows, eval_rows, train_positions = train_rows[order], eval_rows[order], train_positions[order]
        first_of_pair = np.ones(len(order), dtype=bool)  # the first n-gram of each pair is the one reported
        first_of_pair[1:] = (train_rows[1:] != train_rows[:-1]) | (eval_rows[1:] != eval_rows[:-1])
        return NgramHits(train_rows[first_of_pair], eval_rows[first_of_pair], train_positions[first_of_pair],
                         train_words)

    def _compare_keys(self, words: TextWords, train_first: np.ndarray,
                      eval_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(all n word keys equal, some word of either n-gram is over 8 bytes) for each candidate pair."""
        equal = np.ones(len(train_first), dtype=bool)
        has_long_word = np.zeros(len(train_first), dtype=bool)
        for offset in range(self.n):
            equal &= words.word_keys[train_first + offset] == self.word_keys[eval_first + offset]
            has_long_word |= words.long_words[train_first + offset] | self.long_words[eval_first + offset]
        return equal, has_long_word


def _concatenate(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


def _ranges(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each c in ``counts``, concatenated."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)
