"""eval.answer_by option_likelihood / option_pmi: the options ranked by the student's (calibrated) likelihood after
its own reasoning."""

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


@pytest.mark.model
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
    # calibrated scores batch the same way, also with questions of different option counts
    rows = ([long_prompt, prompt], ["x", "Paris is the capital of France."],
            [["a much longer option text than the others", "b", "c"], ["Paris", "banana"]])
    together = option_likelihoods(model, tokenizer, "causal", *rows, calibrated=True)
    for i in range(2):
        one = option_likelihoods(model, tokenizer, "causal", *([x[i]] for x in rows), calibrated=True)[0]
        assert together[i] == pytest.approx(one, abs=1e-3)


@pytest.mark.model
def test_seq2seq_scores_each_option_of_its_question():
    tokenizer, model = load_student("tiny-t5", "seq2seq")
    model.eval()
    args = (["Question: q?", "Question: a longer question with more words in it?"], ["because", ""],
            [["yes", "no"], ["first option", "second", "third"]])
    both = option_likelihoods(model, tokenizer, "seq2seq", *args)
    assert [len(s) for s in both] == [2, 3] and all(x < 0 for s in both for x in s)
    one = option_likelihoods(model, tokenizer, "seq2seq", [args[0][0]], [args[1][0]], [args[2][0]])
    assert both[0] == pytest.approx(one[0], abs=1e-5)


@pytest.mark.parametrize("answer_by", ["option_likelihood", "option_pmi"])
def test_option_scoring_needs_greedy_decoding(answer_by):
    assert load_config(None, [f"eval.answer_by={answer_by}"]).eval.answer_by == answer_by
    with pytest.raises(ConfigError, match="greedy"):
        load_config(None, [f"eval.answer_by={answer_by}", "eval.decoding=self_consistency"])


@pytest.mark.model
def test_cached_tails_equal_a_full_forward(smollm):
    """The shared prefix runs once with a KV cache; each option's score equals one full forward of its line."""
    import torch

    from kard_ray.student.generate import _answer_ids

    tokenizer, model = smollm
    prompt, reasoning, opts = "Question: Which is a fruit?\n", "An apple grows on a tree.", ["apple", "a red car"]
    got = option_likelihoods(model, tokenizer, "causal", [prompt], [reasoning], [opts])[0]
    pmi = option_likelihoods(model, tokenizer, "causal", [prompt], [reasoning], [opts], calibrated=True)[0]
    prefix, rests = _answer_ids(tokenizer, reasoning, opts)
    null_prefix, _ = _answer_ids(tokenizer, "", opts)
    p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    null_ids = tokenizer("", add_special_tokens=True)["input_ids"]

    def line_logps(context, rest):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([context + rest])).logits[0].float(), -1)
        return torch.stack([logp[len(context) + t - 1, rest[t]] for t in range(len(rest))])

    for score, calibrated, rest in zip(got, pmi, rests):
        given = line_logps(p_ids + prefix, rest)
        assert score == pytest.approx(float(given.mean()), abs=1e-4)
        # option_pmi: the whole line's log-probability against the same line after a bare "Answer:"
        assert calibrated == pytest.approx(float(given.sum() - line_logps(null_ids + null_prefix, rest).sum()),
                                           abs=1e-3)
