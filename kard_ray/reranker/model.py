"""The cross-encoder: (question + options, passage) -> one relevance logit; loading, scoring, saving."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kard_ray.data.schema import LETTERS
from kard_ray.models import resolve_model, safe_load_kwargs


def query_text(question: str, options: Sequence[str], with_options: bool = True) -> str:
    """What the reranker (and question-side retrieval) sees of a question."""
    if not with_options:
        return question
    return question + " " + " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))


def load_cross_encoder(name: str, trust_remote_code: bool = False, lora: bool = False):
    """(tokenizer, model) with a single-logit head; a fresh head when the checkpoint has none."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                               **safe_load_kwargs(trust_remote_code))
    if lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise ImportError("reranker.lora needs the peft package (pip install peft)") from exc
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=32, lora_dropout=0.05))
    return tokenizer, model


def encode_pairs(tokenizer, queries: Sequence[str], passages: Sequence[str], max_length: int):
    return tokenizer(list(queries), list(passages), padding=True, truncation="longest_first",
                     max_length=max_length, return_tensors="pt")


class Reranker:
    """Inference: score passages for a query with a trained reranker folder (plain HF format)."""

    def __init__(self, path: str, max_length: int = 256, batch_size: int = 64, device: str | None = None):
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer, self.model = load_cross_encoder(path)
        self.model.to(self.device).eval()
        self.max_length, self.batch_size = max_length, batch_size

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_pairs([query] * len(passages), passages)

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(passages), self.batch_size):
                enc = encode_pairs(self.tokenizer, queries[i : i + self.batch_size], passages[i : i + self.batch_size],
                                   self.max_length).to(self.device)
                out.append(self.model(**enc).logits.squeeze(-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def rerank(self, query: str, rows: np.ndarray, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best of the given candidate rows, best first (ties keep first-stage order)."""
        scores = self.score(query, texts)
        order = np.argsort(-scores, kind="stable")[:k]
        return np.asarray(rows)[order], scores[order]
