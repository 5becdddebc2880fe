"""Word n-gram decontamination: which training rows share an n-gram with which eval items.

Text is normalised before n-grams are taken: lowercased, every run of characters that are not letters
or digits is a word break (so punctuation, case and extra whitespace do not hide a copy), numbers are
kept as words (in math problems the numbers are what makes two questions the same problem).

The default ``n`` is 8 words: GSM8K-style questions are short (15-60 words), so the 13-grams used for
long web documents would miss copies of short questions and partial copies; 8 consecutive normalised
words, numbers included, rarely occur in two different human-written problems. Texts generated from
one template share their wording by construction, so two different template problems can share an
8-gram of boilerplate; raise ``n`` for such data, or look at the reported n-gram.

The join runs in DuckDB, set-based: both sides become (id, position, hash of the n-gram) tables, they
are joined on the hash, and only the hash matches are turned back into text and compared exactly (a
64-bit hash collision never produces a false match). ``python_matches`` computes the same result in
plain Python; it is the reference the tests and the benchmark compare against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

DEFAULT_NGRAM_SIZE = 8
_WORD = re.compile(r"[^\W_]+")  # letters and digits (Unicode), as DuckDB's [\p{L}\p{N}]+
_SQL_NON_WORD = r"[^\p{L}\p{N}]+"


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


def _words_sql(column: str) -> str:
    """Normalised words of ``column`` as a DuckDB list (same rule as ``normalized_words``)."""
    return f"string_split(trim(regexp_replace(lower({column}), '{_SQL_NON_WORD}', ' ', 'g')), ' ')"


def _ngram_hashes_sql(source: str, n: int) -> str:
    """(id, pos, h) for every word n-gram of ``source`` (a relation with id, text).

    Words are hashed once, then each n-gram's hash is the hash of its list of word hashes: slicing
    integer lists is about 3× cheaper than slicing lists of strings, and matches are verified as text.
    """
    return f"""
        SELECT id, unnest(range(1, len(hashes) + 1)) AS pos, unnest(hashes) AS h
        FROM (SELECT id, list_transform(range(1, len(word_hashes) - {n} + 2),
                                        lambda p: hash(list_slice(word_hashes, p, p + {n} - 1))) AS hashes
              FROM (SELECT id, list_transform(w, lambda x: hash(x)) AS word_hashes
                    FROM (SELECT CAST(id AS VARCHAR) AS id, {_words_sql('text')} AS w FROM {source})
                    WHERE len(w) >= {n} AND w[1] <> ''))
    """


def duckdb_matches(connection: duckdb.DuckDBPyConnection, train_source: str, eval_source: str,
                   n: int = DEFAULT_NGRAM_SIZE) -> list[Match]:
    """Matches between two relations with columns ``(id, text)`` (table names or ``(SELECT …)``) on
    ``connection``; the lineage's own tables can be checked in place without leaving DuckDB.

    Only hashes cross the join (the eval side is the small build side); the few candidate pairs are then
    re-tokenised and their n-grams compared as text, so a hash collision cannot produce a match.
    """
    if n < 1:
        raise ValueError(f"n-gram size must be at least 1, got {n}")
    query = f"""
        WITH eval_grams AS MATERIALIZED ({_ngram_hashes_sql(eval_source, n)}),
             candidates AS MATERIALIZED (
                SELECT t.id AS train_id, t.pos AS train_pos, e.id AS eval_id, e.pos AS eval_pos
                FROM ({_ngram_hashes_sql(train_source, n)}) t JOIN eval_grams e ON t.h = e.h
             ),
             verified AS (
                SELECT c.train_id, c.eval_id, c.train_pos,
                       array_to_string(list_slice({_words_sql('tr.text')}, c.train_pos, c.train_pos + {n} - 1),
                                       ' ') AS train_gram,
                       array_to_string(list_slice({_words_sql('ev.text')}, c.eval_pos, c.eval_pos + {n} - 1),
                                       ' ') AS eval_gram
                FROM candidates c
                JOIN {train_source} tr ON CAST(tr.id AS VARCHAR) = c.train_id
                JOIN {eval_source} ev ON CAST(ev.id AS VARCHAR) = c.eval_id
             )
        SELECT train_id, eval_id, arg_min(train_gram, train_pos) AS ngram
        FROM verified WHERE train_gram = eval_gram
        GROUP BY train_id, eval_id
        ORDER BY train_id, eval_id
    """
    return [Match(*row) for row in connection.execute(query).fetchall()]


def find_contamination(train_rows: Sequence[tuple[str, str]], eval_items: Sequence[tuple[str, str]],
                       n: int = DEFAULT_NGRAM_SIZE, threads: int | None = None) -> list[Match]:
    """``duckdb_matches`` over in-memory ``(id, text)`` pairs, in a private in-memory database."""
    with duckdb.connect(":memory:") as connection:
        if threads:
            connection.execute(f"SET threads = {int(threads)}")
        connection.execute("SET enable_progress_bar = false")
        connection.register("decontam_train", _arrow_table(train_rows))
        connection.register("decontam_eval", _arrow_table(eval_items))
        return duckdb_matches(connection, "decontam_train", "decontam_eval", n)


def _arrow_table(pairs: Sequence[tuple[str, str]]) -> pa.Table:
    """Arrow, not pandas: DuckDB scans it without converting a million Python strings twice."""
    return pa.table({"id": pa.array([str(row_id) for row_id, _ in pairs], pa.string()),
                     "text": pa.array([text for _, text in pairs], pa.string())})
