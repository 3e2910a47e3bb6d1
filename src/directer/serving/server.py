"""``directer serve``: an OpenAI-compatible HTTP server (FastAPI) with optional DIRECTER steering.

Endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/health``. A request steers
when it carries an extra body field ``directer``::

    {"instructions": ["Do not use any commas."], "alpha": 100, "beta": 0.5, "method": "directer", "mode": "paper"}

(with the openai client: ``extra_body={"directer": {...}}``); without it the server decodes plainly
(``method="none"``). Decoding is greedy; sampling parameters are accepted and ignored. Responses carry
the steering stats in an extra field ``directer``; streamed responses carry them in the last chunk.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..api import Directer
from ..errors import DirecterError
from ..results import GenerationResult
from .scheduler import Job, Scheduler, ServiceUnavailable

DISCONNECT_POLL = 0.25  # seconds between checks that a non-streaming client is still connected

__all__ = ["STEERING_FIELDS", "create_app", "RequestError", "ServerLimits"]

STEERING_FIELDS = {"instructions", "alpha", "beta", "method", "mode"}


class RequestError(Exception):
    """A request the server refuses: sent back as OpenAI-style error JSON."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.param, self.status, self.kind = param, status, kind

    def response(self) -> JSONResponse:
        body = {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": None}}
        return JSONResponse(body, status_code=self.status)


@dataclass
class ServerLimits:
    max_tokens_default: int = 256
    max_tokens_limit: int = 1024
    max_prompt_tokens: int = 4096
    max_batch_size: int = 8


def create_app(directer: Directer, limits: ServerLimits | None = None) -> FastAPI:
    limits = limits or ServerLimits()
    scheduler = Scheduler(directer, max_batch_size=limits.max_batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        yield
        # Graceful shutdown: the server has stopped taking connections; finish what was accepted.
        await run_in_threadpool(scheduler.close)

    app = FastAPI(title="directer", lifespan=lifespan)
    app.state.scheduler = scheduler

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return RequestError(f"{exc.detail}: {request.method} {request.url.path}", status=exc.status_code).response()

    @app.get("/health")
    async def health():
        running, waiting = scheduler.running, scheduler.waiting
        return {"status": "ok", "model": directer.model_name, "running": running, "waiting": waiting,
                "pending": running + waiting, "completed": scheduler.completed}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": directer.model_name, "object": "model", "created": 0,
                                             "owned_by": "directer"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _json_body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
        ):
            raise RequestError("'messages' must be a non-empty list of {role, content} objects with string content",
                               "messages")
        return await _complete(request, body, [dict(role=m["role"], content=m["content"]) for m in messages], chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _json_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise RequestError("'prompt' must be a non-empty string", "prompt")
        return await _complete(request, body, prompt, chat=False)

    async def _complete(request: Request, body: dict, prompt: Any, chat: bool):
        if body.get("n", 1) != 1:
            raise RequestError("only n=1 is supported", "n")
        if body.get("stop"):
            raise RequestError("stop sequences are not supported by this server; stop on max_tokens or end of sequence",
                               "stop")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or limits.max_tokens_default
        if not isinstance(max_tokens, int) or not 1 <= max_tokens <= limits.max_tokens_limit:
            raise RequestError(f"max_tokens must be an integer in 1..{limits.max_tokens_limit}", "max_tokens")
        config, instructions = _steering(body)
        config = replace(config, max_new_tokens=max_tokens)
        try:
            prepared = await run_in_threadpool(
                directer.prepare, prompt, instructions, config=config, chat_template=None if chat else False
            )
            if len(prepared.input_ids) > limits.max_prompt_tokens:
                raise RequestError(
                    f"the prompt has {len(prepared.input_ids)} tokens; this server accepts at most {limits.max_prompt_tokens}",
                    "messages" if chat else "prompt")
            directer.check_length(len(prepared.input_ids), max_tokens)
        except DirecterError as exc:
            raise RequestError(str(exc)) from None

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stream = bool(body.get("stream"))

        def on_tokens(tokens: list[int], done: bool) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, tokens)

        job = Job(prepared, config, max_tokens, on_tokens if stream else None)
        try:
            future = scheduler.submit(job)
        except ServiceUnavailable as exc:
            raise RequestError(str(exc), status=503, kind="server_error") from None
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if not stream:
            waiter = asyncio.ensure_future(asyncio.wrap_future(future))
            while not waiter.done():
                await asyncio.wait({waiter}, timeout=DISCONNECT_POLL)
                if not waiter.done() and await request.is_disconnected():
                    job.cancel()  # the client is gone: its slot is freed at the next forward
                    waiter.cancel()
                    return Response(status_code=499)
            result = waiter.result()
            return _final_body(rid, result, chat, len(prepared.input_ids))
        return StreamingResponse(_events(rid, job, queue, chat, len(prepared.input_ids)),
                                 media_type="text/event-stream")

    async def _events(rid: str, job: Job, queue: asyncio.Queue, chat: bool, prompt_tokens: int) -> AsyncIterator[str]:
        try:
            async for event in _stream(rid, job.future, queue, chat, prompt_tokens):
                yield event
        finally:  # the client went away (or the stream ended): never decode for nobody
            if not job.future.done():
                job.cancel()

    async def _stream(rid: str, future, queue: asyncio.Queue, chat: bool, prompt_tokens: int) -> AsyncIterator[str]:
        created, sent, obj = int(time.time()), "", "chat.completion.chunk" if chat else "text_completion"
        done_waiter = asyncio.ensure_future(asyncio.wrap_future(future))

        def chunk(delta: str | None, finish: str | None = None, extra: dict | None = None) -> str:
            if chat:
                d = {} if delta is None else {"content": delta}
                if delta == "" and finish is None and not sent:
                    d = {"role": "assistant", "content": ""}
                choice = {"index": 0, "delta": d, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            payload = {"id": rid, "object": obj, "created": created, "model": directer.model_name, "choices": [choice]}
            payload.update(extra or {})
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        yield chunk("")
        while True:
            getter = asyncio.ensure_future(queue.get())
            finished, _ = await asyncio.wait({getter, done_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in finished:
                text = _stable_text(directer.tokenizer.decode(getter.result(), skip_special_tokens=True))
                if len(text) > len(sent):
                    delta, sent = text[len(sent):], text
                    yield chunk(delta)
                continue
            getter.cancel()
            break
        try:
            result: GenerationResult = done_waiter.result()
        except Exception as exc:  # surfaced in-band: the HTTP status is already sent
            yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n"
            return
        if len(result.text) > len(sent):
            yield chunk(result.text[len(sent):])
        finish = "stop" if result.finish_reason == "eos" else "length"
        yield chunk(None, finish, {"usage": _usage(prompt_tokens, result), "directer": _stats(result)})
        yield "data: [DONE]\n\n"

    return app


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body


def _steering(body: dict):
    """The SteeringConfig of a request: plain decoding unless it carries a ``directer`` field."""
    from ..config import SteeringConfig

    field = body.get("directer")
    if field is None:
        return SteeringConfig(method="none"), []
    if not isinstance(field, dict):
        raise RequestError("'directer' must be an object like {\"instructions\": [...], \"alpha\": 100}", "directer")
    unknown = set(field) - STEERING_FIELDS
    if unknown:
        raise RequestError(f"unknown field(s) in 'directer': {', '.join(sorted(unknown))} "
                           f"(allowed: {', '.join(sorted(STEERING_FIELDS))})", "directer")
    instructions = field.get("instructions", [])
    if isinstance(instructions, str):
        instructions = [instructions]
    if not isinstance(instructions, list) or not all(isinstance(i, str) for i in instructions):
        raise RequestError("'directer.instructions' must be a list of strings", "directer.instructions")
    settings = {k: field[k] for k in ("alpha", "beta", "method", "mode") if k in field}
    if isinstance(settings.get("method"), str) and "profile=" in settings["method"]:
        # A request must not make the server read files by path.
        raise RequestError("head profiles (pasta:profile=...) cannot be given in a request", "directer.method")
    try:
        return SteeringConfig(**settings), instructions
    except DirecterError as exc:
        raise RequestError(str(exc), "directer") from None
    except TypeError as exc:
        raise RequestError(f"invalid 'directer' settings: {exc}", "directer") from None


def _stable_text(text: str) -> str:
    # A token that ends inside a multi-byte character decodes to U+FFFD until the character completes.
    return text[:-1] if text.endswith("\ufffd") else text


def _usage(prompt_tokens: int, result: GenerationResult) -> dict:
    n = len(result.token_ids)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}


def _stats(result: GenerationResult) -> dict:
    d = result.to_dict()
    return {k: d[k] for k in ("method", "mode", "alpha", "beta", "instruction_token_spans", "ranking", "stats", "trace")}


def _final_body(rid: str, result: GenerationResult, chat: bool, prompt_tokens: int) -> dict:
    finish = "stop" if result.finish_reason == "eos" else "length"
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": finish}
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": result.model, "choices": [choice], "usage": _usage(prompt_tokens, result),
            "directer": _stats(result)}
