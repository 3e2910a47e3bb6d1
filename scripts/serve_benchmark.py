"""Throughput of `directer serve` under concurrent clients, against the same requests as one offline batch.

    python scripts/serve_benchmark.py                     # bundled model, 8 clients, 32 steered requests
    python scripts/serve_benchmark.py --clients 8 --requests 32 --max-tokens 32 --plain
    python scripts/serve_benchmark.py --staggered         # arrivals spread out, mixed lengths and settings

Starts the server as a subprocess on loopback, sends the requests from N client threads with the
official openai client, then runs the same requests in-process on the engine (N at a time, each with
its own settings) and prints both throughputs (generated tokens per second), their ratio and the
requests' p50/p95 latency. ``--staggered``: client i starts i * 0.4 s late and waits 0-0.6 s
(seeded) between requests; request k asks for 16, 32 or 64 tokens and is plain, DIRECTER at alpha
100 or DIRECTER at alpha 10 by turns; afterwards a 4-token request is sent 1 s into a 128-token one and
the script reports which finished first.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace

import openai

sys.path.insert(0, os.path.dirname(__file__))
from benchmark import PROMPTS  # noqa: E402

from directer import Directer  # noqa: E402
from directer.engine.requests import DecodeRequest  # noqa: E402


def start_server(port: int, batch: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "directer.cli", "serve", "--port", str(port),
                             "--max-batch-size", str(batch), *extra], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    for _ in range(360):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--plain", action="store_true", help="no steering (method none)")
    ap.add_argument("--staggered", action="store_true", help="staggered arrivals, mixed lengths and settings")
    args = ap.parse_args()

    work = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    # Per request: (max_tokens, steering field or None).
    if args.staggered:
        kinds = [None, {"alpha": 100.0}, {"alpha": 10.0}]
        asks = [((16, 32, 64)[k % 3], kinds[(k // 3) % 3]) for k in range(len(work))]
    else:
        asks = [(args.max_tokens, None if args.plain else {}) for _ in work]
    rng = random.Random(0)
    gaps = [rng.uniform(0.0, 0.6) for _ in work]
    latency = [0.0] * len(work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = start_server(port, args.clients)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        jobs: queue.Queue = queue.Queue()
        for k, item in enumerate(work):
            jobs.put((k, item))
        tokens = [0] * len(work)

        def client_thread(i: int) -> None:
            if args.staggered:
                time.sleep(0.4 * i)
            while True:
                try:
                    k, (task, instruction) = jobs.get_nowait()
                except queue.Empty:
                    return
                if args.staggered:
                    time.sleep(gaps[k])
                n, steer = asks[k]
                extra = None if steer is None else {"directer": {"instructions": [instruction], **steer}}
                # When steering, the server appends the instruction to the task after a blank line.
                t = time.perf_counter()
                r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": task}],
                                                   max_tokens=n, temperature=0, extra_body=extra)
                latency[k] = time.perf_counter() - t
                tokens[k] = r.usage.completion_tokens

        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0)  # warm-up
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        served_s = time.perf_counter() - t0
        order = short_during_long(client, work[0]) if args.staggered else None
    finally:
        server.terminate()
        server.wait(120)

    d = Directer.from_pretrained()
    configs = [replace(d.config, method="none" if steer is None else "directer", max_new_tokens=n, **(steer or {}))
               for n, steer in asks]
    prepared = [d.prepare(task, [] if steer is None else [instruction], config=c)
                for (task, instruction), (_, steer), c in zip(work, asks, configs)]
    requests = [DecodeRequest(p.input_ids, p.positions)
                for p in prepared]
    d.generate_prepared(prepared[:1], config=configs[0])  # warm-up
    t0 = time.perf_counter()
    outputs = d.runner.engine(args.clients).run(requests, [d.runner.settings(c) for c in configs])
    offline_s = time.perf_counter() - t0
    offline_tokens = sum(len(o.token_ids) for o in outputs)

    served_tps, offline_tps = sum(tokens) / served_s, offline_tokens / offline_s
    what = "staggered, mixed lengths and settings" if args.staggered else ("plain" if args.plain else "DIRECTER")
    print(f"{what}: {args.requests} requests, {args.clients} concurrent clients, "
          f"max_tokens {args.max_tokens if not args.staggered else '16/32/64'}")
    lat = sorted(latency)
    print(f"latency: p50 {statistics.median(lat):.2f} s, p95 {lat[min(len(lat) - 1, int(0.95 * len(lat)))]:.2f} s")
    if order is not None:
        print(f"a 4-token request sent 1 s into a 128-token one: {order}")
    print(f"server : {sum(tokens)} tokens in {served_s:.1f} s = {served_tps:.1f} tok/s")
    print(f"offline: {offline_tokens} tokens in {offline_s:.1f} s = {offline_tps:.1f} tok/s (batch size {args.clients})")
    print(f"server / offline throughput: {served_tps / offline_tps:.2f}")
    print(json.dumps({"served_tps": served_tps, "offline_tps": offline_tps, "latency": latency, "args": vars(args)}))


def short_during_long(client, item) -> str:
    """Send a 128-token request, then a 4-token one 1 s later; say which finished first."""
    task, instruction = item
    done: list[tuple[str, float]] = []

    def ask(name: str, n: int, delay: float) -> None:
        time.sleep(delay)
        t = time.perf_counter()
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": task}], max_tokens=n, temperature=0,
                                       extra_body={"directer": {"instructions": [instruction]}})
        done.append((name, time.perf_counter() - t))

    threads = [threading.Thread(target=ask, args=("long", 128, 0.0)), threading.Thread(target=ask, args=("short", 4, 1.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ", then ".join(f"{name} ({seconds:.1f} s)" for name, seconds in done)


if __name__ == "__main__":
    main()
