"""Greedy decoding that drops finished rows, for causal students. Needs torch only (the GPU check runs it
without the rest of the project's dependencies)."""

from __future__ import annotations

import inspect


def last_logits_only(model) -> dict[str, int]:
    """Forward kwargs that project only the last position to the vocabulary (where the model allows it): a
    prefill needs the next token's logits, not the 49k-way projection of every prompt position."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def greedy_decode(model, tokenizer, enc, limits: list[int], stop_at_answer: bool = True) -> list[list[int]]:
    """Greedy decoding of a left-padded causal-LM batch that drops a row once it is finished (end of text,
    its complete answer line, or its own limit): each later step runs only the rows still writing.

    HF's ``generate`` keeps every row in the batch until the last one finishes, and a decode step's cost
    grows with the rows in it (fp32 matmuls at batch 30 are compute-bound on a CPU); answers end after
    ~26 of 40 tokens on the demo. Positions follow the attention mask as ``generate`` sets them, so a
    row's tokens are the ones ``generate`` picks (up to float rounding of the smaller batches).
    """
    import torch

    if stop_at_answer:  # the answer-line rule needs the prompt formats, and they the project's schema
        from kard_ray.student.formats import answer_line_done
    last_only = last_logits_only(model)
    ends = model.generation_config.eos_token_id
    ends = set(ends if isinstance(ends, list) else [] if ends is None else [ends])
    mask = enc["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    rows = list(range(mask.shape[0]))
    out: list[list[int]] = [[] for _ in rows]
    with torch.no_grad():
        step = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                     **last_only)
        cache, position = step.past_key_values, positions[:, -1:]
        while True:
            chosen = step.logits[:, -1].argmax(-1)
            writing = []
            for j, (r, token) in enumerate(zip(rows, chosen.tolist())):  # one device sync per step
                if token in ends:
                    continue
                out[r].append(token)
                if len(out[r]) < limits[r] and not (
                        stop_at_answer and answer_line_done(tokenizer.decode(out[r], skip_special_tokens=True))):
                    writing.append(j)
            if not writing:
                return out
            if len(writing) < len(rows):
                keep = torch.tensor(writing, device=mask.device)
                cache.batch_select_indices(keep)
                mask, chosen, position = mask[keep], chosen[keep], position[keep]
                rows = [rows[j] for j in writing]
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            position = position + 1
            step = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=position,
                         past_key_values=cache, use_cache=True, **last_only)
