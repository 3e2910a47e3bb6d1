"""The OpenAI response bodies: choices, chunks, log-probabilities and usage, from generation results.

Log-probabilities are the raw (unsteered) model's, at temperature 1 before any top-k/top-p/min-p
transform: the distribution DIRECTER's plausibility check reads, whichever token was emitted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ..results import GenerationResult
from .stops import StopStrings

__all__ = ["Choice", "chunk", "completion_body", "finish_choice", "logprob_entries", "stats", "usage"]


@dataclass
class Choice:
    """One of a request's n responses, as the client sees it."""

    index: int
    text: str
    finish_reason: str  # "stop" (end of sequence or a stop string) or "length"
    tokens: int  # completion tokens generated
    logprobs: list[dict] | None
    directer: dict


def finish_choice(index: int, result: GenerationResult, stops: StopStrings | None, tokenizer: Any,
                  logprobs: bool) -> Choice:
    text, hit = stops.cut(result.text) if stops is not None else (result.text, False)
    finish = "stop" if hit or result.finish_reason in ("eos", "stop") else "length"
    entries = None
    if logprobs:
        kept = _tokens_within(result.token_ids, text, tokenizer) if hit else len(result.token_ids)
        entries = logprob_entries(tokenizer, result, 0, kept)
    return Choice(index, text, finish, len(result.token_ids), entries, stats(result))


def _tokens_within(token_ids: list[int], text: str, tokenizer: Any) -> int:
    """How many leading tokens a text cut before a stop string still covers (the one the cut falls in
    included)."""
    for k in range(1, len(token_ids) + 1):
        if len(tokenizer.decode(token_ids[:k], skip_special_tokens=True)) >= len(text):
            return k
    return len(token_ids)


def logprob_entries(tokenizer: Any, result_or_ids: Any, start: int, end: int,
                    logprobs: list[float] | None = None, top: list | None = None) -> list[dict]:
    """Chat ``logprobs.content`` entries for tokens ``start:end`` (of a result, or of token ids with
    their raw log-probabilities and top alternatives)."""
    if isinstance(result_or_ids, GenerationResult):
        ids, logprobs, top = result_or_ids.token_ids, result_or_ids.raw_logprobs, result_or_ids.top_logprobs
    else:
        ids = result_or_ids
    entries = []
    for t in range(start, min(end, len(ids))):
        alternatives = [_token(tokenizer, i, lp) for i, lp in (top[t] if top and t < len(top) else [])]
        lp = logprobs[t] if logprobs and t < len(logprobs) else None
        entries.append({**_token(tokenizer, ids[t], lp), "top_logprobs": alternatives})
    return entries


def _token(tokenizer: Any, token_id: int, logprob: float | None) -> dict:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def stats(result: GenerationResult) -> dict:
    d = result.to_dict()
    keys = ("method", "mode", "alpha", "beta", "parameters", "instruction_token_spans", "ranking", "stats", "trace",
            "sampling", "notes")
    return {k: d[k] for k in keys}


def completion_body(rid: str, model: str, chat: bool, choices: list[Choice], prompt_tokens: int) -> dict:
    """A whole (non-streamed) response. With one choice its steering stats are also the top-level
    ``directer`` field; every choice carries its own."""
    body_choices = []
    for c in choices:
        if chat:
            d: dict[str, Any] = {"index": c.index, "message": {"role": "assistant", "content": c.text},
                                 "logprobs": {"content": c.logprobs, "refusal": None} if c.logprobs is not None else None,
                                 "finish_reason": c.finish_reason}
        else:
            d = {"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
        d["directer"] = c.directer
        body_choices.append(d)
    body = {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": body_choices,
            "usage": usage(prompt_tokens, sum(c.tokens for c in choices))}
    if len(choices) == 1:
        body["directer"] = choices[0].directer
    return body


def chunk(rid: str, model: str, chat: bool, created: int, index: int | None, delta: str | None = None,
          finish: str | None = None, role: bool = False, logprobs: list[dict] | None = None,
          extra: dict | None = None) -> str:
    """One server-sent event of a stream (``index=None``: a chunk without choices, for usage)."""
    choices = []
    if index is not None:
        if chat:
            d: dict[str, Any] = {"role": "assistant", "content": ""} if role else ({} if delta is None else {"content": delta})
            choice = {"index": index, "delta": d, "logprobs": {"content": logprobs, "refusal": None} if logprobs else None,
                      "finish_reason": finish}
        else:
            choice = {"index": index, "text": delta or "", "logprobs": None, "finish_reason": finish}
        choices.append(choice)
    payload = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
               "model": model, "choices": choices}
    payload.update(extra or {})
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
