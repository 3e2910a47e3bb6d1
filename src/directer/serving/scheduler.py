"""A single worker thread that owns the model and feeds requests to the continuous engine.

Requests from any thread are queued; before every forward the worker hands the queued ones to the
engine, which admits them into free slots at its next forward: a request arriving while others decode
joins them at once, whatever its settings (alpha, beta, instructions, method, baselines included,
token limit). A cancelled request (its client went away) leaves the engine before the next forward
and frees its slot. Reference-mode requests reproduce the released code, which decodes one prompt at
a time: they run alone, between two engine forwards (their decoding stops at the next token when
cancelled). Tokens are reported through each job's ``on_tokens`` callback (streaming), the result
through its future. A job past its deadline is stopped the same way and its future fails with
:class:`TimeoutError`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from ..api import Directer
from ..config import SteeringConfig
from ..engine.continuous import Engine, output
from ..engine.requests import DecodeOutput, DecodeRequest
from ..engine.sequence import Sequence
from ..text.spans import PreparedPrompt
from ..errors import DirecterError, UsageError
from ..runner import slots_per_request

__all__ = ["Job", "Scheduler", "ServiceUnavailable"]


@dataclass
class Job:
    prepared: PreparedPrompt
    config: SteeringConfig  # a sampled one carries its seed
    max_new_tokens: int
    # on_tokens(token_ids, done, raw_logprobs, top_logprobs): after every token (streaming)
    on_tokens: Callable[[list[int], bool, list[float], list], None] | None = None
    sample_index: int = 0  # which of the request's n samples (its random stream)
    stop: Callable[[list[int]], bool] | None = None  # the request's stop strings
    top_logprobs: int = 0
    timeout: float | None = None  # seconds from submission
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    timed_out: bool = False

    def cancel(self) -> None:
        """The client is gone: stop decoding this job at the next forward."""
        self.cancelled = True

    def expire(self, now: float) -> bool:
        """Stop the job (as cancelled, marked timed out) once its deadline has passed."""
        if self.timeout is not None and not self.cancelled and now - self.queued_at > self.timeout:
            self.timed_out = self.cancelled = True
        return self.cancelled

    def ends(self, tokens: list[int]) -> bool:
        """The stop condition of its rows: a stop string, or the job cancelled or out of time."""
        return self.expire(time.monotonic()) or (self.stop is not None and self.stop(tokens))

    def end_future(self) -> None:
        """A stopped job's future: TimeoutError when its deadline passed, else cancelled."""
        if self.future.done():
            return
        if self.timed_out:
            self.future.set_exception(TimeoutError(f"the request took longer than {self.timeout:g} s"))
        else:
            self.future.cancel()


class ServiceUnavailable(DirecterError):
    """The scheduler is shutting down or its queue is full."""


class Scheduler:
    def __init__(self, directer: Directer, max_batch_size: int = 8, max_queue: int = 256):
        self.directer = directer
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._engine: Engine | None = None
        self._jobs: dict[int, tuple[Job, Sequence]] = {}  # id(sequence) -> job
        self.completed = 0
        self._thread = threading.Thread(target=self._work, name="directer-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._closing:
                raise ServiceUnavailable("the server is shutting down")
            if len(self._queue) + len(self._jobs) >= self.max_queue:
                raise ServiceUnavailable(f"the server is busy: {self.max_queue} requests are queued or decoding "
                                         "(its --max-queue); retry later")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    @property
    def running(self) -> int:
        """Requests decoding now (in an engine slot)."""
        with self._cond:
            return sum(1 for _, seq in self._jobs.values() if seq.state not in ("waiting", "done"))

    @property
    def waiting(self) -> int:
        """Requests accepted but not decoding yet."""
        with self._cond:
            return len(self._queue) + sum(1 for _, seq in self._jobs.values() if seq.state == "waiting")

    @property
    def pending(self) -> int:
        return self.running + self.waiting

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, finish every job already accepted, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[Job] | None:
        """Queued jobs to start (None: shut down); waits while there is nothing to do."""
        with self._cond:
            while not self._queue and not self._jobs and not self._closing:
                self._cond.wait()
            if not self._queue and not self._jobs:
                return None
            jobs = list(self._queue)
            self._queue.clear()
            return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            deferred = []
            for job in jobs:
                started = None if deferred else self._start(job)  # first come, first started
                if started is None:
                    deferred.append(job)
                elif not started:  # reference mode: alone, one at a time
                    self._run_reference(job)
            if deferred:
                with self._cond:
                    self._queue.extendleft(reversed(deferred))
            now = time.monotonic()
            for job, seq in list(self._jobs.values()):
                if job.expire(now):
                    self._engine.cancel(seq)
            if self._engine is not None and self._engine.busy:
                try:
                    self._engine.step()  # drops the cancelled sequences first
                except Exception as exc:  # a failed forward fails its jobs, never the worker
                    self._fail_all(exc)
            self._sweep_cancelled()

    def _start(self, job: Job) -> bool | None:
        """Hand a job to the engine; False for a reference-mode job (decoded alone); None for a job that
        must wait for the engine to drain (it recasts a float16 model, whose cache the running
        sequences hold in float16)."""
        if job.expire(time.monotonic()):
            job.end_future()
            return True
        runner = self.directer.runner
        try:
            if self._engine is not None and runner.upcasts(job.config.policy()):
                if self._engine.busy:
                    return None
                self._engine = None  # rebuilt below on the recast model
        except Exception as exc:
            job.future.set_exception(exc)
            return True
        if job.config.mode == "reference":
            return False
        try:
            # validated (and float16 guarded) per job; a prompt with nothing to steer decodes plainly
            settings = runner.settings(runner.for_positions(job.prepared.positions, job.config), job.top_logprobs)
            if slots_per_request(settings.method) > self.max_batch_size:
                raise UsageError(f"{job.config.method} with the plausibility filter decodes a raw and a steered "
                                 f"stream, two cache rows: serve with --max-batch-size 2 or more")
            if self._engine is None:
                self._engine = runner.engine(self.max_batch_size, admit_min=1)
            p = job.prepared
            request = DecodeRequest(p.input_ids, p.positions, None, job.max_new_tokens, job.sample_index, job.stop)
            seq = self._engine.submit(request, settings, self._on_token)
        except Exception as exc:
            job.future.set_exception(exc)
            return True
        with self._cond:
            self._jobs[id(seq)] = (job, seq)
        return True

    def _on_token(self, seq: Sequence) -> None:
        job, _ = self._jobs[id(seq)]
        if job.on_tokens is not None and not job.cancelled:
            job.on_tokens(list(seq.tokens), seq.done, list(seq.logprobs), list(seq.top_logprobs))
        if seq.done:
            with self._cond:
                del self._jobs[id(seq)]
            self.completed += 1
            job.future.set_result(self.directer.runner.result(job.prepared, output(seq), job.config))

    def _sweep_cancelled(self) -> None:
        with self._cond:
            for key, (job, seq) in list(self._jobs.items()):
                if seq.done and seq.finish_reason == "cancelled":
                    del self._jobs[key]
                    job.end_future()

    def _fail_all(self, exc: Exception) -> None:
        with self._cond:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job, _ in jobs:
            if not job.future.done():
                job.future.set_exception(exc)
        self._engine = None  # a fresh engine (and cache) for the next requests

    def _run_reference(self, job: Job) -> None:
        """Decode a reference-mode job alone (the released code's sequential decoding)."""
        if job.expire(time.monotonic()):
            job.end_future()
            return
        p = job.prepared

        def on_event(_: int, out: DecodeOutput, done: bool) -> None:
            if job.on_tokens is not None and not job.cancelled:
                job.on_tokens(list(out.token_ids), done, list(out.raw_logprobs or []), list(out.top_logprobs or []))

        try:
            request = DecodeRequest(p.input_ids, p.positions, None, job.max_new_tokens, job.sample_index, job.ends)
            out = self.directer.runner.decode([request], job.config, batch_size=1, top_logprobs=job.top_logprobs,
                                              on_event=on_event)[0]
        except Exception as exc:
            job.future.set_exception(exc)
            return
        if job.cancelled:  # stopped at a token by its stop condition: cancelled or out of time
            job.end_future()
        else:
            job.future.set_result(self.directer.runner.result(p, out, job.config))
            self.completed += 1
