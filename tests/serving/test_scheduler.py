"""The serving scheduler (serving/scheduler.py) on a tiny model: requests join a running engine at the
next forward, a cancelled request frees its slot without changing the others, mixed settings share
forwards, and the counts /health reports."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from directer import Directer
from directer.serving.scheduler import Job, Scheduler

from bundled_tokenizer import load_bundled_tokenizer, tiny_chat_model

HAIKU, NO_COMMAS = "Write a haiku about autumn.", "Do not use any commas."


@pytest.fixture(scope="module")
def d():
    tokenizer = load_bundled_tokenizer(padding_side="left")
    d = Directer(tiny_chat_model(tokenizer), tokenizer, max_new_tokens=24, model_name="tiny-llama")
    d.config = replace(d.config, ignore_eos=True)  # every request decodes to its limit
    return d


def _job(d, n, on_tokens=None, **settings):
    config = replace(d.config, max_new_tokens=n, **settings)
    return Job(d.prepare(HAIKU, [NO_COMMAS] if config.method != "none" else [], config=config), config, n, on_tokens)


def test_a_request_joins_a_running_one_and_both_get_their_own_tokens(d):
    long_alone = d.generate_prepared([_job(d, 24).prepared], config=replace(d.config, max_new_tokens=24))[0]
    short_alone = d.generate_prepared([_job(d, 3, alpha=5.0).prepared], config=replace(d.config, max_new_tokens=3, alpha=5.0))[0]
    s = Scheduler(d, max_batch_size=4)
    s.start()
    started = threading.Event()
    long = _job(d, 24, on_tokens=lambda tokens, *_: started.set() if len(tokens) >= 4 else None)
    s.submit(long)
    assert started.wait(60)
    short = _job(d, 3, alpha=5.0)  # other settings, sent while the long one decodes
    s.submit(short)
    assert short.future.result(60).token_ids == short_alone.token_ids
    assert not long.future.done()  # the short one finished first
    assert long.future.result(60).token_ids == long_alone.token_ids
    s.close(30)


def test_a_cancelled_request_frees_its_slot_and_leaves_the_others_unchanged(d):
    expected = d.generate_prepared([_job(d, 20).prepared], config=replace(d.config, max_new_tokens=20))[0]
    s = Scheduler(d, max_batch_size=2)
    s.start()
    going = threading.Event()
    doomed = _job(d, 24, on_tokens=lambda tokens, *_: going.set() if len(tokens) >= 2 else None)
    other = _job(d, 20)
    s.submit(doomed)
    s.submit(other)
    assert going.wait(60)
    doomed.cancel()
    assert other.future.result(60).token_ids == expected.token_ids
    assert doomed.future.cancelled()
    assert s.running == 0 and s.waiting == 0 and sorted(s._engine.free) == [0, 1]
    s.close(30)


def test_running_and_waiting_counts(d):
    s = Scheduler(d, max_batch_size=1)
    s.start()
    first_going = threading.Event()
    jobs = [_job(d, 12, on_tokens=lambda t, *_: first_going.set())] + [_job(d, 12) for _ in range(2)]
    for j in jobs:
        s.submit(j)
    assert first_going.wait(60)
    assert s.running == 1 and s.waiting == 2
    for j in jobs:
        j.future.result(60)
    assert s.running == 0 and s.waiting == 0 and s.completed == 3
    s.close(30)


def test_sampled_jobs_with_stops_and_samples(d):
    """Per job: its sample index (stream), its stop condition and its deadline, in the engine and in the
    continuous engine, for a key-scaling and an attention-bias method."""
    sampled = replace(d.config, temperature=0.9, seed=4)
    s = Scheduler(d, max_batch_size=4)
    s.start()
    for method in ("directer", "pasta"):
        config = replace(sampled, method=method, max_new_tokens=16)
        prepared = d.prepare(HAIKU, [NO_COMMAS], config=config)
        jobs = [Job(prepared, config, 16, sample_index=k) for k in (0, 1, 0)]
        for j in jobs:
            s.submit(j)
        tokens = [j.future.result(60).token_ids for j in jobs]
        assert tokens[0] == tokens[2] != tokens[1]
        stop_at = tokens[0][5]
        stopped = Job(prepared, config, 16, stop=lambda ids, t=stop_at: ids[-1] == t)
        s.submit(stopped)
        result = stopped.future.result(60)
        assert result.finish_reason == "stop" and result.token_ids == tokens[0][:tokens[0].index(stop_at) + 1]
        late = Job(prepared, replace(config, max_new_tokens=16), 16, timeout=0.0)
        s.submit(late)
        with pytest.raises(TimeoutError):
            late.future.result(60)
    s.close(30)


@pytest.mark.slow
def test_a_short_plain_request_overtakes_a_long_baseline_request():
    """Baselines decode on the continuous engine too: a short plain request sent 1.5 s after a long
    (200-token, greedy) PASTA request joins it at the next forward and finishes first."""
    import time

    bundled = Directer.from_pretrained()
    s = Scheduler(bundled, max_batch_size=4)
    s.start()
    long_config = replace(bundled.config, method="pasta", max_new_tokens=200, ignore_eos=True)
    long_job = Job(bundled.prepare(HAIKU, [NO_COMMAS], config=long_config), long_config, 200)
    short_config = replace(bundled.config, method="none", max_new_tokens=8)
    short_job = Job(bundled.prepare("Say hello.", [], config=short_config), short_config, 8)
    finished: list[str] = []
    long_job.future.add_done_callback(lambda _: finished.append("pasta"))
    short_job.future.add_done_callback(lambda _: finished.append("plain"))
    s.submit(long_job)
    time.sleep(1.5)
    s.submit(short_job)
    short = short_job.future.result(120)
    long = long_job.future.result(300)
    s.close(30)
    assert finished == ["plain", "pasta"]
    assert len(long.token_ids) == 200 and short.parameters == {} and long.parameters["alpha_p"] == 0.01


def test_a_float16_server_keeps_the_guard_whatever_the_first_request():
    """The guard runs where a request's settings are made, not where the engine is built: a plain first
    request does not disable the upcast for a later alpha = 100 request."""
    import torch

    tokenizer = load_bundled_tokenizer(padding_side="left")
    model = tiny_chat_model(tokenizer).to(torch.float16)
    half = Directer(model, tokenizer, method="none", max_new_tokens=4, model_name="tiny-llama")
    s = Scheduler(half, max_batch_size=2)
    s.start()
    plain = replace(half.config, method="none")
    s.submit(Job(half.prepare(HAIKU, [], config=plain), plain, 4)).result(60)
    assert model.dtype == torch.float16  # nothing steered yet: left as it is
    steered = replace(half.config, method="directer", alpha=100.0)
    with pytest.warns(UserWarning, match="float16 with alpha=100"):
        s.submit(Job(half.prepare(HAIKU, [NO_COMMAS], config=steered), steered, 4)).result(60)
    assert model.dtype == torch.float32
    s.close(30)


def test_a_request_that_recasts_a_float16_model_waits_for_the_running_ones():
    """The recast changes the dtype the running sequences' cache holds: the steered request starts once
    the engine has drained, and the plain request that was running ends in float16 as it would alone."""
    import torch

    tokenizer = load_bundled_tokenizer(padding_side="left")
    model = tiny_chat_model(tokenizer).to(torch.float16)
    half = Directer(model, tokenizer, method="none", max_new_tokens=16, model_name="tiny-llama")
    half.config = replace(half.config, ignore_eos=True)
    plain = replace(half.config, method="none")
    alone = half.generate_prepared([half.prepare(HAIKU, [], config=plain)], config=plain)[0]
    assert model.dtype == torch.float16
    s = Scheduler(half, max_batch_size=4)
    s.start()
    started = threading.Event()
    first = Job(half.prepare(HAIKU, [], config=plain), plain, 16,
                on_tokens=lambda tokens, *_: started.set() if len(tokens) >= 2 else None)
    running = s.submit(first)
    assert started.wait(60)
    steered = replace(half.config, method="directer", alpha=100.0, max_new_tokens=4)
    with pytest.warns(UserWarning, match="float16 with alpha=100"):
        late = s.submit(Job(half.prepare(HAIKU, [NO_COMMAS], config=steered), steered, 4))
        assert running.result(60).token_ids == alone.token_ids
        assert len(late.result(60).token_ids) == 4
    assert model.dtype == torch.float32
    s.close(30)
