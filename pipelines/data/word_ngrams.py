"""Vectorised word n-grams over Arrow text columns: the engine behind decontamination.

A million training texts hold about 20M words. Making a Python string per word (what a plain Python
n-gram loop does) costs more than everything else together, so here the words never become Python
objects: words are found in the texts' UTF-8 bytes as runs of letter and digit bytes, each word
becomes a 64-bit key (its bytes themselves, lowercased, when it has at most 8; a hash of them
otherwise), and the keys of ``n`` consecutive words are rolled into an n-gram hash. All of it is
whole-array numpy work on slices of the texts, run on several threads (numpy releases the GIL).

Normalisation is the one ``decontamination.normalized_words`` documents: lowercase, and every run of
characters that are not letters or digits is a word break. ASCII texts (nearly all) get it from byte
arithmetic; the others first go through Arrow's Unicode ``utf8_lower`` and a ``[^\\p{L}\\p{N}]+``
regex, after which only letters, digits and spaces are left.

Hashes only propose candidates: ``TextWords.words`` gives a text's exact words back for the final
comparison.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SLICE_BYTES = 4 << 20  # text per work item: big enough to amortise numpy calls, small enough to bound memory
_UNICODE_NON_WORD = r"[^\p{L}\p{N}]+"
_SPACE = ord(" ")
_LOAD_BYTES = 8
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it mixes bits without losing any


def _byte_table() -> list[int]:
    """ASCII letters → lowercase, ASCII digits kept, other ASCII → space; bytes ≥ 128 (UTF-8 of letters
    left by the Unicode pass) kept as they are."""
    table = [_SPACE] * 256
    for byte in range(256):
        char = chr(byte)
        if byte >= 128:
            table[byte] = byte
        elif char.isascii() and char.isalnum():
            table[byte] = ord(char.lower())
    return table


_BYTE_TABLE = bytes(_byte_table())  # for bytes.translate
_LOWERCASE_BITS = np.uint64(0x2020202020202020)
_KEEP_BYTES = np.array([0] + [(1 << (8 * k)) - 1 for k in range(1, _LOAD_BYTES)] + [(1 << 64) - 1],
                       dtype=np.uint64)  # _KEEP_BYTES[k]: the low k bytes of a load


@dataclass
class TextWords:
    """The words of a slice of texts. ``word_keys[i]`` is word i's key; the words of text r are
    ``row_first_word[r]`` up to ``row_first_word[r + 1]``; ``rows`` maps a text back to its input row."""

    data: np.ndarray  # the texts' UTF-8 bytes (non-ASCII texts: after the Unicode pass)
    byte_offsets: np.ndarray  # text r is data[byte_offsets[r]:byte_offsets[r + 1]]
    word_keys: np.ndarray
    long_words: np.ndarray  # words over 8 bytes, whose keys are hashes
    row_first_word: np.ndarray
    rows: np.ndarray

    def words(self, text: int) -> list[str]:
        start, end = self.byte_offsets[text], self.byte_offsets[text + 1]
        return self.data[start:end].tobytes().translate(_BYTE_TABLE).decode("utf-8").split()


def _string_buffers(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes and offsets of a string array (nulls already replaced), without copying."""
    offset_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, offset_type)[texts.offset:texts.offset + len(texts) + 1].astype(np.int64)
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
    return data[offsets[0]:offsets[-1]], offsets - offsets[0]


def text_words(texts: pa.Array, rows: np.ndarray, ascii_only: bool = True) -> TextWords:
    """The words of ``texts``: ASCII texts as they are, others already through the Unicode pass."""
    data, byte_offsets = _string_buffers(texts)
    if ascii_only:  # letters and digits, by arithmetic: 3-5× faster than a lookup table in numpy
        is_word = ((data | np.uint8(0x20)) - np.uint8(ord("a")) < 26) | (data - np.uint8(ord("0")) < 10)
    else:  # the Unicode pass left letters, digits and single spaces
        is_word = data != _SPACE
    text_starts = byte_offsets[:-1][byte_offsets[:-1] < len(data)]
    previous_is_word = np.zeros_like(is_word)
    previous_is_word[1:] = is_word[:-1]
    previous_is_word[text_starts] = False  # a word never continues across two texts
    next_is_word = np.zeros_like(is_word)
    next_is_word[:-1] = is_word[1:]
    next_is_word[text_starts[text_starts > 0] - 1] = False
    starts = np.flatnonzero(is_word & ~previous_is_word)
    lengths = np.flatnonzero(is_word & ~next_is_word) + 1 - starts
    return TextWords(data, byte_offsets, _word_keys(data, starts, lengths, lowercase=ascii_only),
                     lengths > _LOAD_BYTES, np.searchsorted(starts, byte_offsets), rows)


def _word_keys(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, lowercase: bool) -> np.ndarray:
    """A word of up to 8 bytes is its own key (little-endian, zero-padded: distinct words, distinct keys);
    a longer word's key mixes its 8-byte chunks and its length. ``lowercase``: the words are ASCII letters
    and digits, lowercased by setting bit 5 of every byte (digits have it already)."""
    case_bits = _LOWERCASE_BITS if lowercase else np.uint64(0)
    keys = (_loads(data, starts) | case_bits) & _KEEP_BYTES[np.minimum(lengths, _LOAD_BYTES)]
    long_words = np.flatnonzero(lengths > _LOAD_BYTES)
    chunk = 1
    while len(long_words):
        remaining = lengths[long_words] - chunk * _LOAD_BYTES
        part = ((_loads(data, starts[long_words] + chunk * _LOAD_BYTES) | case_bits)
                & _KEEP_BYTES[np.minimum(remaining, _LOAD_BYTES)])
        keys[long_words] = (keys[long_words] * _MULTIPLIER) ^ part
        long_words = long_words[remaining > _LOAD_BYTES]
        chunk += 1
    long_words = lengths > _LOAD_BYTES
    keys[long_words] = _mix(keys[long_words] ^ lengths[long_words].astype(np.uint64))
    return keys


def _loads(data: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The 8 bytes from each position as a little-endian integer (zeros past the end), without copying
    ``data``: every byte position is viewed as the start of an unaligned 8-byte integer."""
    whole = max(len(data) - _LOAD_BYTES + 1, 0)  # positions with 8 bytes left
    values = np.zeros(len(positions), np.uint64)
    inside = positions < whole
    if whole:
        values[inside] = np.ndarray((whole,), "<u8", buffer=data, strides=(1,))[positions[inside]]
    tail_start = whole
    tail = np.zeros(2 * _LOAD_BYTES, np.uint8)
    tail[:len(data) - tail_start] = data[tail_start:]
    values[~inside] = np.ndarray((_LOAD_BYTES,), "<u8", buffer=tail, strides=(1,))[positions[~inside] - tail_start]
    return values


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit (the probe uses the top bits)."""
    values = values ^ (values >> np.uint64(30))
    values *= np.uint64(0xBF58476D1CE4E5B9)
    values ^= values >> np.uint64(27)
    values *= np.uint64(0x94D049BB133111EB)
    values ^= values >> np.uint64(31)
    return values


def window_hashes(words: TextWords, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash, first word index) of every n-gram that lies inside one text."""
    keys = words.word_keys
    windows = len(keys) - n + 1
    if windows <= 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    hashes = keys[:windows].copy()
    for step in range(1, n):
        hashes *= _MULTIPLIER
        hashes ^= keys[step:step + windows]
    words_per_text = np.diff(words.row_first_word)
    words_left = np.repeat(words.row_first_word[1:], words_per_text) - np.arange(len(keys))
    first_words = np.flatnonzero(words_left[:windows] >= n)
    return _mix(hashes[first_words]), first_words


def locate(words: TextWords, first_words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(text index within the slice, 0-based word position) of n-grams given by their first word."""
    texts = np.searchsorted(words.row_first_word, first_words, side="right") - 1
    return texts, first_words - words.row_first_word[texts]


def text_slices(texts: pa.Array | pa.ChunkedArray) -> Iterator[tuple[pa.Array, np.ndarray, bool]]:
    """(texts, their input row numbers, all ASCII?) in work items of about ``SLICE_BYTES``. Non-ASCII texts
    go through Arrow's Unicode lowercase and word-break regex first, so they hold only words and spaces."""
    chunks = texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]
    base = 0
    for chunk in chunks:
        rows = np.arange(base, base + len(chunk))
        base += len(chunk)
        if not _is_plain_string(chunk.type):
            chunk = chunk.cast(pa.large_string())
        chunk = pc.fill_null(chunk, "")
        ascii_rows = pc.string_is_ascii(chunk).to_numpy(zero_copy_only=False)
        if not ascii_rows.all():
            unicode_rows = np.flatnonzero(~ascii_rows)
            unicode_texts = pc.replace_substring_regex(pc.utf8_lower(chunk.take(unicode_rows)), _UNICODE_NON_WORD, " ")
            yield from _cut(unicode_texts, rows[unicode_rows], ascii_only=False)
            chunk, rows = chunk.filter(pa.array(ascii_rows)), rows[ascii_rows]
        yield from _cut(chunk, rows, ascii_only=True)


def _cut(texts: pa.Array, rows: np.ndarray, ascii_only: bool) -> Iterator[tuple[pa.Array, np.ndarray, bool]]:
    if not len(texts):
        return
    _, offsets = _string_buffers(texts)
    cuts = np.unique(np.searchsorted(offsets[:-1], np.arange(0, offsets[-1] + 1, SLICE_BYTES)))
    for start, end in zip(cuts, [*cuts[1:], len(texts)]):
        yield texts.slice(start, end - start), rows[start:end], ascii_only


def _is_plain_string(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def all_text_words(texts: pa.Array | pa.ChunkedArray, threads: int | None = None) -> list[TextWords]:
    """``TextWords`` for every work item of ``texts``, computed on ``threads`` threads (default: all CPUs)."""
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda item: text_words(*item), text_slices(texts)))
