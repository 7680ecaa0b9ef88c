"""eval.answer_by option_likelihood: the options ranked by the student's likelihood after its own reasoning."""

from __future__ import annotations

import pytest

from kard_ray.config import ConfigError, load_config
from kard_ray.student.generate import option_likelihoods, reasoning_of
from kard_ray.student.model import load_student


def test_reasoning_is_the_generation_without_its_answer_line():
    text = "Dew forms when water vapor cools.\nAnswer: warm air (C)"
    assert reasoning_of(text) == "Dew forms when water vapor cools."
    assert reasoning_of("Answer: gas (B)") == ""
    assert reasoning_of("no answer line yet") == "no answer line yet"


@pytest.fixture(scope="module")
def smollm():
    tokenizer, model = load_student("smollm2-135m-instruct", "causal")
    return tokenizer, model.eval()


def test_the_stated_fact_decides_and_padding_changes_nothing(smollm):
    tokenizer, model = smollm
    prompt = "Question: What is the capital of France?\nOptions: (A) Paris (B) banana\nExplain, then answer.\n"
    alone = option_likelihoods(model, tokenizer, "causal", [prompt], ["Paris is the capital of France."],
                               [["Paris", "banana"]])[0]
    assert alone[0] > alone[1]
    long_prompt = prompt + "Some longer context that pads the other sequences in the batch. " * 5
    batched = option_likelihoods(model, tokenizer, "causal", [long_prompt, prompt],
                                 ["x", "Paris is the capital of France."],
                                 [["a much longer option text than the others", "b"], ["Paris", "banana"]])
    assert batched[1] == pytest.approx(alone, abs=1e-4)  # other rows and padded tails leave a row alone


def test_seq2seq_scores_each_option_of_its_question():
    tokenizer, model = load_student("tiny-t5", "seq2seq")
    model.eval()
    args = (["Question: q?", "Question: a longer question with more words in it?"], ["because", ""],
            [["yes", "no"], ["first option", "second", "third"]])
    both = option_likelihoods(model, tokenizer, "seq2seq", *args)
    assert [len(s) for s in both] == [2, 3] and all(x < 0 for s in both for x in s)
    one = option_likelihoods(model, tokenizer, "seq2seq", [args[0][0]], [args[1][0]], [args[2][0]])
    assert both[0] == pytest.approx(one[0], abs=1e-5)


def test_option_likelihood_needs_greedy_decoding():
    assert load_config(None, ["eval.answer_by=option_likelihood"]).eval.answer_by == "option_likelihood"
    with pytest.raises(ConfigError, match="greedy"):
        load_config(None, ["eval.answer_by=option_likelihood", "eval.decoding=self_consistency"])


def test_cached_tails_equal_a_full_forward(smollm):
    """The shared prefix runs once with a KV cache; each option's score equals one full forward of its line."""
    import torch

    from kard_ray.student.generate import _answer_ids

    tokenizer, model = smollm
    prompt, reasoning, opts = "Question: Which is a fruit?\n", "An apple grows on a tree.", ["apple", "a red car"]
    got = option_likelihoods(model, tokenizer, "causal", [prompt], [reasoning], [opts])[0]
    prefix, rests = _answer_ids(tokenizer, reasoning, opts)
    p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    for score, rest in zip(got, rests):
        ids = torch.tensor([p_ids + prefix + rest])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        start = len(p_ids) + len(prefix)
        want = float(torch.stack([logp[start + t - 1, rest[t]] for t in range(len(rest))]).mean())
        assert score == pytest.approx(want, abs=1e-4)
