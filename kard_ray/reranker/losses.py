"""Listwise ranking losses over a (batch, candidates) score matrix, as small composable functions.

``scores`` come from the reranker, ``targets`` from the rationale retriever (BM25 of the rationale
against each candidate), ``mask`` marks real candidates (False = padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG = -1e4  # added to masked logits; finite so that 0 * NEG stays 0


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask, NEG)


def kl_distill(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, tau1: float = 1.0,
               tau2: float = 1.0) -> torch.Tensor:
    """KARD: KL( softmax(target / tau1) || softmax(score / tau2) ), averaged over the batch."""
    p = F.softmax(_masked(targets / tau1, mask), dim=-1)
    log_q = F.log_softmax(_masked(scores / tau2, mask), dim=-1)
    log_p = torch.log(p.clamp_min(1e-12))
    return (p * (log_p - log_q) * mask).sum(-1).mean()


def ce_best(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, tau2: float = 1.0, **_) -> torch.Tensor:
    """Cross-entropy with the candidate the rationale ranks best as the one positive."""
    best = _masked(targets, mask).argmax(-1)
    return F.cross_entropy(_masked(scores / tau2, mask), best)


def listnet(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, tau1: float = 1.0,
            tau2: float = 1.0) -> torch.Tensor:
    """ListNet (top-one probabilities): cross-entropy between the two softmax distributions."""
    p = F.softmax(_masked(targets / tau1, mask), dim=-1)
    return -(p * F.log_softmax(_masked(scores / tau2, mask), dim=-1) * mask).sum(-1).mean()


def margin_mse(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    """MarginMSE: score margins to the best target candidate should equal the target margins."""
    best = _masked(targets, mask).argmax(-1, keepdim=True)
    s_margin = scores.gather(-1, best) - scores
    t_margin = targets.gather(-1, best) - targets
    return (((s_margin - t_margin) ** 2) * mask).sum() / mask.sum().clamp_min(1)


LOSSES = {"kl": kl_distill, "ce": ce_best, "listnet": listnet, "margin_mse": margin_mse}


def annealed(tau_start: float, tau_end: float, progress: float) -> float:
    """Linear temperature annealing from tau_start to tau_end as training progresses (0..1)."""
    return tau_start + (tau_end - tau_start) * min(max(progress, 0.0), 1.0)
