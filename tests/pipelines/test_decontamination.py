import random

import duckdb
import pytest

from pipelines.data.decontamination import (DEFAULT_NGRAM_SIZE, _id_and_text, duckdb_matches, find_contamination,
                                            normalized_words, python_matches)
from pipelines.data.synthetic import domain_shift_problems, generate_problems

EVAL_ITEMS = [(f"eval-{p.problem_id}", p.question) for p in domain_shift_problems(40, seed=1, max_operand=50)]
CLEAN_ROWS = [(f"clean-{p.problem_id}", p.question) for p in generate_problems(200, seed=2, max_operand=20,
                                                                               eval_fraction=0.0)]


def _disguised(text: str) -> str:
    return "  ".join(word.upper() + ("!!" if i % 3 == 0 else "") for i, word in enumerate(text.split()))


def _pairs(matches) -> set[tuple[str, str]]:
    return {(m.train_id, m.eval_id) for m in matches}


def test_normalisation_drops_case_punctuation_and_whitespace_but_keeps_numbers():
    assert normalized_words("  Tom's 1,000 APPLES;\tcost $3.50! ") == ["tom", "s", "1", "000", "apples", "cost",
                                                                      "3", "50"]


def test_planted_eval_items_are_all_found_and_clean_rows_are_not_flagged():
    planted = []
    for index, (eval_id, question) in enumerate(EVAL_ITEMS):
        copy = question if index % 2 else _disguised(question)
        planted.append((f"planted-{index}", f"Some preamble text. {copy} And more after it."))
    matches = find_contamination(CLEAN_ROWS + planted, EVAL_ITEMS)
    found = _pairs(matches)
    assert {(f"planted-{i}", eval_id) for i, (eval_id, _) in enumerate(EVAL_ITEMS)} <= found
    assert not any(train_id.startswith("clean-") for train_id, _ in found)
    assert all(len(m.ngram.split()) == DEFAULT_NGRAM_SIZE for m in matches)


def test_matching_ngram_is_reported_in_normalised_form():
    [match] = find_contamination([("t", "x y " + _disguised(EVAL_ITEMS[0][1]))], EVAL_ITEMS[:1])
    assert match.ngram == " ".join(normalized_words(EVAL_ITEMS[0][1])[:DEFAULT_NGRAM_SIZE])


@pytest.mark.parametrize("n", [3, DEFAULT_NGRAM_SIZE])
def test_duckdb_join_equals_python_reference_on_a_random_sample(n):
    rng = random.Random(n)
    rows = []
    for index in range(300):
        words = rng.sample(EVAL_ITEMS, 1)[0][1].split()
        start = rng.randrange(len(words))
        fragment = " ".join(words[start:start + rng.randint(2, 14)])
        rows.append((f"row-{index}", f"{rng.choice(CLEAN_ROWS)[1]} {fragment}"))
    expected = python_matches(rows, EVAL_ITEMS, n)
    assert expected, "the sample should contain some overlaps"
    assert sorted(find_contamination(rows, EVAL_ITEMS, n), key=str) == sorted(expected, key=str)


def test_tables_already_in_duckdb_are_checked_in_place():
    with duckdb.connect(":memory:") as connection:
        connection.execute("CREATE TABLE train AS SELECT * FROM (VALUES (1, ?), (2, 'nothing to see here at all "
                           "in this row of text')) t(id, text)", [EVAL_ITEMS[0][1]])
        connection.execute("CREATE TABLE evals AS SELECT * FROM (VALUES (?, ?)) t(id, text)", list(EVAL_ITEMS[0]))
        assert _pairs(duckdb_matches(connection, "train", "evals")) == {("1", EVAL_ITEMS[0][0])}


def test_texts_shorter_than_n_never_match():
    assert find_contamination([("t", "two words")], [("e", "two words")]) == []
    with pytest.raises(ValueError):
        find_contamination([("t", "a")], [("e", "a")], n=0)


def test_large_tables_arrive_in_several_arrow_chunks_and_rows_map_back_to_their_ids():
    with duckdb.connect(":memory:") as connection:
        connection.execute("CREATE TABLE train AS SELECT 10 * i AS id, 'row ' || i || ' says nothing of note' AS text "
                           "FROM range(300000) t(i)")
        connection.execute("UPDATE train SET text = text || ' ' || ? WHERE id IN (0, 2999990)", [EVAL_ITEMS[3][1]])
        connection.execute("CREATE TABLE evals AS SELECT * FROM (VALUES (?, ?)) t(id, text)", list(EVAL_ITEMS[3]))
        assert _id_and_text(connection, "train")[1].num_chunks > 1
        assert _pairs(duckdb_matches(connection, "train", "evals")) == {("0", EVAL_ITEMS[3][0]),
                                                                         ("2999990", EVAL_ITEMS[3][0])}
