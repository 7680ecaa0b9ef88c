"""Batched generation with a trained student: greedy decoding or self-consistency (n samples, majority
vote over parsed answers), as a plain function and as a Ray Data actor for batch inference."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Any

from kard_ray.answers import parse_answer
from kard_ray.config import InferenceSettings
from kard_ray.data.schema import LETTERS
from kard_ray.devices import in_ray_worker, inference_dtype, process_device
from kard_ray.efficiency import matmul_probe, parameter_counts
from kard_ray.fs import local_copy
from kard_ray.student.decoding import greedy_decode, last_logits_only
from kard_ray.student.formats import answer_line, answer_line_done, build_prompt
from kard_ray.student.model import load_trained


class AnswerLineStop:
    """Stopping criterion: a sequence is finished once its answer line is complete (``answer_line_done``)
    or it has ``limits[i]`` new tokens; generation ends when every sequence is finished. Evaluation and
    Serve stop at the same place, so they keep generating the same text."""

    def __init__(self, tokenizer, prompt_length: int, limits: list[int], samples: int = 1, at_answer: bool = True):
        import torch

        self.tokenizer, self.prompt_length, self.at_answer = tokenizer, prompt_length, at_answer
        self.limits = torch.tensor([n for n in limits for _ in range(samples)])

    def __call__(self, input_ids, scores, **kwargs):
        import torch


        new = input_ids[:, self.prompt_length:]
        done = self.limits <= new.shape[1]
        if self.at_answer:
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            done = done | torch.tensor([answer_line_done(t) for t in texts], dtype=torch.bool)
        return done.to(input_ids.device)


def generate_texts(model, tokenizer, family: str, prompts: list[str], max_new_tokens: int | list[int],
                   samples: int = 1, temperature: float = 0.7, seed: int = 0,
                   stop_at_answer: bool = True) -> list[list[str]]:
    """``samples`` completions per prompt (1 = greedy), prompt tokens encoded as in training; each stops at
    its complete answer line (``stop_at_answer``) or at its own ``max_new_tokens`` (one for all, or per prompt)."""
    import torch
    from transformers import StoppingCriteriaList

    limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
    if family == "causal":
        tokenizer.padding_side = "left"
    enc = tokenizer(prompts, add_special_tokens=True, padding=True, return_tensors="pt").to(model.device)
    enc.pop("token_type_ids", None)  # BERT-style tokenizers add them; generative models take none
    if family == "causal" and samples == 1:
        texts = tokenizer.batch_decode(greedy_decode(model, tokenizer, enc, limits, stop_at_answer),
                                       skip_special_tokens=True)
        return [[t.strip()] for t in texts]
    # what precedes the generated tokens in `generate`'s output: the prompt, or the decoder's start token
    prompt_length = enc["input_ids"].shape[1] if family == "causal" else 1
    stop = AnswerLineStop(tokenizer, prompt_length, limits, samples, at_answer=stop_at_answer)
    kwargs: dict[str, Any] = {"max_new_tokens": max(limits), "pad_token_id": tokenizer.pad_token_id,
                              "stopping_criteria": StoppingCriteriaList([stop])}
    if samples > 1:
        torch.manual_seed(seed)
        kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, num_return_sequences=samples)
    else:
        kwargs.update(do_sample=False)
    with torch.no_grad():
        out = model.generate(**enc, **kwargs)
    if family == "causal":
        out = out[:, enc["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    return [[t.strip() for t in texts[i * samples:(i + 1) * samples]] for i in range(len(prompts))]


def reasoning_of(generation: str) -> str:
    """A generation without its answer line (everything before the last 'Answer:')."""
    head, sep, _ = generation.rpartition("Answer:")
    return (head if sep else generation).strip()


def _answer_ids(tokenizer, reasoning: str, options: list[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of the student's target up to 'Answer:', and of each option's rest of the answer line
    (``answer_line``'s form: 'Answer: <text> (<letter>)'), encoded piecewise so every option shares the prefix."""
    head = (reasoning + "\n" if reasoning else "") + "Answer:"
    prefix = tokenizer(head, add_special_tokens=False)["input_ids"]
    rests = [tokenizer(f" {o} ({LETTERS[i]})", add_special_tokens=False)["input_ids"] for i, o in enumerate(options)]
    return prefix, rests


SCORE_BATCH = 16  # questions whose answer lines are scored in one forward (bounds the tails' logits in memory)


def _causal_tail_logprobs(model, contexts: list[list[int]], tails: list[list[list[int]]],
                          pad: int) -> list[list[list[float]]]:
    """Per question and option: the log-probability of each token of the option's tail after the question's
    context. The contexts run once, left-padded in one batch, with a KV cache; then every question's tails
    run in one batch on copies of their question's cache (OBQA evaluation: 1,544 s against 1,763 s one
    question at a time; docs/benchmarks.md)."""
    import torch

    device = model.device
    width = max(map(len, contexts))
    ids = torch.full((len(contexts), width), pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, c in enumerate(contexts):
        ids[i, width - len(c):], mask[i, width - len(c):] = torch.tensor(c, device=device), 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    shared = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                   **last_logits_only(model))
    first = torch.log_softmax(shared.logits[:, -1].float(), -1)  # predicts each tail's first token
    owner = torch.tensor([i for i, rests in enumerate(tails) for _ in rests], device=device)
    flat = [r for rests in tails for r in rests]
    tail_width = max(map(len, flat))
    tail_ids = torch.tensor([r + [pad] * (tail_width - len(r)) for r in flat], device=device)
    cache = shared.past_key_values
    cache.batch_select_indices(owner)  # each question's cache once per option
    logits = model(input_ids=tail_ids, past_key_values=cache,
                   attention_mask=torch.cat([mask[owner], torch.ones_like(tail_ids)], dim=1),
                   position_ids=positions[owner, -1:] + 1 + torch.arange(tail_width, device=device)).logits
    rest = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, tail_ids[:, 1:, None]).squeeze(-1)
    per_token = torch.cat([first[owner, tail_ids[:, 0]][:, None], rest], dim=1).tolist()
    out, j = [], 0
    for rests in tails:
        out.append([per_token[j + o][:len(r)] for o, r in enumerate(rests)])
        j += len(rests)
    return out


def _seq2seq_tail_logprobs(model, context: list[int], prefix: list[int], rests: list[list[int]]) -> list[list[float]]:
    """Per option: its tail's token log-probabilities, the encoder reading ``context`` once per option and the
    decoder scored on prefix + tail (small seq2seq students)."""
    import torch

    width = max(map(len, rests))
    enc = torch.tensor([context] * len(rests), device=model.device)
    labels = torch.tensor([prefix + r + [-100] * (width - len(r)) for r in rests], device=model.device)
    logp = torch.log_softmax(model(input_ids=enc, labels=labels).logits.float(), -1)
    return [logp[o, len(prefix) + torch.arange(len(r)), torch.tensor(r)].tolist() for o, r in enumerate(rests)]


def _tail_logprobs(model, family: str, contexts: list[list[int]], prefixes: list[list[int]],
                   tails: list[list[list[int]]], pad: int) -> list[list[list[float]]]:
    if family == "causal":
        shared = [c + p for c, p in zip(contexts, prefixes)]
        return [x for i in range(0, len(shared), SCORE_BATCH)
                for x in _causal_tail_logprobs(model, shared[i:i + SCORE_BATCH], tails[i:i + SCORE_BATCH], pad)]
    return [_seq2seq_tail_logprobs(model, c, p, r) for c, p, r in zip(contexts, prefixes, tails)]


def option_likelihoods(model, tokenizer, family: str, prompts: list[str], reasonings: list[str],
                       options: list[list[str]], calibrated: bool = False) -> list[list[float]]:
    """Per prompt and option: the mean log-probability of that option's answer line after the student's own
    reasoning. A small student often states the right fact and then writes a wrong or invented option;
    ranking the options it was given by likelihood uses what it wrote instead.

    ``calibrated`` (``answer_by: option_pmi``): the line's summed log-probability minus its summed
    log-probability after a bare 'Answer:' (domain-conditional PMI, Holtzman et al. 2021, "Surface Form
    Competition"), so an option wins because the question and reasoning make it likelier, not because it is
    short or common."""
    import torch

    if not prompts:
        return []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    parts = [_answer_ids(tokenizer, reasoning, opts) for reasoning, opts in zip(reasonings, options)]
    tails = [rests for _, rests in parts]
    with torch.no_grad():
        given = _tail_logprobs(model, family, [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts],
                               [prefix for prefix, _ in parts], tails, pad)
        if not calibrated:
            return [[sum(x) / len(x) for x in lines] for lines in given]
        null_context = tokenizer("", add_special_tokens=True)["input_ids"]
        null_prefix = _answer_ids(tokenizer, "", ["x"])[0]
        alone = _tail_logprobs(model, family, [null_context] * len(prompts), [null_prefix] * len(prompts), tails, pad)
    return [[sum(x) - sum(y) for x, y in zip(a, b)] for a, b in zip(given, alone)]


def vote(texts: list[str], options: list[str]) -> tuple[int | None, str, int]:
    """(answer index, how it was parsed, votes): majority over parsed answers, first-seen wins ties."""
    parsed = [parse_answer(t, options) for t in texts]
    counts = Counter(p.index for p in parsed if p.ok)
    if not counts:
        return None, "none", 0
    best = max(counts, key=lambda i: (counts[i], -[p.index for p in parsed].index(i)))
    return best, next(p.method for p in parsed if p.index == best), counts[best]


class StudentPredictor:
    """One student loaded once; rows with question, options, passages -> predictions. A Ray Data actor in
    the evaluation and the model inside Serve's Generator, so both decode the same way."""

    def __init__(self, model_uri: str, method: str, settings: dict[str, Any], temperature: float = 0.7,
                 seed: int = 0):
        """``model_uri``: a saved student folder, local or remote (downloaded on this node)."""
        import torch


        if in_ray_worker():
            from kard_ray.runtime import use_assigned_cores

            use_assigned_cores()
        device = process_device()
        self.tokenizer, self.model, self.family = load_trained(local_copy(model_uri), dtype=inference_dtype(device))
        self.params = parameter_counts(self.model)[0]  # before quantisation packs the linear weights away
        self.method, self.settings = method, InferenceSettings.model_validate(settings)
        if device.type == "cuda":
            self.model = self.model.to(device)
        elif self.settings.quantize == "int8":  # CPU only: int8 matmuls (fbgemm) instead of fp32
            self.model = torch.ao.quantization.quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        self.temperature, self.seed = temperature, seed
        self.probe: float | None = None  # measured on the first batch job (Serve replicas never need it)

    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per row: the first generation, the voted option (-1: none parsed), how it was parsed, its votes, and
        the prompt's and the generation's token counts. A row's ``max_new_tokens`` (Serve's ``max_tokens``)
        can only lower the run's limit."""
        s = self.settings
        prompts = [build_prompt(self.tokenizer, self.method, r["question"], r["options"], r.get("passages") or [],
                                s.student_max_input_length).text for r in rows]
        limits = [min(r.get("max_new_tokens") or s.max_new_tokens, s.max_new_tokens) for r in rows]
        t0 = time.perf_counter()
        outputs = generate_texts(self.model, self.tokenizer, self.family, prompts, limits, s.samples,
                                 self.temperature, self.seed, s.stop_at_answer_line)
        chosen = None
        if s.answer_by != "parse":
            reasonings = [reasoning_of(texts[0]) for texts in outputs]
            chosen = option_likelihoods(self.model, self.tokenizer, self.family, prompts, reasonings,
                                        [list(r["options"]) for r in rows], calibrated=s.answer_by == "option_pmi")
        share = (time.perf_counter() - t0) / max(1, len(rows))  # each row's share of the batch's compute time
        out = []
        for i, (r, prompt, texts) in enumerate(zip(rows, prompts, outputs)):
            options = list(r["options"])
            if chosen is None:
                idx, how, votes = vote(texts, options)
                generation = texts[0]
            else:  # the answer line is the option the student finds likeliest after its own reasoning
                idx = max(range(len(options)), key=lambda j: chosen[i][j])
                how, votes = "pmi" if s.answer_by == "option_pmi" else "likelihood", 1
                generation = "\n".join(x for x in (reasoning_of(texts[0]), answer_line(options, idx)) if x)
            out.append({"generation": generation, "prediction": -1 if idx is None else idx, "parsed_by": how,
                        "votes": votes, "prompt_tokens": self.count_tokens(prompt, True),
                        "completion_tokens": self.count_tokens(texts[0], False), "seconds": share})
        return out

    def count_tokens(self, text: str, special: bool) -> int:
        """Tokens as the student's tokenizer counts them (``special``: with the tokens it adds to a prompt)."""
        return len(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def __call__(self, batch) -> dict[str, Any]:
        if self.probe is None:  # the machine's attainable FLOP/s, for the stage's efficiency figures
            self.probe = matmul_probe(0.2, device=self.model.device)
        rows = batch.to_pylist()  # a pyarrow.Table
        preds = [{**p, "params": self.params, "probe_flops_per_s": self.probe} for p in self.predict(rows)]
        return {"qid": [r["qid"] for r in rows], **{k: [p[k] for p in preds] for k in preds[0]}} if preds else {}


class StudentsInTurn:
    """Ray Data actor over several students' rows (column ``student``): one student loaded at a time, the next
    when its rows arrive. An evaluation of three students then starts its actors once, not once per student;
    rows come grouped by student, so each actor loads each student once."""

    def __init__(self, students: dict[str, tuple[str, str]], settings: dict[str, Any]):
        """``students``: name -> (model URI, prompt method)."""
        self.students, self.settings = students, settings
        self.name: str | None = None
        self.predictor: StudentPredictor | None = None

    def _predictor(self, name: str) -> StudentPredictor:
        if name != self.name:
            probe = self.predictor.probe if self.predictor else None  # the machine's, measured once per actor
            self.predictor = None  # the last student freed before the next loads
            uri, method = self.students[name]
            self.predictor, self.name = StudentPredictor(uri, method, self.settings), name
            self.predictor.probe = probe
        return self.predictor

    def __call__(self, batch) -> dict[str, Any]:
        import pyarrow as pa

        columns: dict[str, list] = {}
        for name, group in itertools.groupby(batch.to_pylist(), key=lambda r: r["student"]):
            part = self._predictor(name)(pa.Table.from_pylist(list(group)))
            for key, values in {"student": [name] * len(part.get("qid", [])), **part}.items():
                columns.setdefault(key, []).extend(values)
        return columns


def predict_with_ray(rows: list[dict[str, Any]], students: dict[str, tuple[str, str]], settings, *,
                     actors: int = 1, batch_size: int = 16, use_gpu: bool = False,
                     cpus_per_actor: float = 1.0) -> list[dict[str, Any]]:
    """Batch inference over ``rows`` (student, qid, question, options, passages; grouped by student) with one actor
    pool for every student (``students``: name -> (model URI, prompt method)); each actor's torch threads follow its
    ``cpus_per_actor``. Predictions in the order of ``rows``."""
    import pyarrow as pa
    import ray

    ds = ray.data.from_arrow(pa.Table.from_pylist(rows)).map_batches(
        StudentsInTurn, fn_constructor_kwargs={"students": students, "settings": settings.model_dump()},
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=batch_size, batch_format="pyarrow",
        num_gpus=1 if use_gpu else 0, num_cpus=cpus_per_actor)
    by_key = {(r["student"], r["qid"]): r for r in ds.take_all()}
    return [by_key[(r["student"], r["qid"])] for r in rows]
