"""The student stages on the session Ray: loss goes down, plain-HF reload, causal path, kill-and-resume."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN_SETS, kill_after_first_checkpoint, quiet

from kard_ray.config import load_config
from kard_ray.pipeline import run_one
from kard_ray.stages import student as student_stage

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def prepared(augmented_run):
    return augmented_run


def _mean_loss(model, tokenizer, cfg, run, method):
    from kard_ray.config import StudentConfig
    from kard_ray.student.model import collate
    from kard_ray.student.train import tokenize_rows

    rows = student_stage.training_rows(run, cfg.student, method)
    examples = tokenize_rows(rows, tokenizer, StudentConfig(max_input_length=96, max_target_length=48), method)[0]
    model.eval()
    with torch.inference_mode():
        inputs, _, _ = collate(examples, "seq2seq", tokenizer.pad_token_id)
        return float(model(**inputs).loss)


def test_tiny_student_lowers_the_loss_and_reloads_with_plain_transformers(prepared):
    cfg, run = prepared
    cfg = load_config(None, [f"run_dir={cfg.run_dir}", *TINY_RUN_SETS, "student.epochs=4"])
    from kard_ray.student.model import load_student

    torch.manual_seed(cfg.student.seed)  # the loop seeds the same way before building the model
    tokenizer, fresh = load_student(cfg.student.model, cfg.student.family)
    before = _mean_loss(fresh, tokenizer, cfg, run, "kard")
    m = run_one("student_kard", cfg, run, log=quiet)
    assert m["counts"]["steps"] == 4 * int(np.ceil(m["counts"]["train_examples"] / 4))
    assert m["extra"]["tokens_per_s"] > 0 and 0 <= m["extra"]["padding_share"] < 0.5

    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folder = run.path("student_kard")
    model = AutoModelForSeq2SeqLM.from_pretrained(folder)  # no project code needed
    tok = AutoTokenizer.from_pretrained(folder)
    assert not (Path(folder) / "trainer_state.pt").exists()
    assert _mean_loss(model, tok, cfg, run, "kard") < before
    from kard_ray.student.generate import generate_texts

    out = generate_texts(model, tok, "seq2seq", ["Question: who? Options: (A) x (B) y"], 8, samples=3)
    assert len(out) == 1 and len(out[0]) == 3 and all(isinstance(t, str) for t in out[0])


def test_a_student_without_held_out_rows_trains_and_reports_no_eval_loss(prepared):
    import math

    cfg, run = prepared
    cfg = load_config(None, [f"run_dir={cfg.run_dir}", *TINY_RUN_SETS, "student.eval_fraction=0"])
    m = run_one("student_ft", cfg, run, force=True, log=quiet)
    assert m["counts"]["eval_examples"] == 0 and m["counts"]["steps"] > 0
    assert math.isnan(m["extra"]["eval_loss"])


def test_causal_student_saves_a_plain_model_that_generates(prepared):
    cfg, run = prepared
    sets = [*TINY_RUN_SETS, "student.model=smollm2-135m-instruct", "student.family=causal", "student.max_steps=2",
            "student.batch_size=2", "student.train_layers=2", "student.lr=1e-4"]
    cfg = load_config(None, [f"run_dir={cfg.run_dir}", *sets])
    m = run_one("student_ft", cfg, run, log=quiet)
    assert m["counts"]["steps"] == 2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = run.path("student_ft")
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(model.config, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(["Question: Where is Buxholm?\nOptions: (A) north (B) south\n"], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]


@pytest.mark.parametrize("strategy,workers", [("ddp", 1), ("fsdp", 2)])
def test_killed_student_training_resumes_from_its_checkpoint(prepared, strategy, workers):
    import ray

    cfg, run = prepared
    sets = [*TINY_RUN_SETS, "student.epochs=3", "student.checkpoint_every_steps=2", "student.seed=1",
            f"student.strategy={strategy}", f"student.workers.num_workers={workers}"]
    cfg = load_config(None, [f"run_dir={cfg.run_dir}", *sets])
    storage = Path(cfg.run_dir) / "train" / student_stage.storage_name(cfg, run, "rd")
    args = [sys.executable, "-m", "kard_ray.cli", "student_rd", "--run-dir", cfg.run_dir,
            "--address", ray.get_runtime_context().gcs_address] + [a for s in sets for a in ("--set", s)]
    kill_after_first_checkpoint(args, storage)
    assert list(storage.glob("checkpoint_*")), "the killed run wrote no checkpoint"
    m = run_one("student_rd", cfg, run, log=quiet)
    per_epoch = int(np.ceil(m["counts"]["train_examples"] / (4 * workers)))
    assert m["extra"]["resumed_from_step"] >= 2 and m["counts"]["steps"] == 3 * per_epoch
    assert not storage.exists(), "a finished training keeps its checkpoints"


def test_lora_checkpoint_exports_as_one_plain_merged_model(tmp_path):
    """No Ray: a LoRA checkpoint (adapter + trainer state) becomes a plain HF folder with the same outputs."""
    pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from kard_ray.stages.student import merge_lora
    from kard_ray.student.model import load_student
    from kard_ray.training import ADAPTER_WEIGHTS, TRAINER_STATE

    tokenizer, model = load_student("smollm2-135m-instruct", "causal", lora=True)
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh adapter is a no-op (B = 0); make it change the model
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    src, dst = tmp_path / "checkpoint", tmp_path / "export"
    model.save_pretrained(src)
    tokenizer.save_pretrained(src)
    (src / TRAINER_STATE).write_bytes(b"optimizer state")
    dst.mkdir()
    assert (src / ADAPTER_WEIGHTS).exists()
    merge_lora(str(src), str(dst))
    assert not (dst / TRAINER_STATE).exists() and not (dst / "adapter_config.json").exists()
    plain = AutoModelForCausalLM.from_pretrained(dst).eval()
    ids = tokenizer("Where was Vorna Tesk born?", return_tensors="pt")
    with torch.no_grad():
        expected = model.eval()(**ids).logits
        merged = plain(**ids).logits
        base = model.get_base_model()
        with model.disable_adapter():
            unadapted = base(**ids).logits
    assert torch.allclose(merged, expected, atol=1e-3)
    assert not torch.allclose(merged, unadapted, atol=1e-3)  # the adapter really was merged in


def test_fsdp_trains_like_ddp_on_two_workers(prepared):
    """Sharded training (FSDP2 on gloo) takes the same steps as DDP: the same losses to float rounding."""
    cfg, run = prepared
    losses = {}
    for strategy in ("ddp", "fsdp"):
        sets = [*TINY_RUN_SETS, "student.workers.num_workers=2", "student.max_steps=3", "student.eval_fraction=0",
                f"student.strategy={strategy}"]
        m = run_one("student_ft", load_config(None, [f"run_dir={cfg.run_dir}", *sets]), run, force=True, log=quiet)
        assert m["counts"]["steps"] == 3 and m["counts"]["workers"] == 2
        losses[strategy] = m["extra"]["final_loss"]
    assert losses["fsdp"] == pytest.approx(losses["ddp"], rel=1e-4), losses
