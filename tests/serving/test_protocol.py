"""Reading OpenAI request bodies (serving/protocol.py): every field honoured or refused by name, neutral
values of unsupported fields accepted, content parts joined, errors in the API's words."""

from __future__ import annotations

import pytest

from directer.serving.protocol import RequestError, api_words, parse_request

HAIKU = [{"role": "user", "content": "Write a haiku about autumn."}]


def chat(**body):
    return parse_request({"model": "m", "messages": HAIKU, **body}, True, 256, 1024)


def refused(body, chat_=True):
    with pytest.raises(RequestError) as err:
        parse_request({"model": "m", **({"messages": HAIKU} if chat_ else {"prompt": "Hi"}), **body}, chat_, 256, 1024)
    return err.value


def test_sampling_fields_reach_the_config():
    r = chat(temperature=0.7, top_p=0.9, seed=3, top_k=40, min_p=0.05, max_completion_tokens=17, n=3)
    c = r.config
    assert (c.temperature, c.top_p, c.seed, c.top_k, c.min_p, c.max_new_tokens) == (0.7, 0.9, 3, 40, 0.05, 17)
    assert r.n == 3 and r.max_tokens == 17 and c.method == "none"


def test_defaults_and_nulls():
    r = chat(temperature=None, stop=None, seed=None, logprobs=None)
    assert r.max_tokens == 256 and r.n == 1 and r.stop == [] and r.config.temperature == 1.0 and not r.logprobs
    assert chat(top_k=-1).config.top_k == 0  # vLLM's "off"


@pytest.mark.parametrize("field, value", [
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("response_format", {"type": "json_object"}),
    ("frequency_penalty", 0.5), ("presence_penalty", 1.0), ("logit_bias", {"50256": -100}), ("tool_choice", "auto"),
    ("echo", True), ("best_of", 3), ("frobnicate", 1),
])
def test_fields_we_cannot_honour_are_refused_by_name(field, value):
    err = refused({field: value})
    assert err.param == field and f"'{field}'" in str(err) and err.status == 400


@pytest.mark.parametrize("field, value", [
    ("frequency_penalty", 0), ("presence_penalty", 0.0), ("logit_bias", {}), ("tools", []),
    ("response_format", {"type": "text"}), ("parallel_tool_calls", True), ("store", False), ("user", "me"),
])
def test_neutral_values_are_accepted(field, value):
    chat(**{field: value})


@pytest.mark.parametrize("body, param", [
    ({"n": 0}, "n"), ({"n": 100}, "n"), ({"temperature": -1}, "temperature"), ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"seed": 1.5}, "seed"), ({"top_k": -3}, "top_k"),
    ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": 5000}, "max_tokens"),
    ({"max_completion_tokens": 5000}, "max_completion_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": [""]}, "stop"), ({"stop": 3}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"bogus": 1}}, "stream_options"),
    ({"top_logprobs": 3}, "top_logprobs"), ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"), ({"directer": {"alpha": 0, "instructions": ["x"]}}, "directer"),
    ({"directer": {"alpah": 1}}, "directer"), ({"directer": {"instructions": "x", "mode": "reference"},
                                                "temperature": 0.5}, "temperature"),
])
def test_malformed_fields_are_named(body, param):
    assert refused(body).param == param


def test_errors_speak_the_apis_field_names():
    assert "directer.alpha" in str(refused({"directer": {"alpha": 0, "instructions": ["x"]}}))
    assert api_words("lower --max-new-tokens or drop --instruction") == "lower max_tokens or drop directer.instructions"


def test_content_parts():
    parts = [{"type": "text", "text": "Write a haiku"}, {"type": "text", "text": "about autumn."}]
    r = parse_request({"messages": [{"role": "user", "content": parts}]}, True, 256, 1024)
    assert r.prompt == [{"role": "user", "content": "Write a haiku\nabout autumn."}]
    image = [{"type": "image_url", "image_url": {"url": "http://x"}}]
    err = refused({"messages": [{"role": "user", "content": image}]})
    assert err.param == "messages" and "image_url" in str(err)


def test_completions_take_their_own_fields():
    assert parse_request({"prompt": ["Hi there"], "max_tokens": 4}, False, 256, 1024).prompt == "Hi there"
    assert refused({"logprobs": 2}, chat_=False).param == "logprobs"  # the legacy integer form
    assert refused({"messages": HAIKU}, chat_=False).param == "messages"
    assert refused({"prompt": ""}, chat_=False).param == "prompt"


def test_stop_and_stream_options():
    r = chat(stop="\n", stream=True, stream_options={"include_usage": True}, logprobs=True, top_logprobs=2)
    assert r.stop == ["\n"] and r.stream and r.include_usage and r.logprobs and r.top_logprobs == 2
