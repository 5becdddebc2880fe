"""Word n-gram decontamination: which training rows share an n-gram with which eval items.

Text is normalised before n-grams are taken: lowercased, every run of characters that are not letters
or digits is a word break (so punctuation, case and extra whitespace do not hide a copy), numbers are
kept as words (in math problems the numbers are what makes two questions the same problem).

The default ``n`` is 8 words: GSM8K-style questions are short (15-60 words), so the 13-grams used for
long web documents would miss copies of short questions and partial copies; 8 consecutive normalised
words, numbers included, rarely occur in two different human-written problems. Texts generated from
one template share their wording by construction, so two different template problems can share an
8-gram of boilerplate; raise ``n`` for such data, or look at the reported n-gram.

Matching works on hashes and confirms on text: every eval n-gram's 64-bit hash is indexed, training
texts are turned into n-gram hashes slice by slice (``word_ngrams``: numpy over the texts' bytes, on all
cores, no Python object per word) and probed against the index, and only the hash hits are compared as
words, so a hash collision never produces a false match. ``python_matches`` computes the same result in
plain Python; it is the reference the tests and the benchmark compare against.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import itemgetter

import duckdb
import pyarrow as pa

from pipelines.data.ngram_index import EvalNgramIndex
from pipelines.data.word_ngrams import all_text_words, text_slices

DEFAULT_NGRAM_SIZE = 8
_WORD = re.compile(r"[^\W_]+")  # letters and digits (Unicode), as Arrow's (RE2) [\p{L}\p{N}]+


@dataclass(frozen=True)
class Match:
    """A training row sharing an n-gram with an eval item: the first such n-gram in the training row."""

    train_id: str
    eval_id: str
    ngram: str


def normalized_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], n: int) -> Iterable[tuple[int, tuple[str, ...]]]:
    return ((i, tuple(words[i:i + n])) for i in range(len(words) - n + 1))


def python_matches(train_rows: Iterable[tuple[str, str]], eval_items: Iterable[tuple[str, str]],
                   n: int = DEFAULT_NGRAM_SIZE) -> list[Match]:
    """Reference implementation: an index n-gram → eval ids, then every training n-gram looked up in it.

    (The index is the straightforward way; the naive one, every training row against every eval item's
    n-gram set, is 10,000× more lookups for 10k eval items.)
    """
    index: dict[tuple[str, ...], set[str]] = {}
    for eval_id, text in eval_items:
        for _, gram in _ngrams(normalized_words(text), n):
            index.setdefault(gram, set()).add(str(eval_id))
    matches = []
    for train_id, text in train_rows:
        seen: set[str] = set()
        for _, gram in _ngrams(normalized_words(text), n):
            for eval_id in sorted(index.get(gram, set()) - seen):
                seen.add(eval_id)
                matches.append(Match(str(train_id), eval_id, " ".join(gram)))
    return matches


def matching_rows(train_texts: pa.Array | pa.ChunkedArray, eval_texts: pa.Array | pa.ChunkedArray,
                  n: int = DEFAULT_NGRAM_SIZE, threads: int | None = None) -> list[tuple[int, int, str]]:
    """(training row, eval row, first shared n-gram) for every pair of Arrow texts sharing an n-gram.
    Training texts are probed against the eval index slice by slice, on ``threads`` threads (default:
    all CPUs)."""
    if n < 1:
        raise ValueError(f"n-gram size must be at least 1, got {n}")
    index = EvalNgramIndex(all_text_words(eval_texts, threads), n)
    with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
        hits = list(pool.map(lambda item: index.probe(*item), text_slices(train_texts)))
    words = {row: row_words for hit in hits for row, row_words in hit.train_words.items()}
    return [(train_row, eval_row, " ".join(words[train_row][position:position + n]))
            for hit in hits for train_row, eval_row, position in zip(hit.train_rows.tolist(), hit.eval_rows.tolist(),
                                                                      hit.train_positions.tolist())]


def duckdb_matches(connection: duckdb.DuckDBPyConnection, train_source: str, eval_source: str,
                   n: int = DEFAULT_NGRAM_SIZE, threads: int | None = None) -> list[Match]:
    """Matches between two relations with columns ``(id, text)`` (table names or ``(SELECT …)``) on
    ``connection``: the lineage's own tables are read as Arrow, without a round trip through Python."""
    train_ids, train_texts = _id_and_text(connection, train_source)
    eval_ids, eval_texts = _id_and_text(connection, eval_source)
    rows = matching_rows(train_texts, eval_texts, n, threads)
    train_id_of = train_ids.take(pa.array([train_row for train_row, _, _ in rows], pa.int64())).to_pylist()
    eval_id_of = eval_ids.take(pa.array([eval_row for _, eval_row, _ in rows], pa.int64())).to_pylist()
    return _sorted(Match(train_id, eval_id, gram) for train_id, eval_id, (_, _, gram)
                   in zip(train_id_of, eval_id_of, rows))


def _id_and_text(connection: duckdb.DuckDBPyConnection, source: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    query = f"SELECT CAST(id AS VARCHAR) AS id, CAST(text AS VARCHAR) AS text FROM {source}"
    table = pa.RecordBatchReader.from_stream(connection.sql(query)).read_all()
    return table.column("id"), table.column("text")


def find_contamination(train_rows: Sequence[tuple[str, str]], eval_items: Sequence[tuple[str, str]],
                       n: int = DEFAULT_NGRAM_SIZE, threads: int | None = None) -> list[Match]:
    """Matches between in-memory ``(id, text)`` pairs (only the texts are handed to Arrow)."""
    rows = matching_rows(_texts(train_rows), _texts(eval_items), n, threads)
    return _sorted(Match(str(train_rows[train_row][0]), str(eval_items[eval_row][0]), gram)
                   for train_row, eval_row, gram in rows)


def _texts(pairs: Sequence[tuple[str, str]]) -> pa.Array:
    return pa.array(list(map(itemgetter(1), pairs)), pa.string())


def _sorted(matches: Iterable[Match]) -> list[Match]:
    return sorted(matches, key=lambda match: (match.train_id, match.eval_id))
