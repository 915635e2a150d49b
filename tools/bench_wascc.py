"""Throughput and latency of the waSCC actor behind the project's host,
side by side with the host of an earlier revision, in one run.

    .venv/bin/python tools/bench_wascc.py [--actor build/wascc/classify_actor.wasm]
        [--image models/images/chelsea.png] [--requests 60] [--clients 1,4,32]
        [--instances N] [--baseline REV]

Builds the actor and the WASI command if needed, then starts two hosts on
free loopback ports: this tree's (wascc.host) and the one at git
revision --baseline (extracted with `git archive`), serving the same
actor with the same options. It checks that both answer the photo as the
WASI command does and warms every instance up. Then, for each client count
with keep-alive (one connection per client, reused) and without (a new
connection per request, as curl does), it sends --requests PUTs of the photo
to each host in turn and prints requests per second and the median and p99
latency of both, and their ratio. Client i connects from 127.0.0.(10+i), so
a per-client connection limit does not turn them away. Each host's RSS is
printed before and after.
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
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "site_scons"))
from wasmml import toolchain  # noqa: E402

# the host before issue 24's HTTP work (http.server, two writes a response)
DEFAULT_BASELINE = "02feaef"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--actor", default=str(REPO / "build/wascc/classify_actor.wasm"))
    p.add_argument("--image", default=str(REPO / "models/images/chelsea.png"))
    p.add_argument("--requests", type=int, default=60, help="PUTs per row and host")
    p.add_argument("--clients", default="1,4,32")
    p.add_argument("--instances", type=int, default=os.cpu_count())
    p.add_argument("--baseline", default=DEFAULT_BASELINE, metavar="REV",
                   help=f"git revision of the host to compare with (default: {DEFAULT_BASELINE})")
    return p.parse_args()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Host:
    """A host process serving `actor`, with its package from `site_dir`."""

    def __init__(self, name, site_dir, actor, instances):
        self.name, self.port = name, free_port()
        env = dict(os.environ, PYTHONPATH=str(site_dir))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", host_module(site_dir), actor, "--port", str(self.port),
             "--instances", str(instances), "--quiet", "--keys-dir", str(REPO / "keys")],
            env=env, stdout=subprocess.PIPE, text=True)
        if not self.proc.stdout.readline().startswith("serving"):
            self.proc.wait()
            sys.exit(f"error: the {name} host did not start (exit {self.proc.returncode})")

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            kib = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
        return int(kib) / 1024

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)


def host_module(site_dir):
    """The host's module in `site_dir`: wascc.host, or in revisions before
    issue 26 moved it out of the plugin, wasmml.wascc_host."""
    return "wascc.host" if (Path(site_dir) / "wascc" / "host").is_dir() else "wasmml.wascc_host"


def baseline_site(rev, scratch):
    """site_scons/ as it was at `rev`, extracted into `scratch`."""
    archive = subprocess.run(["git", "archive", rev, "site_scons"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
    return Path(scratch) / "site_scons"


class Client:
    """One client: its own source address, and with keep-alive its own connection."""

    def __init__(self, port, index, keep_alive):
        self.port, self.keep_alive = port, keep_alive
        self.source = (f"127.0.0.{10 + index}", 0)
        self.conn = None

    def put(self, body):
        start = time.perf_counter()
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120,
                                                   source_address=self.source)
        try:
            self.conn.request("PUT", "/", body=body)
            response = self.conn.getresponse()
            answer = response.read()
        finally:
            if not self.keep_alive:
                self.conn.close()
                self.conn = None
        return response.status, answer, time.perf_counter() - start

    def close(self):
        if self.conn is not None:
            self.conn.close()


def measure(port, body, clients, requests, keep_alive, expected):
    """(requests/s, median ms, p99 ms) of `requests` PUTs from `clients` clients."""
    pool_clients = [Client(port, i, keep_alive) for i in range(clients)]
    local = threading.local()
    counter = iter(range(clients))

    def one(_):
        if not hasattr(local, "client"):
            local.client = pool_clients[next(counter)]
        return local.client.put(body)

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    for client in pool_clients:
        client.close()
    wrong = [r for r in results if (r[0], r[1]) != (200, expected)]
    if wrong:
        sys.exit(f"error: {len(wrong)} wrong answers, e.g. {wrong[0][:2]}")
    latencies = sorted(r[2] * 1000 for r in results)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return requests / wall, statistics.median(latencies), p99


def wasi_answer(image):
    try:
        wasmtime = toolchain.find_wasmtime()
    except toolchain.ToolchainError as e:
        sys.exit(f"error: {e}")
    out = subprocess.run([wasmtime, "run", "--dir", "/", str(REPO / "build/wasi/classify.wasm"),
                          os.path.abspath(image)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: classify.wasm failed: {out.stderr.strip()}")
    return f'"{out.stdout.strip()}"'.encode()


def check_and_warm(host, body, expected, instances):
    status, answer, _ = Client(host.port, 0, False).put(body)
    if (status, answer) != (200, expected):
        sys.exit(f"error: the {host.name} host answered {status} {answer!r}, classify.wasm {expected!r}")
    # every instance used once (the first use builds the classifier's session)
    measure(host.port, body, instances, instances * 2, False, expected)


def main():
    args = parse_args()
    body = Path(args.image).read_bytes()
    # Up to date, and signed with the keys the host trusts (keys/).
    subprocess.run([sys.executable, "-m", "SCons", "-Q", "wascc", "wasi"], cwd=REPO, check=True)
    expected = wasi_answer(args.image)
    with tempfile.TemporaryDirectory() as scratch:
        hosts = [Host(f"baseline ({args.baseline})", baseline_site(args.baseline, scratch),
                      args.actor, args.instances),
                 Host("this tree's", REPO / "site_scons", args.actor, args.instances)]
        try:
            run(args, hosts, body, expected)
        finally:
            for host in hosts:
                host.stop()


def run(args, hosts, body, expected):
    for host in hosts:
        check_and_warm(host, body, expected, args.instances)
    rss_before = [host.rss_mib() for host in hosts]
    old, new = hosts
    print(f"both hosts answer {expected.decode()}, as classify.wasm does")
    print(f"{args.requests} PUTs of {Path(args.image).name} ({len(body)} bytes) per cell, "
          f"{args.instances} actor instances per host, {os.cpu_count()} cores; "
          f"old: {old.name}, new: {new.name}\n")
    print("| clients | keep-alive | old req/s | new req/s | new / old | old p50 ms | new p50 ms "
          "| old p99 ms | new p99 ms |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for clients in map(int, args.clients.split(",")):
        for keep_alive in (True, False):
            (old_rps, old_p50, old_p99), (new_rps, new_p50, new_p99) = (
                measure(host.port, body, clients, args.requests, keep_alive, expected)
                for host in hosts)
            print(f"| {clients} | {'yes' if keep_alive else 'no'} | {old_rps:.1f} | {new_rps:.1f} "
                  f"| {new_rps / old_rps:.2f}x | {old_p50:.0f} | {new_p50:.0f} | {old_p99:.0f} "
                  f"| {new_p99:.0f} |", flush=True)
    print()
    for host, before in zip(hosts, rss_before):
        print(f"RSS of the {host.name} host: {before:.0f} MiB after warm-up, "
              f"{host.rss_mib():.0f} MiB at the end")


if __name__ == "__main__":
    main()
