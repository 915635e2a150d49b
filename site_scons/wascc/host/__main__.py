"""Serve a signed waSCC actor over HTTP, as a waSCC host with the
`wascc:http_server` capability would:

    PYTHONPATH=site_scons python -m wascc.host ACTOR.wasm [--host H] [--port P]
        [--instances N] [--max-body BYTES] [--timeout S] [--queue-timeout S] [--max-memory MIB]
        [--client-timeout S] [--request-timeout S] [--max-connections N]
        [--max-client-connections N]
        [--issuer ACCOUNT]... [--keys-dir DIR] [--any-issuer] [--quiet]

The actor must be signed, unchanged since, valid now, issued by a trusted
account and granted `wascc:http_server`; otherwise nothing of it runs. The
trusted accounts are the --issuer keys, else the account whose seed is in
$WASCC_ACCOUNT_SEED or --keys-dir (default: ./keys, where the build keeps
the keys it signs with); --any-issuer trusts any valid signature. Exit
status: 0 after Ctrl-C or SIGTERM, 1 if the actor is refused or the port is
taken (one line on stderr).
"""
import argparse
import os
import signal
import socket
import sys

from wascc import keys, module_cache, wascap

from .server import Pool, Server
from .wapc import Actor, ActorError

HTTP_SERVER = "wascc:http_server"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m wascc.host",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("actor", metavar="ACTOR.wasm")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081, help="0 picks a free port (default: 8081)")
    p.add_argument("--instances", type=_positive(int), default=os.cpu_count() or 1,
                   help="actor instances, i.e. requests served at once (default: CPUs)")
    p.add_argument("--max-body", type=_positive(int), default=16 << 20, metavar="BYTES",
                   help="largest request body (default: 16 MiB)")
    p.add_argument("--timeout", type=_positive(float), default=10.0, metavar="SECONDS",
                   help="time budget of one call into the actor (default: 10)")
    p.add_argument("--queue-timeout", type=_positive(float), default=30.0, metavar="SECONDS",
                   help="how long a request waits for a free instance before a 503 (default: 30)")
    p.add_argument("--max-memory", type=_positive(int), default=512, metavar="MIB",
                   help="memory limit of each instance (default: 512)")
    p.add_argument("--client-timeout", type=_positive(float), default=30.0, metavar="SECONDS",
                   help="drop a client that sends nothing for this long (default: 30)")
    p.add_argument("--request-timeout", type=_positive(float), default=60.0, metavar="SECONDS",
                   help="time to send a whole request, headers and body (default: 60)")
    p.add_argument("--max-connections", type=_positive(int), default=64, metavar="N",
                   help="connections open at once; more are answered 503 (default: 64)")
    p.add_argument("--max-client-connections", type=_positive(int), default=16, metavar="N",
                   help="connections open at once from one client address; more are answered "
                        "429 (default: 16)")
    p.add_argument("--issuer", action="append", metavar="ACCOUNT",
                   help="trusted account public key (A...); repeatable "
                        "(default: the account of --keys-dir, if it has one)")
    p.add_argument("--keys-dir", default="keys",
                   help="where the build's account.nk is (default: ./keys)")
    p.add_argument("--any-issuer", action="store_true",
                   help="run an actor signed by any account (the signature is still checked)")
    p.add_argument("--quiet", action="store_true", help="no line per request")
    return p.parse_args(argv)


def _positive(kind):
    def convert(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value
    convert.__name__ = kind.__name__  # for argparse's "invalid int value" message
    return convert


def trusted_issuers(ns):
    """--issuer, else the account key the build signs with; None (any
    issuer with a valid signature) only if --any-issuer says so."""
    if ns.issuer:
        for key in ns.issuer:
            wascap.decode_public_key(key, "account")  # a typo must not trust nobody silently
        return ns.issuer
    if ns.any_issuer:
        return None
    try:
        account = wascap.load_key("account", ns.keys_dir, create=False)
    except FileNotFoundError:
        raise wascap.WascapError(
            f"no trusted account: no --issuer, no ${keys.SEED_ENV['account']} and no "
            f"{keys.key_file(ns.keys_dir, 'account')} (or pass --any-issuer)") from None
    return [account.public_key]


def load_actor(ns, issuers):
    """The verified, compiled actor and its claims; raises what refuses it."""
    with open(ns.actor, "rb") as f:
        wasm = f.read()
    claims = wascap.verify_actor(wasm, trusted_issuers=issuers, required_caps=[HTTP_SERVER])
    name = claims["wascap"].get("name") or os.path.basename(ns.actor)
    actor = Actor(wasm, name=name, timeout=ns.timeout, max_memory=ns.max_memory << 20,
                  cache_dir=module_cache.default_dir())
    return actor, claims


def serve(ns):
    try:
        issuers = trusted_issuers(ns)
    except (OSError, wascap.WascapError) as e:
        return _error(str(e))
    try:
        actor, claims = load_actor(ns, issuers)
    except OSError as e:
        return _error(f"{ns.actor}: {e.strerror}")
    except (wascap.WascapError, ActorError) as e:
        return _error(f"{ns.actor}: {e}")
    try:
        server = Server((ns.host, ns.port), max_body=ns.max_body,
                        client_timeout=ns.client_timeout, request_timeout=ns.request_timeout,
                        max_connections=ns.max_connections,
                        max_per_client=ns.max_client_connections, quiet=ns.quiet)
    except (OSError, socket.gaierror) as e:
        return _error(f"cannot listen on {ns.host}:{ns.port}: {e.strerror}")
    with server:
        try:
            server.pool = Pool(actor, ns.instances, wait=ns.queue_timeout)
        except ActorError as e:
            return _error(f"{ns.actor}: {e}")
        host, port = server.server_address[:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        print(f"serving {actor.name} ({claims['sub']}) on {url} with {ns.instances} instances",
              flush=True)
        server.serve_forever()
    return 0


def _error(message):
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def main(argv=None):
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    try:
        return serve(ns)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
