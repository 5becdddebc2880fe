"""The vectorised word n-gram engine behind decontamination, checked against the plain Python reference
on the cases its shortcuts could get wrong: Unicode, words over 8 bytes, texts cut into slices, and
hash collisions."""

import random

import pyarrow as pa
import pytest

from pipelines.data import word_ngrams
from pipelines.data.decontamination import find_contamination, normalized_words, python_matches

WORDS = ["apples", "Tom", "sells", "3,000", "crème", "brûlée", "ÉCOLE", "naïve", "extraordinarily",
         "counterrevolutionaries", "²x", "straße", "日本語", "cost", "$4.50", "each", "Ünïcode—dash", "it's"]


def _random_rows(rng: random.Random, count: int, prefix: str) -> list[tuple[str, str]]:
    rows = []
    for index in range(count):
        words = rng.choices(WORDS, k=rng.randint(0, 16))
        separators = rng.choices([" ", "  ", ", ", "\t", "! ", "—", "-"], k=len(words))
        rows.append((f"{prefix}-{index}", "".join(w + s for w, s in zip(words, separators))))
    return rows


def _pairs(matches) -> set:
    return {(m.train_id, m.eval_id, m.ngram) for m in matches}


@pytest.fixture
def texts():
    rng = random.Random(7)
    evals = _random_rows(rng, 60, "eval")
    train = _random_rows(rng, 400, "train")
    for index in range(0, 400, 5):  # plant eval texts, in other case, inside training rows
        train[index] = (train[index][0], f"{train[index][1]} {rng.choice(evals)[1].upper()} tail")
    return train, evals


def test_words_are_those_of_the_reference_normalisation(texts):
    train, _ = texts
    array = pa.array([text for _, text in train] + [None, "", "ABC" * 5, "x"])
    expected = [normalized_words(text) for _, text in train] + [[], [], ["abc" * 5], ["x"]]
    found = {}
    for words in word_ngrams.all_text_words(array):
        for text, row in enumerate(words.rows):
            found[int(row)] = words.words(text)
            assert words.row_first_word[text + 1] - words.row_first_word[text] == len(expected[row])
    assert [found[row] for row in range(len(expected))] == expected


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_matches_equal_the_python_reference_with_unicode_and_long_words(texts, n):
    train, evals = texts
    expected = python_matches(train, evals, n)
    assert expected and any(len(word.encode()) > 8 for m in expected for word in m.ngram.split())
    assert _pairs(find_contamination(train, evals, n)) == _pairs(expected)


def test_texts_cut_into_many_slices_give_the_same_matches(texts, monkeypatch):
    train, evals = texts
    whole = find_contamination(train, evals, 3)
    monkeypatch.setattr(word_ngrams, "SLICE_BYTES", 64)  # a few texts per slice
    assert _pairs(find_contamination(train, evals, 3, threads=3)) == _pairs(whole)


def test_words_never_run_across_two_texts():
    # "…apples" + "sells…" back to back in the Arrow buffer must not become "applessells".
    assert find_contamination([("t1", "tom apples"), ("t2", "sells cost")], [("e", "apples sells")], n=2) == []
    assert find_contamination([("t1", "tom apples sells")], [("e", "apples sells")], n=2) != []


def test_hash_collisions_never_make_a_match(texts, monkeypatch):
    """With every hash forced to collide, every pair of n-grams is a candidate: only the word-by-word
    comparison (keys of short words, text of long ones) stands between them and a false match."""
    train, evals = texts
    expected = _pairs(python_matches(train, evals, 2))
    monkeypatch.setattr(word_ngrams, "_mix", lambda values: values & 0)
    assert _pairs(find_contamination(train[:120], evals, 2)) == {p for p in expected if int(p[0].split("-")[1]) < 120}


def test_short_words_are_their_own_keys_and_long_words_differ_from_their_prefix():
    [words] = word_ngrams.all_text_words(pa.array(["abcdefgh abcdefghi ABCDEFGHI abcdefghij a ab"]))
    keys = words.word_keys.tolist()
    assert keys[0] == int.from_bytes(b"abcdefgh", "little") and keys[4] == ord("a")
    assert keys[1] == keys[2]  # case does not matter
    assert len({keys[0], keys[1], keys[3], keys[4], keys[5]}) == 5
    assert words.long_words.tolist() == [False, True, True, True, False, False]
