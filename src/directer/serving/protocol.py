"""The OpenAI request bodies the server takes, read into one :class:`CompletionRequest`.

Every field is either honoured or refused with a 400 naming it: nothing is silently ignored. A field
sent with its neutral value (``null``, ``frequency_penalty: 0``, ``tools: []``, ...), which many
clients send by default, is accepted. Error messages speak the API's field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import SteeringConfig
from ..errors import DirecterError

__all__ = ["CompletionRequest", "RequestError", "STEERING_FIELDS", "api_words", "parse_request"]

STEERING_FIELDS = {"instructions", "alpha", "beta", "method", "mode"}
MAX_STOP = 4
MAX_N = 16
MAX_TOP_LOGPROBS = 20

# Fields both endpoints honour; chat and completions add their own.
COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "n", "stop", "stream",
          "stream_options", "user", "directer"}
CHAT = COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}
COMPLETION = COMMON | {"prompt"}
# Fields we cannot honour, accepted only with the value that means "off".
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logit_bias": ({},), "tools": ([],),
    "functions": ([],), "tool_choice": ("none",), "parallel_tool_calls": (False, True), "store": (False,),
    "response_format": ({"type": "text"},), "echo": (False,), "best_of": (1,), "suffix": ("",), "metadata": ({},),
    "logprobs@completions": (0,),
}


class RequestError(Exception):
    """A request the server refuses: sent back as OpenAI-style error JSON."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.kind, self.code = param, status, kind, code

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class CompletionRequest:
    chat: bool
    prompt: Any  # chat messages [{role, content}] or a string
    config: SteeringConfig
    instructions: list[str]
    max_tokens: int
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0


def api_words(message: str) -> str:
    """A library error message in the API's words (``max_tokens``, not ``--max-new-tokens``)."""
    for cli, api in (("--max-new-tokens", "max_tokens"), ("max-new-tokens", "max_tokens"),
                     ("max_new_tokens", "max_tokens"), ("--instruction", "directer.instructions"),
                     ("--method", "directer.method"), ("--mode", "directer.mode"), ("--layers", "directer.method layers"),
                     ("--strict-instructions", "directer.instructions"), ("--alpha", "directer.alpha"),
                     ("--beta", "directer.beta"), ("--temperature", "temperature")):
        message = message.replace(cli, api)
    return message


def parse_request(body: dict, chat: bool, max_tokens_default: int, max_tokens_limit: int) -> CompletionRequest:
    """Check a request body and read it (RequestError names the first field that is wrong)."""
    allowed = CHAT if chat else COMPLETION
    for name, value in body.items():
        if name in allowed or value is None:
            continue
        neutral = NEUTRAL.get(f"{name}@completions" if not chat and name == "logprobs" else name)
        if neutral is not None and value in neutral:
            continue
        why = "is not supported by this server" if neutral is not None or name in NEUTRAL else "is not a field this endpoint takes"
        raise RequestError(f"'{name}' {why}; remove it from the request", name)
    prompt = _messages(body.get("messages")) if chat else _prompt(body.get("prompt"))
    n = _integer(body, "n", 1, 1, MAX_N)
    max_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _integer(body, max_name, max_tokens_default, 1, max_tokens_limit)
    sampling = {"temperature": _number(body, "temperature", 1.0), "top_p": _number(body, "top_p", 1.0),
                "top_k": body.get("top_k") if body.get("top_k") is not None else 0,
                "min_p": _number(body, "min_p", 0.0), "seed": body.get("seed")}
    if sampling["top_k"] == -1:  # vLLM's spelling of "off"
        sampling["top_k"] = 0
    try:  # the sampling fields' names are the API's
        SteeringConfig(method="none", **sampling)
    except DirecterError as exc:
        raise RequestError(str(exc), _first_word_after_invalid(str(exc))) from None
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOP:
        raise RequestError(f"'stop' must be a non-empty string or a list of at most {MAX_STOP} of them", "stop")
    stream = _flag(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise RequestError("'stream_options' takes only {\"include_usage\": true|false}", "stream_options")
    include_usage = bool((options or {}).get("include_usage"))
    if include_usage and not stream:
        raise RequestError("'stream_options' is only allowed with \"stream\": true", "stream_options")
    logprobs = _flag(body, "logprobs") if chat else False
    top = _integer(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS) if chat else 0
    if top and not logprobs:
        raise RequestError("'top_logprobs' needs \"logprobs\": true", "top_logprobs")
    config, instructions = _steering(body)
    if config.mode == "reference" and sampling["temperature"] > 0:
        raise RequestError("\"directer.mode\": \"reference\" decodes greedily as the released code does: send "
                           "\"temperature\": 0 with it", "temperature")
    try:
        config = SteeringConfig(**{**config.__dict__, **sampling, "max_new_tokens": max_tokens})
    except DirecterError as exc:
        raise RequestError(api_words(str(exc)), "directer") from None
    return CompletionRequest(chat, prompt, config, instructions, max_tokens, n, stop, stream, include_usage,
                             logprobs, top)


def _first_word_after_invalid(message: str) -> str | None:
    words = message.split()
    return words[1] if len(words) > 1 and words[0] == "invalid" else None


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{name}' must be a number", name)
    return float(value)


def _integer(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"'{name}' must be an integer in {low}..{high}", name)
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false", name)
    return bool(value)


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise RequestError(f"'messages[{i}]' must be an object with a string 'role' and a 'content'", "messages")
        out.append({"role": m["role"], "content": _content(m["content"], i)})
    return out


def _content(content: Any, i: int) -> str:
    """A message's text: a string, or a list of parts of which only text parts are taken (joined by
    newlines, as other OpenAI-compatible servers do)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list) or not content:
        raise RequestError(f"'messages[{i}].content' must be a string or a non-empty list of parts", "messages")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise RequestError(f"'messages[{i}].content[{j}]' is a {kind or 'malformed'!s} part; this server takes "
                               "only {\"type\": \"text\", \"text\": ...} parts", "messages")
        texts.append(part["text"])
    return "\n".join(texts)


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("'prompt' must be a non-empty string (one prompt per request)", "prompt")
    return prompt


def _steering(body: dict) -> tuple[SteeringConfig, list[str]]:
    """The SteeringConfig of a request: plain decoding unless it carries a ``directer`` field."""
    field_ = body.get("directer")
    if field_ is None:
        return SteeringConfig(method="none"), []
    if not isinstance(field_, dict):
        raise RequestError("'directer' must be an object like {\"instructions\": [...], \"alpha\": 100}", "directer")
    unknown = set(field_) - STEERING_FIELDS
    if unknown:
        raise RequestError(f"unknown field(s) in 'directer': {', '.join(sorted(unknown))} "
                           f"(allowed: {', '.join(sorted(STEERING_FIELDS))})", "directer")
    instructions = field_.get("instructions", [])
    if isinstance(instructions, str):
        instructions = [instructions]
    if not isinstance(instructions, list) or not all(isinstance(i, str) for i in instructions):
        raise RequestError("'directer.instructions' must be a list of strings", "directer.instructions")
    settings = {k: field_[k] for k in ("alpha", "beta", "method", "mode") if k in field_}
    if isinstance(settings.get("method"), str) and "profile=" in settings["method"]:
        # A request must not make the server read files by path.
        raise RequestError("head profiles (pasta:profile=...) cannot be given in a request", "directer.method")
    try:
        return SteeringConfig(**settings), instructions
    except DirecterError as exc:
        raise RequestError(api_words(str(exc)), "directer") from None
    except TypeError as exc:
        raise RequestError(f"invalid 'directer' settings: {exc}", "directer") from None
