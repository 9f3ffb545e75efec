from importlib import resources

import pytest

from scotd.prompts import (Parsed, cut_at_stop, gold_key, load_exemplars, parse_answer, render_answer,
                           render_question, stop_strings, student_prompt, teacher_prompt)
from scotd.tasks import Question, TaskDataError

Q = Question("q1", "csqa", "Where do you keep milk?", ("oven", "fridge", "shelf"), 1)


def test_render_question_format():
    assert render_question(Q) == "Q: Where do you keep milk?\nAnswer Choices:\n(a) oven\n(b) fridge\n(c) shelf\nA:"


def test_targets():
    assert render_answer("Milk must stay cold.", 1) == " Milk must stay cold. So the answer is: (b)"
    assert render_answer(None, 2) == " (c)"


def test_teacher_prompt_is_exemplars_then_question_and_student_prompt_has_none():
    shots = load_exemplars("commonsenseqa", "csqa")[:2]
    prompt = teacher_prompt(Q, shots)
    blocks = prompt.split("\n\n")
    assert len(blocks) == 3 and blocks[-1] == render_question(Q) == student_prompt(Q)
    assert blocks[0] == render_question(shots[0].question) + render_answer(shots[0].rationale,
                                                                          shots[0].question.answer_index)
    assert "So the answer is" not in student_prompt(Q)


def test_stop_strings_cover_each_letter():
    assert stop_strings(3) == ["\n\n", "So the answer is: (a)", "So the answer is: (b)", "So the answer is: (c)",
                               "so the answer is: (a)", "so the answer is: (b)", "so the answer is: (c)"]


def test_a_lower_case_answer_phrase_ends_the_answer_where_it_first_appears():
    text = " Earthquakes damage buildings, so the answer is: (d) earthquakes. So the answer is: (b)Human: why?"
    cut = cut_at_stop(text, stop_strings(4))
    assert cut == " Earthquakes damage buildings, so the answer is: (d)"
    assert parse_answer(cut, 4) == Parsed(3, None, "Earthquakes damage buildings,")


@pytest.mark.parametrize("text, expected", [
    (" Milk spoils when warm. So the answer is: (b)", Parsed(1, None, "Milk spoils when warm.")),
    (" It is cold. so the answer is (B).", Parsed(1, None, "It is cold.")),
    (" First (a)? No. So the answer is: (a) ... wait, the answer is: (c)", Parsed(2, None, "First (a)? No. So the answer is: (a) ... wait,")),
    (" (c)", Parsed(2, None, "")),
    ("(a).", Parsed(0, None, "")),
    ("", Parsed(None, "empty_output")),
    ("   \n", Parsed(None, "empty_output")),
    (" Milk is cold. The fridge.", Parsed(None, "no_answer_phrase", "Milk is cold. The fridge.")),
    (" Reasons. So the answer is: (f)", Parsed(None, "unknown_letter", "Reasons.")),
    (" So the answer is: fridge", Parsed(None, "no_answer_phrase", "So the answer is: fridge")),
])
def test_parse_answer(text, expected):
    assert parse_answer(text, 3) == expected


@pytest.mark.parametrize("garbage", [None, 3, b"bytes", "\x00\x01", "So the answer is: ("])
def test_parse_answer_never_raises(garbage):
    assert parse_answer(garbage, 4).index is None


EXEMPLAR_FILES = sorted(p.name[:-6] for p in (resources.files("scotd") / "exemplars").iterdir()
                        if p.name.endswith(".jsonl"))


@pytest.mark.parametrize("name", EXEMPLAR_FILES)
def test_shipped_exemplars_load_and_parse_back(name):
    shots = load_exemplars(name, name)
    assert len(shots) >= 5
    for shot in shots:
        target = render_answer(shot.rationale, shot.question.gold)
        parsed = parse_answer(target, len(shot.question.choices))
        assert parsed == Parsed(shot.question.answer_index, None, shot.rationale,
                                shot.question.answer if shot.question.free_form else None)
        assert parsed.key == gold_key(shot.question) is not None
        assert "\n\n" not in render_question(shot.question) + target  # the blank line is the stop string


def test_exemplar_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "shots.jsonl"
    path.write_text('{"question": "Q?", "choices": ["x", "y"], "answer": 0, "rationale": "r"}\n'
                    '{"question": "Q?", "choices": ["x", "y"], "answer": 0}\n')
    with pytest.raises(TaskDataError, match=r"shots\.jsonl:2: missing or multi-line 'rationale'"):
        load_exemplars(str(path), "t")
    with pytest.raises(TaskDataError, match="no such file"):
        load_exemplars("klingon", "t")
