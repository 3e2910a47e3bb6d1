"""Throughput of `directer serve` under concurrent clients, against the same requests as one offline batch.

    python scripts/serve_benchmark.py                     # bundled model, 8 clients, 32 steered requests
    python scripts/serve_benchmark.py --clients 8 --requests 32 --max-tokens 32 --plain

Starts the server as a subprocess on loopback, sends the requests from N client threads with the
official openai client, then runs the same prompts in-process with Directer.generate_prepared
(batch size = N) and prints both throughputs (generated tokens per second) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import openai

sys.path.insert(0, os.path.dirname(__file__))
from benchmark import PROMPTS  # noqa: E402

from directer import Directer  # noqa: E402


def start_server(port: int, batch: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "directer.cli", "serve", "--port", str(port),
                             "--max-batch-size", str(batch)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
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
    args = ap.parse_args()

    work = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
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

        def client_thread() -> None:
            while True:
                try:
                    k, (task, instruction) = jobs.get_nowait()
                except queue.Empty:
                    return
                extra = None if args.plain else {"directer": {"instructions": [instruction]}}
                # When steering, the server appends the instruction to the task after a blank line.
                r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": task}],
                                                   max_tokens=args.max_tokens, extra_body=extra)
                tokens[k] = r.usage.completion_tokens

        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)  # warm-up
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client_thread) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        served_s = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(120)

    d = Directer.from_pretrained(method="none" if args.plain else "directer", max_new_tokens=args.max_tokens)
    prepared = [d.prepare(task, [] if args.plain else [instruction]) for task, instruction in work]
    d.generate_prepared(prepared[:1])  # warm-up
    t0 = time.perf_counter()
    results = d.generate_prepared(prepared, batch_size=args.clients)
    offline_s = time.perf_counter() - t0
    offline_tokens = sum(len(r.token_ids) for r in results)

    served_tps, offline_tps = sum(tokens) / served_s, offline_tokens / offline_s
    print(f"{'plain' if args.plain else 'DIRECTER'}: {args.requests} requests, {args.clients} concurrent clients, "
          f"max_tokens {args.max_tokens}")
    print(f"server : {sum(tokens)} tokens in {served_s:.1f} s = {served_tps:.1f} tok/s")
    print(f"offline: {offline_tokens} tokens in {offline_s:.1f} s = {offline_tps:.1f} tok/s (batch size {args.clients})")
    print(f"server / offline throughput: {served_tps / offline_tps:.2f}")
    print(json.dumps({"served_tps": served_tps, "offline_tps": offline_tps, "args": vars(args)}))


if __name__ == "__main__":
    main()
