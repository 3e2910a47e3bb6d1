"""What every request passes before a route sees it, as plain ASGI middleware (so streamed responses
are not buffered): the API key, the body size (refused with 413 before the body is read whole), and
one access log line per request once its response has ended (method, path, status, tokens, seconds)."""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any, Awaitable, Callable

__all__ = ["ACCESS_LOG", "Guard"]

ACCESS_LOG = logging.getLogger("directer.access")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
OPEN_PATHS = ("/health",)  # liveness probes need no key


def _error(status: int, message: str, kind: str, code: str | None = None) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return status, json.dumps(body).encode()


class Guard:
    def __init__(self, app: Callable, api_key: str | None = None, max_body_bytes: int = 1 << 20,
                 access_log: bool = True):
        self.app, self.api_key, self.max_body_bytes, self.access_log = app, api_key, max_body_bytes, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        scope.setdefault("state", {})
        status = [0]

        async def send_logged(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._log(scope, status[0], t0)

        refusal = self._refuse(scope)
        if refusal is not None:
            await _reply(send_logged, *refusal)
            return
        # The body is read here, bounded, then handed to the app: a multi-megabyte body is refused
        # after max_body_bytes, before anything parses it.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                self._log(scope, 499, t0)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                await _reply(send_logged, *self._too_large())
                return
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def receive_replayed() -> dict:
            return replay.pop() if replay else await receive()

        await self.app(scope, receive_replayed, send_logged)
        if status[0] == 0:  # nothing was sent (the client went away first)
            self._log(scope, 499, t0)

    def _refuse(self, scope: Scope) -> tuple[int, bytes] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and not scope.get("path", "").startswith(OPEN_PATHS):
            given = headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                what = "no API key was given" if not given else "the API key is not this server's"
                return _error(401, f"Incorrect API key provided: {what}. Send the server's key (its --api-key) as "
                                   "'Authorization: Bearer KEY'.", "invalid_request_error", "invalid_api_key")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> tuple[int, bytes]:
        return _error(413, f"the request body is larger than this server's limit of {self.max_body_bytes} bytes "
                           "(its --max-body-bytes)", "invalid_request_error", "request_too_large")

    def _log(self, scope: Scope, status: int, t0: float) -> None:
        if not self.access_log:
            return
        client = scope.get("client") or ("-", 0)
        tokens = scope["state"].get("completion_tokens")
        ACCESS_LOG.info('%s "%s %s" %d %s %.2f s', client[0], scope.get("method"), scope.get("path"), status,
                        f"{tokens} tokens" if tokens is not None else "-", time.perf_counter() - t0)


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
