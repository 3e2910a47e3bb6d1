"""A single worker thread that owns the model and runs queued generation jobs in batches.

Requests from any thread are queued; the worker takes the oldest job and every queued job with the
same steering settings (up to ``max_batch_size``) and decodes them as one batch, each with its own
cache row and token limit. Jobs that arrive while a batch runs wait for the next one. Tokens are
reported per step through each job's ``on_tokens`` callback (streaming), the result through its future.
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
from ..errors import DirecterError
from ..results import GenerationResult
from ..engine.spans import PreparedPrompt

__all__ = ["Job", "Scheduler", "ServiceUnavailable"]


@dataclass
class Job:
    prepared: PreparedPrompt
    config: SteeringConfig
    max_new_tokens: int
    on_tokens: Callable[[list[int], bool], None] | None = None
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple:
        """Jobs with equal keys can share a batch (the token limit is per row)."""
        return astuple(replace(self.config, max_new_tokens=1))


class ServiceUnavailable(DirecterError):
    """The scheduler is shutting down or its queue is full."""


class Scheduler:
    def __init__(self, directer: Directer, max_batch_size: int = 8, max_queue: int = 256, batch_wait: float = 0.05):
        self.directer = directer
        self.max_batch_size = max_batch_size
        # An idle worker waits this long for companions of a lone request: clients that send together
        # then share a batch instead of one running alone while the rest queue behind it.
        self.batch_wait = batch_wait
        self.max_queue = max_queue
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._running = 0
        self.completed = 0
        self._thread = threading.Thread(target=self._work, name="directer-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._closing:
                raise ServiceUnavailable("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                raise ServiceUnavailable(f"the request queue is full ({self.max_queue} waiting); retry later")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._running

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, finish every job already accepted, then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _next_batch(self) -> list[Job]:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return []
            deadline = time.monotonic() + self.batch_wait
            while len(self._queue) < self.max_batch_size and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            first = self._queue.popleft()
            batch = [first]
            for job in list(self._queue):
                if len(batch) >= self.max_batch_size:
                    break
                if job.key == first.key:
                    self._queue.remove(job)
                    batch.append(job)
            self._running = len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._running = 0

    def _run(self, batch: list[Job]) -> None:
        def on_tokens(index: int, tokens: list[int], done: bool) -> None:
            callback = batch[index].on_tokens
            if callback is not None:
                callback(list(tokens), done)

        try:
            results: list[GenerationResult] = self.directer.generate_prepared(
                [j.prepared for j in batch], config=batch[0].config, batch_size=len(batch),
                max_new_tokens=[j.max_new_tokens for j in batch], on_tokens=on_tokens,
            )
        except Exception as exc:  # a failed batch fails its jobs, never the worker
            for job in batch:
                job.future.set_exception(exc)
            return
        for job, result in zip(batch, results):
            job.future.set_result(result)
        self.completed += len(batch)
