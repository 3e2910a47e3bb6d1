"""Quality and over-steering signals that need no LLM judge."""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch

from ..engine.devices import input_device

__all__ = ["perplexities", "repetition", "restates_instruction", "words"]

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repetition(text: str, n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier n-gram of the same text (0: none, near 1: a loop)."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def restates_instruction(response: str, instructions: Sequence[str], threshold: float = 0.5,
                         vocabulary_share: float = 0.6) -> bool:
    """True when the response mostly repeats the instruction text instead of doing the task.

    Over-steered models echo the instruction, verbatim ("Do not use any commas. Do not use any commas")
    or jumbled ("use the at English and the entire entire in at 900 words"). Criterion: the response (at
    least 3 words) is contained in an instruction, or at least ``threshold`` of its word 3-grams occur in
    the instructions, or at least ``vocabulary_share`` of its words are words of the instructions. (On a
    40-prompt IFEval sample of the bundled model, unsteered responses had at most 48 % of their words
    from the instruction's vocabulary, static all-layer steering a median of 84 %.)
    """
    resp = words(response)
    if not resp or not instructions:
        return False
    inst_words = [words(i) for i in instructions]
    vocab = {w for ws in inst_words for w in ws}
    if sum(w in vocab for w in resp) / len(resp) >= vocabulary_share:
        return True
    joined = " ".join(" ".join(w) for w in inst_words)
    if len(resp) >= 3 and " ".join(resp) in joined:
        return True
    grams = [tuple(resp[i:i + 3]) for i in range(len(resp) - 2)]
    if not grams:
        return False
    inst_grams = {tuple(w[i:i + 3]) for w in inst_words for i in range(len(w) - 2)}
    return sum(g in inst_grams for g in grams) / len(grams) >= threshold


@torch.inference_mode()
def perplexities(model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                 batch_size: int = 4) -> list[float | None]:
    """Perplexity of each response under the raw (unsteered) model, conditioned on its prompt.

    None for an empty response. Prompts and responses are token ids; batches are right-padded and
    only response positions are scored.
    """
    out: list[float | None] = [None] * len(prompts)
    device = input_device(model)
    todo = [i for i, r in enumerate(responses) if len(r) > 0]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        seqs = [list(prompts[i]) + list(responses[i]) for i in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), width, dtype=torch.long)
        mask = torch.zeros(len(seqs), width, dtype=torch.long)
        for k, s in enumerate(seqs):
            ids[k, :len(s)] = torch.tensor(s)
            mask[k, :len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(logits.device).unsqueeze(-1)).squeeze(-1)
        for k, i in enumerate(chunk):
            p, r = len(prompts[i]), len(responses[i])
            nll = -logp[k, p - 1:p - 1 + r].mean().item()
            out[i] = math.exp(nll)
    return out
