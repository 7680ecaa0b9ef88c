import pytest

from kard_ray.answers import format_answer, parse_answer

OPTS = ["Deep sea animals", "fish", "Long Sea Fish", "Far Sea Animals"]


@pytest.mark.parametrize("text, index, method", [
    ("They live deep. So the answer is (A) Deep sea animals.", 0, "option_text"),
    ("Reasoning...\nAnswer: C", 2, "letter"),
    ("Reasoning...\nthe answer is (d)", 3, "letter"),
    ("B) fish", 1, "option_text"),
    ("Therefore, the answer is Long Sea Fish", 2, "option_text"),  # 'fish' inside a longer option is not a 2nd match
    ("The final answer: D.", 3, "letter"),
    ("Answer: b", 1, "letter"),
    ("The answer is (B) Far Sea Animals", 3, "option_text"),  # the option's text wins over a wrong letter
    ("I am not sure.", None, "none"),
])
def test_multiple_choice_formats(text, index, method):
    parsed = parse_answer(text, OPTS)
    assert (parsed.index, parsed.method) == (index, method)


@pytest.mark.parametrize("text, index", [
    ("So the answer is yes.", 0), ("Answer: No", 1), ("The answer is: False", 1), ("yes", 0),
    ("Maybe yes, maybe no.", None),
])
def test_yes_no(text, index):
    assert parse_answer(text, ["yes", "no"]).index == index


@pytest.mark.parametrize("text, index", [("So the answer is yes.", 0), ("Answer: False", 1), ("It is true.", 0)])
def test_yes_no_with_true_false_options(text, index):
    assert parse_answer(text, ["True", "False"]).index == index


def test_teacher_format_round_trips():
    for i in range(4):
        assert parse_answer("Because. " + format_answer(i, OPTS), OPTS).index == i
