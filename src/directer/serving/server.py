"""``directer serve``: an OpenAI-compatible HTTP server (FastAPI) with optional DIRECTER steering.

Endpoints: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/health``. A request steers
when it carries an extra body field ``directer``::

    {"instructions": ["Do not use any commas."], "alpha": 100, "beta": 0.5, "method": "directer", "mode": "paper"}

(with the openai client: ``extra_body={"directer": {...}}``); without it the server decodes plainly
(``method="none"``). ``temperature``, ``top_p`` (and the extensions ``top_k``, ``min_p``), ``seed``,
``n``, ``stop``, ``max_tokens``/``max_completion_tokens``, ``logprobs``/``top_logprobs`` (chat),
``stream`` and ``stream_options.include_usage`` are honoured; every other field is refused with a 400
naming it (:mod:`directer.serving.protocol`). Each choice carries its steering stats in an extra field
``directer`` (with n = 1 also the response's); a stream carries them in the chunk that ends a choice.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..api import Directer
from ..errors import DirecterError
from .guard import Guard
from .protocol import STEERING_FIELDS, CompletionRequest, RequestError, api_words, parse_request
from .responses import Choice, chunk, completion_body, finish_choice, logprob_entries, usage
from .scheduler import Job, Scheduler, ServiceUnavailable
from .detokenize import IncrementalText
from .stops import StopStrings

DISCONNECT_POLL = 0.25  # seconds between checks that a client is still connected

__all__ = ["STEERING_FIELDS", "RequestError", "ServerLimits", "create_app"]


@dataclass
class ServerLimits:
    max_tokens_default: int = 256
    max_tokens_limit: int = 1024
    max_prompt_tokens: int = 4096
    max_batch_size: int = 8
    max_queue: int = 256  # requests queued or decoding; more get 503
    max_body_bytes: int = 1 << 20  # larger bodies get 413 before they are parsed
    request_timeout: float = 600.0  # seconds; a request still running then is stopped (504)
    default_temperature: float = 1.0  # a request without "temperature" samples at OpenAI's default
    api_key: str | None = None  # requests must send "Authorization: Bearer KEY"
    access_log: bool = True


def create_app(directer: Directer, limits: ServerLimits | None = None) -> Any:
    """The ASGI application: the FastAPI routes behind the :class:`~directer.serving.guard.Guard`."""
    limits = limits or ServerLimits()
    scheduler = Scheduler(directer, max_batch_size=limits.max_batch_size, max_queue=limits.max_queue)

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
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(RequestError(f"{exc.detail}: {request.method} {request.url.path}").body(),
                            status_code=exc.status_code)

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
        return await _complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _complete(request, chat=False)

    async def _complete(request: Request, chat: bool):
        body = await _json_body(request)
        if body.get("temperature") is None:
            body = {**body, "temperature": limits.default_temperature}
        req = parse_request(body, chat, limits.max_tokens_default, limits.max_tokens_limit)
        try:
            prepared = await run_in_threadpool(directer.prepare, req.prompt, req.instructions, config=req.config,
                                               chat_template=None if chat else False)
            if len(prepared.input_ids) > limits.max_prompt_tokens:
                raise RequestError(
                    f"the prompt has {len(prepared.input_ids)} tokens; this server accepts at most {limits.max_prompt_tokens}",
                    "messages" if chat else "prompt")
            directer.check_length(len(prepared.input_ids), req.max_tokens)
            directer.runner.check_budget(len(prepared.input_ids), req.max_tokens, limits.max_batch_size)
        except DirecterError as exc:
            raise RequestError(api_words(str(exc))) from None
        config = req.config.seeded()  # one seed for the n samples, each on its own stream
        stops = StopStrings(directer.tokenizer, req.stop) if req.stop else None
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        jobs = []
        for i in range(req.n):
            def on_tokens(tokens, done, logprobs, top, i=i):
                loop.call_soon_threadsafe(events.put_nowait, (i, tokens, logprobs, top))

            jobs.append(Job(prepared, config, req.max_tokens, on_tokens if req.stream else None, sample_index=i,
                            stop=stops, top_logprobs=req.top_logprobs, timeout=limits.request_timeout))
        try:
            for job in jobs:
                scheduler.submit(job)
        except ServiceUnavailable as exc:
            for job in jobs:
                job.cancel()
            raise RequestError(str(exc), status=503, kind="server_error", code="server_busy") from None
        for i, job in enumerate(jobs):
            job.future.add_done_callback(lambda f, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, None, None, None)))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        prompt_tokens = len(prepared.input_ids)
        if req.stream:
            return StreamingResponse(_stream(request, rid, req, jobs, events, stops, prompt_tokens),
                                     media_type="text/event-stream")
        waiters = [asyncio.wrap_future(j.future) for j in jobs]
        gathered = asyncio.ensure_future(asyncio.gather(*waiters))
        while not gathered.done():
            await asyncio.wait({gathered}, timeout=DISCONNECT_POLL)
            if not gathered.done() and await request.is_disconnected():
                for job in jobs:
                    job.cancel()  # the client is gone: its rows are freed at the next forward
                gathered.cancel()
                return Response(status_code=499)
        try:
            results = gathered.result()
        except TimeoutError as exc:
            raise _timeout(exc) from None
        choices = [finish_choice(i, r, stops, directer.tokenizer, req.logprobs) for i, r in enumerate(results)]
        request.state.completion_tokens = sum(c.tokens for c in choices)
        return completion_body(rid, directer.model_name, chat, choices, prompt_tokens)

    async def _stream(request: Request, rid: str, req: CompletionRequest, jobs: list[Job], events: asyncio.Queue,
                      stops: StopStrings | None, prompt_tokens: int) -> AsyncIterator[str]:
        created, model, chat = int(time.time()), directer.model_name, req.chat
        sent = [""] * req.n  # text streamed so far, per choice
        texts = [IncrementalText(directer.tokenizer) for _ in range(req.n)]  # each token decodes a short window
        sent_tokens = [0] * req.n  # tokens whose log-probabilities were streamed
        open_ = set(range(req.n))
        total = 0
        try:
            for i in range(req.n):
                yield chunk(rid, model, chat, created, i, role=chat, delta="" if not chat else None)
            while open_:
                try:
                    i, tokens, logprobs, top = await asyncio.wait_for(events.get(), DISCONNECT_POLL * 4)
                except asyncio.TimeoutError:
                    continue
                if i not in open_:
                    continue
                if tokens is not None:  # a new token: stream what can no longer change
                    text = texts[i].update(tokens)
                    text = stops.safe(text) if stops is not None else text
                    if len(text) > len(sent[i]):
                        lp = logprob_entries(directer.tokenizer, tokens, sent_tokens[i], len(tokens), logprobs, top) \
                            if req.logprobs else None
                        sent_tokens[i] = len(tokens)
                        yield chunk(rid, model, chat, created, i, text[len(sent[i]):], logprobs=lp)
                        sent[i] = text
                    continue
                open_.discard(i)
                try:
                    result = jobs[i].future.result()
                except TimeoutError as exc:
                    yield f"data: {json.dumps(_timeout(exc).body())}\n\n"
                    return
                except Exception as exc:  # surfaced in-band: the HTTP status is already sent
                    yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n"
                    return
                choice: Choice = finish_choice(i, result, stops, directer.tokenizer, req.logprobs)
                total += choice.tokens
                rest = choice.text[len(sent[i]):] if choice.text.startswith(sent[i]) else ""
                lp = choice.logprobs[sent_tokens[i]:] if choice.logprobs is not None else None
                if rest or lp:
                    yield chunk(rid, model, chat, created, i, rest, logprobs=lp)
                yield chunk(rid, model, chat, created, i, None, choice.finish_reason, extra={"directer": choice.directer})
            if req.include_usage:
                yield chunk(rid, model, chat, created, None, extra={"usage": usage(prompt_tokens, total)})
            request.state.completion_tokens = total
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or the stream ended): never decode for nobody
            for job in jobs:
                if not job.future.done():
                    job.cancel()

    return Guard(app, api_key=limits.api_key, max_body_bytes=limits.max_body_bytes, access_log=limits.access_log)


def _timeout(exc: Exception) -> RequestError:
    return RequestError(f"{exc}; it was stopped (the server's --request-timeout)", status=504, kind="server_error",
                        code="timeout")


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    return body
