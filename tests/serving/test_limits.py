"""The server's guards, in-process over loopback on a tiny model (slowed to 10 ms a forward so that
requests last long enough to be interrupted): the API key (401, OpenAI's format), bounded bodies (413
before parsing, with and without a Content-Length), the bounded queue (503), per-request timeouts
(504, in-band for streams), a client that disconnects mid-stream freeing its row at once, and the
access log line."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from directer import Directer  # noqa: E402
from directer.serving.server import ServerLimits, create_app  # noqa: E402

from bundled_tokenizer import load_bundled_tokenizer, tiny_chat_model  # noqa: E402

KEY = "test-key-123"
HAIKU = [{"role": "user", "content": "Write a haiku about autumn."}]


def _slow_model(tokenizer):
    model = tiny_chat_model(tokenizer, layers=2, context=4096, sharpen=1.0)
    model.get_decoder().register_forward_pre_hook(lambda *_: time.sleep(0.01))
    return model


class Server:
    def __init__(self, limits: ServerLimits, **directer_options):
        tokenizer = load_bundled_tokenizer(padding_side="left")
        self.directer = Directer(_slow_model(tokenizer), tokenizer, model_name="tiny", **directer_options)
        self.directer.config = self.directer.config.__class__(**{**self.directer.config.__dict__, "ignore_eos": True})
        self.app = create_app(self.directer, limits)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health") as r:
            return json.load(r)

    def client(self, key=KEY) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def server():
    s = Server(ServerLimits(api_key=KEY, max_queue=2, max_batch_size=2, max_body_bytes=64 * 1024,
                            request_timeout=3.0, max_tokens_limit=2000, default_temperature=0.0))
    yield s
    s.stop()


def _wait(predicate, seconds=10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_the_api_key_is_required_and_health_is_open(server):
    assert server.client().chat.completions.create(model="m", messages=HAIKU, max_tokens=2).choices
    with pytest.raises(openai.AuthenticationError) as err:
        server.client("wrong").models.list()
    assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
    assert server.health()["status"] == "ok"


def test_the_missing_key_is_401_in_openais_format(server):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "/v1/models")
    assert err.value.code == 401
    error = json.load(err.value)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key" and "--api-key" in error["message"]


def _post_raw(port: int, headers: dict[str, str], pieces: list[bytes]) -> tuple[int, dict]:
    """POST a body piece by piece (the server may answer and close before all of it is sent)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/v1/chat/completions")
    for name, value in {"Authorization": f"Bearer {KEY}", **headers}.items():
        conn.putheader(name, value)
    conn.endheaders()
    try:
        for piece in pieces:
            conn.send(piece)
    except OSError:
        pass
    response = conn.getresponse()
    status, body = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, body


def test_a_large_body_is_refused_before_it_is_parsed(server):
    # A 3 MB Content-Length: refused from the header, after at most the first piece arrived.
    status, body = _post_raw(server.port, {"Content-Length": str(3 << 20)}, [b"{" + b" " * 65536])
    assert status == 413 and "--max-body-bytes" in body["error"]["message"]
    # Chunked, without a Content-Length: refused once the limit is passed.
    chunk = b" " * 16384
    status, body = _post_raw(server.port, {"Transfer-Encoding": "chunked"},
                             [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 8 + [b"0\r\n\r\n"])
    assert status == 413 and body["error"]["code"] == "request_too_large"
    # Under the limit, the same route answers normally.
    r = server.client().chat.completions.create(model="m", messages=HAIKU, max_tokens=2)
    assert r.usage.completion_tokens == 2


def test_a_full_queue_is_503_and_a_disconnected_stream_frees_its_row(server):
    client = server.client()
    streams = [client.chat.completions.create(model="m", messages=HAIKU, max_tokens=1500, stream=True)
               for _ in range(2)]
    for s in streams:
        next(iter(s))
    assert _wait(lambda: server.health()["running"] == 2)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=HAIKU, max_tokens=2)
    assert err.value.status_code == 503 and "--max-queue" in err.value.body["message"]
    completed = server.health()["completed"]
    t0 = time.time()
    for s in streams:
        s.close()  # the clients go away mid-stream
    assert _wait(lambda: server.health()["pending"] == 0, 5), server.health()
    freed = time.time() - t0
    assert server.health()["completed"] == completed  # cancelled, not decoded to the end
    r = client.chat.completions.create(model="m", messages=HAIKU, max_tokens=4)
    assert r.usage.completion_tokens == 4 and freed < 3  # 1,500 tokens would take > 15 s


def test_a_request_past_its_timeout_is_stopped(server):
    client = server.client()
    t0 = time.time()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=HAIKU, max_tokens=1900)
    assert err.value.status_code == 504 and err.value.body["code"] == "timeout" and time.time() - t0 < 10
    with pytest.raises(openai.APIError, match="--request-timeout"):  # in-band: the status was already sent
        list(client.chat.completions.create(model="m", messages=HAIKU, max_tokens=1900, stream=True))
    assert _wait(lambda: server.health()["pending"] == 0, 5)


def test_the_access_log_has_one_line_per_request(server, caplog):
    def own_lines() -> list[str]:
        # An earlier test's last /health poll is logged after its response was sent, so its line can
        # land inside this window: count only the requests made here.
        return [r.getMessage() for r in caplog.records
                if r.name == "directer.access" and "/health" not in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="directer.access"):
        server.client().chat.completions.create(model="m", messages=HAIKU, max_tokens=3)
        try:
            server.client("wrong").models.list()
        except openai.AuthenticationError:
            pass
        # A line is written once its response has gone out, so the client can see the response first.
        deadline = time.monotonic() + 10
        while len(own_lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # and no third line follows
    lines = own_lines()
    assert len(lines) == 2
    assert '"POST /v1/chat/completions" 200 3 tokens' in lines[0] and lines[0].endswith(" s")
    assert '"GET /v1/models" 401 -' in lines[1]


def test_a_request_past_the_kv_cache_budget_is_a_400_naming_the_fix():
    server = Server(ServerLimits(max_batch_size=2, default_temperature=0.0), cache_tokens=64)
    try:
        client = server.client(key="unused")
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny", messages=HAIKU, max_tokens=60)
        message = caught.value.body["message"]
        assert "max_tokens (60)" in message and "budget holds 64 (--cache-tokens 64)" in message, message
        ok = client.chat.completions.create(model="tiny", messages=HAIKU, max_tokens=8)
        assert ok.usage.completion_tokens == 8
    finally:
        server.stop()
