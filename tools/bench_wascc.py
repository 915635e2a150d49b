"""Throughput and latency of the waSCC actor behind the project's host.

    .venv/bin/python tools/bench_wascc.py [--actor build/wascc/classify_actor.wasm]
        [--image models/images/chelsea.png] [--requests 40] [--clients 1,4] [--instances N]

Builds the actor and the WASI command if needed, starts the host (wasmml.wascc_host) on a free loopback port, checks that
the photo's answer is the one the WASI command gives, warms every instance
up, then for each client count sends --requests PUTs of the photo from
that many concurrent clients (one HTTP connection per request, as curl
does) and prints requests per second and the median and p99 latency. All
rows come from one run, on the same host process.
"""
import argparse
import concurrent.futures
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--actor", default=str(REPO / "build/wascc/classify_actor.wasm"))
    p.add_argument("--image", default=str(REPO / "models/images/chelsea.png"))
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--clients", default="1,4")
    p.add_argument("--instances", type=int, default=os.cpu_count())
    return p.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_host(actor, port, instances):
    env = dict(os.environ, PYTHONPATH=str(REPO / "site_scons"))
    proc = subprocess.Popen([sys.executable, "-m", "wasmml.wascc_host", actor, "--port", str(port),
                             "--instances", str(instances), "--quiet",
                             "--keys-dir", str(REPO / "keys")],
                            env=env, stdout=subprocess.PIPE, text=True)
    banner = proc.stdout.readline()
    if not banner.startswith("serving"):
        proc.wait()
        sys.exit(f"error: the host did not start (exit {proc.returncode})")
    return proc


def put(port, body):
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("PUT", "/", body=body)
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    return response.status, answer, time.perf_counter() - start


def wasi_answer(image):
    out = subprocess.run([sys.executable, str(REPO / "tools/wasmrun.py"), "--dir", "/",
                          str(REPO / "build/wasi/classify.wasm"), os.path.abspath(image)],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def measure(port, body, clients, requests, expected):
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        results = list(pool.map(lambda _: put(port, body), range(requests)))
        wall = time.perf_counter() - start
    wrong = [r for r in results if (r[0], r[1]) != (200, expected)]
    if wrong:
        sys.exit(f"error: {len(wrong)} wrong answers, e.g. {wrong[0][:2]}")
    latencies = sorted(r[2] * 1000 for r in results)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return requests / wall, statistics.median(latencies), p99


def main():
    args = parse_args()
    body = Path(args.image).read_bytes()
    # Up to date, and signed with the keys the host trusts (keys/).
    subprocess.run([sys.executable, "-m", "SCons", "-Q", "wascc", "wasi"], cwd=REPO, check=True)
    port = free_port()
    host = start_host(args.actor, port, args.instances)
    try:
        status, expected, _ = put(port, body)
        if status != 200:
            sys.exit(f"error: the actor answered {status}: {expected!r}")
        wasi = wasi_answer(args.image)
        print(f"actor answers {expected.decode()}; classify.wasm says {wasi!r}")
        if wasi is not None and expected.decode() != f'"{wasi}"':
            sys.exit("error: the actor and the WASI command disagree")
        # warm every instance (first use builds the classifier's session)
        measure(port, body, args.instances, args.instances * 2, expected)
        print(f"\n{args.requests} PUTs of {Path(args.image).name} ({len(body)} bytes) per row, "
              f"{args.instances} actor instances, {os.cpu_count()} cores\n")
        print("| clients | requests/s | median latency (ms) | p99 latency (ms) |")
        print("| --- | --- | --- | --- |")
        for clients in map(int, args.clients.split(",")):
            rps, median, p99 = measure(port, body, clients, args.requests, expected)
            print(f"| {clients} | {rps:.2f} | {median:.0f} | {p99:.0f} |", flush=True)
    finally:
        host.send_signal(signal.SIGINT)
        host.wait(timeout=30)


if __name__ == "__main__":
    main()
