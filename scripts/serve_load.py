"""A bounded load test of `directer serve` on loopback: N concurrent clients for a fixed time.

    python scripts/serve_load.py                          # bundled model, 50 clients, 120 s
    python scripts/serve_load.py --clients 50 --seconds 120 --max-tokens 24

Starts the server as a subprocess, computes the expected result of every distinct greedy request
alone (one at a time, before the load), then lets N client threads send requests drawn (seeded) from
a mix: plain or steered, greedy or sampled (seeded), streamed or not, and one in eight malformed (an
unsupported field, a bad value, a non-text content part, bad JSON, a missing key). It checks that every
greedy request gets exactly its alone result, every sampled one a valid result (text, token count
within max_tokens, a known finish reason, seeded ones the same text whenever repeated), every
malformed one a 4xx, and that nothing hangs (a client timeout counts as a failure), and compares the
server's resident memory after a warm-up with its memory after the load. Prints one JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import os
import socket
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

sys.path.insert(0, os.path.dirname(__file__))
from serve_benchmark import start_server  # noqa: E402

TASKS = ["Write a haiku about autumn.", "Name three rivers.", "Describe rain in one line.", "Give a fruit name.",
         "Say hello in French.", "List two colours."]
INSTRUCTIONS = ["Do not use any commas.", "Answer in lowercase letters only.", "Use at most ten words."]
KEY = "load-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def request_mix(rng: random.Random, max_tokens: int) -> dict:
    """One request: its body fields and how to send it."""
    if rng.random() < 1 / 8:
        return {"malformed": rng.choice(["field", "value", "part", "json", "key"])}
    task, steer = rng.choice(TASKS), rng.random() < 0.5
    sampled = rng.random() < 0.5
    return {"task": task, "steer": rng.choice(INSTRUCTIONS) if steer else None, "sampled": sampled,
            "seed": rng.choice([1, 2, 3]) if sampled else None, "stream": rng.random() < 0.5,
            "max_tokens": rng.choice([max_tokens // 2, max_tokens])}


def key(r: dict) -> tuple:
    return (r["task"], r["steer"], r["max_tokens"], r["seed"] if r["sampled"] else None)


def send(client: openai.OpenAI, r: dict) -> tuple[str, str, int]:
    """(text, finish reason, completion tokens) of a well-formed request."""
    kw = dict(model="m", messages=[{"role": "user", "content": r["task"]}], max_tokens=r["max_tokens"],
              temperature=0.8 if r["sampled"] else 0, top_p=0.95, seed=r["seed"],
              extra_body={"directer": {"instructions": [r["steer"]]}} if r["steer"] else None)
    if not r["stream"]:
        out = client.chat.completions.create(**kw)
        return out.choices[0].message.content, out.choices[0].finish_reason, out.usage.completion_tokens
    text, finish, tokens = "", None, 0
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return text, finish, tokens


def malformed(port: int, kind: str) -> int:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    if kind == "field":
        body["tools"] = [{"type": "function", "function": {"name": "f"}}]
    elif kind == "value":
        body["temperature"] = -2
    elif kind == "part":
        body["messages"][0]["content"] = [{"type": "image_url", "image_url": {"url": "x"}}]
    elif kind == "key":
        headers["Authorization"] = "Bearer wrong"
    data = b"{not json" if kind == "json" else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--batch", type=int, default=16, help="the server's --max-batch-size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    port = free_port()
    proc = start_server(port, args.batch, "--api-key", KEY, "--quiet")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=300)
    rng = random.Random(args.seed)
    plans = [[request_mix(random.Random(rng.random()), args.max_tokens) for _ in range(400)] for _ in range(args.clients)]
    # Every distinct greedy request alone first (this also warms the server up).
    alone: dict[tuple, str] = {}
    for r in (r for plan in plans for r in plan if "task" in r and not r["sampled"]):
        if key(r) not in alone:
            alone[key(r)] = send(client, {**r, "stream": False})[0]
    time.sleep(2)
    rss_start = rss_mib(proc.pid)

    stats = {"greedy": 0, "sampled": 0, "malformed": 0, "failures": [], "latency": [], "tokens": 0}
    seeded: dict[tuple, str] = {}
    lock = threading.Lock()
    deadline = time.time() + args.seconds

    def worker(i: int) -> None:
        for r in plans[i]:
            if time.time() > deadline:
                return
            t0 = time.time()
            try:
                if "malformed" in r:
                    status = malformed(port, r["malformed"])
                    ok, what = 400 <= status < 500, f"malformed {r['malformed']}: HTTP {status}"
                    kind = "malformed"
                else:
                    text, finish, tokens = send(client, r)
                    kind = "sampled" if r["sampled"] else "greedy"
                    if r["sampled"]:
                        with lock:
                            first = seeded.setdefault(key(r), text)
                        ok = bool(text) and finish in ("stop", "length") and 0 < tokens <= r["max_tokens"] \
                            and text == first
                    else:
                        ok = text == alone[key(r)] and finish in ("stop", "length")
                    what = f"{kind} {key(r)} stream={r['stream']}: got {text!r}"
                    with lock:
                        stats["tokens"] += tokens
            except Exception as exc:  # a timeout or a broken response: a failure, reported
                ok, kind, what = False, "error", f"{type(exc).__name__}: {exc}"
            with lock:
                stats["latency"].append(time.time() - t0)
                if kind in stats:
                    stats[kind] += 1
                if not ok:
                    stats["failures"].append(what)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 360)
    hung = sum(t.is_alive() for t in threads)
    wall = time.time() - t0
    time.sleep(5)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
        health = json.load(resp)
    rss_end = rss_mib(proc.pid)
    proc.terminate()
    proc.wait(60)
    lat = sorted(stats["latency"])
    print(json.dumps({
        "clients": args.clients, "seconds": round(wall, 1), "greedy": stats["greedy"], "sampled": stats["sampled"],
        "malformed": stats["malformed"], "failures": len(stats["failures"]), "failure_examples": stats["failures"][:5],
        "hung_clients": hung, "tokens_per_second": round(stats["tokens"] / wall, 1),
        "p50_s": round(statistics.median(lat), 2) if lat else None,
        "p95_s": round(lat[int(0.95 * (len(lat) - 1))], 2) if lat else None,
        "pending_after": health["pending"], "rss_mib_start": round(rss_start, 1), "rss_mib_end": round(rss_end, 1),
    }, indent=2))
    if stats["failures"] or hung or health["pending"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
