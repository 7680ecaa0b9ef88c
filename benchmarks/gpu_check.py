"""What a GPU machine must get right, checked in under 5 minutes with torch and transformers only (no Ray, no
network, no downloads: tiny models built from configs):

- the device rule (a Ray process takes CUDA only when Ray assigned it a GPU) and the precision rule (fp32
  master weights with bf16 autocast where the card has bf16, else fp16 with a loss scaler; half-precision
  inference);
- a training step of a tiny causal LM and of a tiny T5 on CUDA under that precision: finite loss, fp32
  weights that moved, and the loss lower after a few steps on one batch;
- greedy decoding (``kard_ray.student.decoding``, the evaluation's and Serve's decoder) equal to
  ``generate()`` on CUDA;
- cross-encoder scoring in half precision against fp32 (the reranker's inference path).

    python benchmarks/gpu_check.py        # prints its checks, then one JSON line; exit 1 if one failed
    python benchmarks/gpu_check.py --cpu  # the same checks on the CPU (fp32): the script's own test

Without CUDA (and without --cpu) it says so and exits 0.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tokenizer_free_ids(vocab: int, rows: int, length: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (rows, length), generator=g)


def check_rules(device) -> dict:
    from kard_ray.devices import decide_device, inference_dtype, training_precision

    rule = (decide_device(True, [], True) == "cpu" and decide_device(True, ["0"], True) == "cuda"
            and decide_device(False, [], True) == "cuda" and decide_device(True, ["0"], False) == "cpu")
    import torch

    if device.type != "cuda":
        expected, half = "fp32", torch.float32
    else:
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        expected, half = ("bf16", torch.bfloat16) if bf16 else ("fp16", torch.float16)
    precision = training_precision(device)
    return {"device_rule": rule, "training_precision": precision,
            "precision_rule": precision == expected and inference_dtype(device) == half}


def train_steps(model, batch: dict, device, steps: int = 8) -> dict:
    """A few optimizer steps on one batch under the project's training precision; fp32 weights throughout."""
    import torch

    from kard_ray.devices import autocast_and_scaler, clipped_step

    model.to(device).train()
    autocast, scaler = autocast_and_scaler(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = [p.detach().clone() for p in model.parameters()][0]
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast:
            loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        (scaler.scale(loss) if scaler else loss).backward()
        clipped_step(optimizer, scaler, model.parameters())
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    if device.type == "cuda":
        torch.cuda.synchronize()
    weights = next(model.parameters())
    return {"ok": all(map(lambda x: x == x and abs(x) < 1e4, losses)) and losses[-1] < losses[0]
            and weights.dtype == torch.float32 and not torch.equal(first, weights.detach()),
            "first_loss": round(losses[0], 4), "last_loss": round(losses[-1], 4),
            "steps_per_s": round(steps / (time.perf_counter() - t0), 1)}


def check_training(device) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    causal = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    ids = _tokenizer_free_ids(512, 4, 32, 1)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                             num_decoder_layers=2, num_heads=4, decoder_start_token_id=0))
    return {"causal": train_steps(causal, {"input_ids": ids, "labels": ids}, device),
            "seq2seq": train_steps(t5, {"input_ids": ids, "labels": _tokenizer_free_ids(512, 4, 12, 2)}, device)}


class _IdTokenizer:
    """The two tokenizer calls greedy decoding makes without an answer-line stop: none at all."""

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def check_greedy(device) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kard_ray.devices import inference_dtype
    from kard_ray.student.decoding import greedy_decode

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                         eos_token_id=None, pad_token_id=0))
    model.generation_config.eos_token_id = None
    model = model.to(device, dtype=inference_dtype(device)).eval()
    ids = _tokenizer_free_ids(512, 3, 10, 3)
    mask = torch.ones_like(ids)
    ids[0, :3], mask[0, :3] = 0, 0  # left padding, as the evaluation batches prompts
    enc = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    limits = [5, 12, 8]  # rows leave the batch as they finish
    ours = greedy_decode(model, _IdTokenizer(), enc, limits, stop_at_answer=False)
    with torch.no_grad():
        ref = model.generate(**enc, max_new_tokens=max(limits), do_sample=False,
                             pad_token_id=0)[:, ids.shape[1]:].tolist()
    equal = sum(a == b[:n] for a, b, n in zip(ours, ref, limits))
    return {"ok": equal == len(ref), "rows_equal": equal, "rows": len(ref)}


def check_reranker(device) -> dict:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from kard_ray.devices import inference_dtype

    torch.manual_seed(0)
    fp32 = BertForSequenceClassification(BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=128, num_labels=1))
    half = BertForSequenceClassification(fp32.config)
    half.load_state_dict(fp32.state_dict())
    fp32, half = fp32.to(device).eval(), half.to(device, dtype=inference_dtype(device)).eval()
    ids = _tokenizer_free_ids(512, 64, 48, 4).to(device)
    with torch.no_grad():
        ref, got = fp32(input_ids=ids).logits.float().squeeze(-1), half(input_ids=ids).logits.float().squeeze(-1)
    same_order = int((ref.argsort(descending=True)[:10] == got.argsort(descending=True)[:10]).sum())
    err = float((ref - got).abs().max())
    return {"ok": err < 0.05 * float(ref.abs().max() + 1e-6) + 0.02, "max_abs_error": round(err, 4),
            "top10_same_rank": same_order}


def main() -> int:
    import torch

    base = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import transformers

        base["transformers"] = transformers.__version__
    except ImportError:
        pass
    if "--cpu" in sys.argv[1:]:
        device = torch.device("cpu")
        base.update(cuda=False, cpu=platform.processor() or platform.machine())
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check (run it on a GPU machine)")
        print(json.dumps({**base, "cuda": False, "ok": True, "checked": False}))
        return 0
    else:
        device = torch.device("cuda")
        base.update(cuda=True, gpu=torch.cuda.get_device_name(device), capability=".".join(
            map(str, torch.cuda.get_device_capability(device))))
    t0 = time.perf_counter()
    result = {**base, **check_rules(device), "training": check_training(device), "greedy": check_greedy(device),
              "reranker": check_reranker(device)}
    ok = (result["device_rule"] and result["precision_rule"] and result["greedy"]["ok"]
          and result["reranker"]["ok"] and all(v["ok"] for v in result["training"].values()))
    for key in ("device_rule", "precision_rule", "training", "greedy", "reranker"):
        print(f"{key:<15} {result[key]}")
    result.update(ok=bool(ok), checked=True, seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
