"""A single worker thread that owns the model and feeds requests to the continuous engine.

Requests from any thread are queued; before every forward the worker hands the queued ones to the
engine, which admits them into free slots at its next forward: a request arriving while others decode
joins them at once, whatever its settings (alpha, beta, instructions, method, token limit). A
cancelled request (its client went away) leaves the engine before the next forward and frees its
slot. Requests the engine does not run (attention-bias methods, reference mode) are decoded in their
own batch between two engine forwards. Tokens are reported through each job's ``on_tokens``
callback (streaming), the result through its future.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import astuple, dataclass, field, replace
from typing import Callable

from ..api import Directer
from ..config import SteeringConfig
from ..engine.continuous import Engine, fits, output, supports
from ..engine.decoding import DecodeRequest
from ..engine.sequence import Sequence
from ..engine.spans import PreparedPrompt
from ..errors import DirecterError

__all__ = ["Job", "Scheduler", "ServiceUnavailable"]


@dataclass
class Job:
    prepared: PreparedPrompt
    config: SteeringConfig
    max_new_tokens: int
    on_tokens: Callable[[list[int], bool], None] | None = None
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False

    def cancel(self) -> None:
        """The client is gone: stop decoding this job at the next forward."""
        self.cancelled = True


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
                raise ServiceUnavailable(f"the request queue is full ({self.max_queue} waiting); retry later")
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
            others = [j for j in jobs if not self._start(j)]
            for group in _groups(others):  # methods the engine does not run: a batch of their own
                self._run_batch(group)
            for job, seq in list(self._jobs.values()):
                if job.cancelled:
                    self._engine.cancel(seq)
            if self._engine is not None and self._engine.busy:
                try:
                    self._engine.step()  # drops the cancelled sequences first
                except Exception as exc:  # a failed forward fails its jobs, never the worker
                    self._fail_all(exc)
            self._sweep_cancelled()

    def _start(self, job: Job) -> bool:
        """Hand a job to the engine; False when the engine does not run its method."""
        if job.cancelled:
            job.future.cancel()
            return True
        config = job.config
        try:
            if not (supports(config.policy(), config.mode) and fits(self.directer.model)):
                return False
            if self._engine is None:
                self._engine = self.directer.engine(config, slots=self.max_batch_size, admit_min=1)
            p = job.prepared
            request = DecodeRequest(p.input_ids, p.positions, None, job.max_new_tokens)
            seq = self._engine.submit(request, self.directer.settings(config), self._on_token)
        except Exception as exc:
            job.future.set_exception(exc)
            return True
        with self._cond:
            self._jobs[id(seq)] = (job, seq)
        return True

    def _on_token(self, seq: Sequence) -> None:
        job, _ = self._jobs[id(seq)]
        if job.on_tokens is not None:
            job.on_tokens(list(seq.tokens), seq.done)
        if seq.done:
            with self._cond:
                del self._jobs[id(seq)]
            self.completed += 1
            job.future.set_result(self.directer._result(job.prepared, output(seq), job.config))

    def _sweep_cancelled(self) -> None:
        with self._cond:
            for key, (job, seq) in list(self._jobs.items()):
                if seq.done and seq.finish_reason == "cancelled":
                    del self._jobs[key]
                    job.future.cancel()

    def _fail_all(self, exc: Exception) -> None:
        with self._cond:
            jobs, self._jobs = list(self._jobs.values()), {}
        for job, _ in jobs:
            if not job.future.done():
                job.future.set_exception(exc)
        self._engine = None  # a fresh engine (and cache) for the next requests

    def _run_batch(self, batch: list[Job]) -> None:
        batch = [j for j in batch if not j.cancelled]

        def on_tokens(index: int, tokens: list[int], done: bool) -> None:
            callback = batch[index].on_tokens
            if callback is not None:
                callback(list(tokens), done)

        if not batch:
            return
        try:
            results = self.directer.generate_prepared(
                [j.prepared for j in batch], config=batch[0].config, batch_size=len(batch),
                max_new_tokens=[j.max_new_tokens for j in batch], on_tokens=on_tokens,
            )
        except Exception as exc:
            for job in batch:
                job.future.set_exception(exc)
            return
        for job, result in zip(batch, results):
            job.future.set_result(result)
        self.completed += len(batch)


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs with equal settings (the token limit is per row) share a batch."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        key = astuple(replace(job.config, max_new_tokens=1))
        groups.setdefault(key, []).append(job)
    return list(groups.values())
