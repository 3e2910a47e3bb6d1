"""`directer serve` on the bundled model, driven by the official openai client over loopback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow

HAIKU = [{"role": "user", "content": "Write a haiku about autumn."}]
STEER = {"directer": {"instructions": ["Do not use any commas."], "alpha": 100, "beta": 0.5}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "directer.cli", "serve", "--port", str(port), "--max-batch-size", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if json.load(r)["status"] == "ok":
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = _start(port)
    yield port
    proc.send_signal(signal.SIGINT)
    proc.wait(60)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server}/v1", api_key="unused", max_retries=0, timeout=300)


def chat(client, messages=HAIKU, steer=True, max_tokens=12, temperature=0, **kw):
    return client.chat.completions.create(model="bundled", messages=messages, max_tokens=max_tokens,
                                          temperature=temperature, extra_body=STEER if steer else None, **kw)


def test_models_and_health(client, server):
    assert "SmolLM2" in client.models.list().data[0].id
    with urllib.request.urlopen(f"http://127.0.0.1:{server}/health") as r:
        assert json.load(r)["status"] == "ok"


def test_plain_and_steered_completions(client):
    plain = chat(client, steer=False)
    steered = chat(client)
    assert plain.choices[0].message.content and steered.choices[0].message.content
    assert plain.model_extra["directer"]["method"] == "none"
    info = steered.model_extra["directer"]
    assert info["method"] == "directer" and info["alpha"] == 100
    assert info["stats"]["steps"] == steered.usage.completion_tokens <= 12
    assert info["stats"]["trials"] > 0 and len(info["instruction_token_spans"]) == 1
    assert plain.choices[0].message.content != steered.choices[0].message.content


def test_a_baseline_through_the_server(client):
    body = {"directer": {"instructions": ["Do not use any commas."], "method": "pasta:filter=1"}}
    r = client.chat.completions.create(model="bundled", messages=HAIKU, max_tokens=8, temperature=0, extra_body=body)
    info = r.model_extra["directer"]
    assert r.choices[0].message.content and info["method"] == "pasta:filter=1"
    assert info["stats"]["steps"] == len(info["trace"]) == r.usage.completion_tokens


def test_the_system_message_as_the_instruction(client):
    rules = "Do not use any commas."
    messages = [{"role": "system", "content": rules}] + HAIKU
    by_role = client.chat.completions.create(model="bundled", messages=messages, max_tokens=8, temperature=0,
                                             extra_body={"directer": {"instructions": "system"}})
    by_text = client.chat.completions.create(model="bundled", messages=messages, max_tokens=8, temperature=0,
                                             extra_body={"directer": {"instructions": [rules]}})
    assert by_role.model_extra["directer"]["instruction_token_spans"] == by_text.model_extra["directer"]["instruction_token_spans"]
    assert by_role.choices[0].message.content == by_text.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="the prompt has none"):
        client.chat.completions.create(model="bundled", messages=HAIKU, max_tokens=8,
                                       extra_body={"directer": {"instructions": "system"}})


def test_auto_instructions_that_find_nothing_say_so(client):
    r = client.chat.completions.create(model="bundled", messages=HAIKU, max_tokens=6, temperature=0,
                                       extra_body={"directer": {"instructions": "auto"}})
    info = r.model_extra["directer"]
    assert info["notes"] == ["no instruction found; nothing steered"] and info["method"] == "none"
    assert info["instruction_token_spans"] == [] and info["stats"]["trials"] == 0


def test_text_completion(client):
    r = client.completions.create(model="bundled", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert r.choices[0].text.strip() and r.usage.completion_tokens <= 5


def test_streamed_steered_completion(client):
    whole = chat(client, max_tokens=16).choices[0].message.content
    parts, chunks = [], list(chat(client, max_tokens=16, stream=True, stream_options={"include_usage": True}))
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert len(parts) > 3 and "".join(parts) == whole
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason in ("stop", "length")
    usage = chunks[-1]  # the last chunk: no choices, the usage
    assert usage.choices == [] and finish[0].model_extra["directer"]["stats"]["steps"] == usage.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(chat(client, max_tokens=4, stream=True))
    assert all(c.usage is None for c in plain)  # usage only when asked for


def test_concurrent_requests_match_one_at_a_time(client):
    prompts = ["Write a haiku about autumn.", "Name a planet.", "Describe rain in one line.", "Give a fruit name.",
               "Say hello in French."]
    requests = [(p, i % 2 == 0, 6 + (i % 4)) for i, p in enumerate(prompts * 4)]  # 20 requests
    expected = [chat(client, [{"role": "user", "content": p}], steer=s, max_tokens=n).choices[0].message.content
                for p, s, n in requests]
    got: list[str | None] = [None] * len(requests)

    def worker(k):
        p, s, n = requests[k]
        got[k] = chat(client, [{"role": "user", "content": p}], steer=s, max_tokens=n).choices[0].message.content

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert got == expected


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages"),
    ({"model": "m", "messages": HAIKU, "max_tokens": 100000}, "max_tokens"),
    ({"model": "m", "messages": HAIKU, "n": 0}, "n"),
    ({"model": "m", "messages": HAIKU, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "messages": HAIKU, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"model": "m", "messages": HAIKU, "response_format": {"type": "json_object"}}, "response_format"),
    ({"model": "m", "messages": HAIKU, "frequency_penalty": 0.5}, "frequency_penalty"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages"),
    ({"model": "m", "messages": HAIKU, "temperature": -1}, "temperature"),
    ({"model": "m", "messages": HAIKU, "directer": {"alpha": 0, "instructions": ["x"]}}, "directer"),
    ({"model": "m", "messages": HAIKU, "directer": {"alpah": 3}}, "directer"),
    ({"model": "m", "messages": HAIKU, "directer": {"method": "directer"}}, None),  # no instruction to steer
    ({"model": "m", "messages": HAIKU, "directer": {"method": "pasta:profile=/etc/hosts", "instructions": ["x"]}},
     "directer.method"),
    ({"model": "m", "messages": HAIKU, "directer": {"method": "pasta:alpha=2", "instructions": ["x"]}}, "directer"),
    ({"model": "m", "prompt": ""}, "prompt"),
])
def test_malformed_requests_get_4xx_json(server, client, body, param):
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    req = urllib.request.Request(f"http://127.0.0.1:{server}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert 400 <= err.value.code < 500
    error = json.load(err.value)["error"]
    assert error["message"] and error["type"] == "invalid_request_error" and error["param"] == param
    assert chat(client, max_tokens=2).choices[0].message.content  # still serving


def test_invalid_json_and_unknown_route(server):
    for path, data in (("/v1/chat/completions", b"{bad"), ("/v1/nothing", b"{}")):
        req = urllib.request.Request(f"http://127.0.0.1:{server}{path}", data=data)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        assert err.value.code in (400, 404) and "error" in json.load(err.value)


def test_graceful_shutdown_finishes_in_flight_requests():
    port = _free_port()
    proc = _start(port)
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
    stream = chat(c, max_tokens=24, stream=True, stream_options={"include_usage": True})
    first = next(iter(stream))
    proc.send_signal(signal.SIGTERM)  # mid-stream
    rest = list(stream)
    assert first and rest[-2].choices[0].finish_reason in ("stop", "length")
    assert rest[-2].model_extra["directer"]["stats"]["steps"] == rest[-1].usage.completion_tokens
    # uvicorn finishes the request, shuts down, then re-raises the signal: exit status -SIGTERM.
    assert proc.wait(60) in (0, -signal.SIGTERM)


def test_sampling_with_seeds_and_n(client):
    kw = dict(steer=True, max_tokens=16, temperature=0.8, top_p=0.95)
    one = chat(client, seed=7, **kw).choices[0].message.content
    assert chat(client, seed=7, **kw).choices[0].message.content == one  # the same seed, the same text
    assert chat(client, seed=8, **kw).choices[0].message.content != one
    three = chat(client, seed=7, n=3, **kw)
    texts = [c.message.content for c in three.choices]
    assert [c.index for c in three.choices] == [0, 1, 2] and texts[0] == one and len(set(texts)) == 3
    assert [c.message.content for c in chat(client, seed=7, n=3, **kw).choices] == texts
    assert three.usage.completion_tokens == sum(c.model_extra["directer"]["stats"]["steps"] for c in three.choices)
    assert three.choices[1].model_extra["directer"]["sampling"] == {"temperature": 0.8, "top_p": 0.95, "top_k": 0,
                                                                      "min_p": 0.0, "seed": 7}
    streamed = ["", "", ""]
    for chunk in chat(client, seed=7, n=3, stream=True, **kw):
        for c in chunk.choices:
            streamed[c.index] += c.delta.content or ""
    assert streamed == texts


def test_stop_strings_in_plain_and_streamed_responses(client):
    whole = chat(client, steer=False, max_tokens=24).choices[0].message.content
    words = whole.split()
    stop = " ".join(words[3:5])  # several tokens: it spans stream chunks
    cut = whole[:whole.index(stop)]
    r = chat(client, steer=False, max_tokens=24, stop=[stop, "never appears"])
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 24  # decoding stopped there
    parts, finish = [], None
    for chunk in chat(client, steer=False, max_tokens=24, stop=stop, stream=True):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts) == cut and finish == "stop"
    c = client.completions.create(model="bundled", prompt="One, two, three, four,", max_tokens=12, temperature=0,
                                  stop=[","])
    assert "," not in c.choices[0].text and c.choices[0].finish_reason == "stop"


def test_logprobs_are_the_raw_models(client):
    r = chat(client, steer=False, max_tokens=8, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    for entry in content:  # greedy and unsteered: each token is the raw model's top one
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and entry.logprob == pytest.approx(tops[0])
        assert entry.top_logprobs[0].token == entry.token and entry.logprob <= 0
    assert "".join(e.token for e in content) == r.choices[0].message.content
    streamed = [e for chunk in chat(client, steer=False, max_tokens=8, logprobs=True, top_logprobs=3, stream=True)
                if chunk.choices and chunk.choices[0].logprobs for e in chunk.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in content], abs=1e-4)  # float level
    steered = chat(client, max_tokens=8, logprobs=True).choices[0].logprobs.content
    assert len(steered) == 8 and all(e.top_logprobs == [] for e in steered)


def test_content_as_a_list_of_text_parts(client):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Write a haiku about autumn."}]}]
    assert chat(client, parts).choices[0].message.content == chat(client).choices[0].message.content
