"""Property-based fuzzing (hypothesis) of the two boundaries that face the
outside: image decoding in the WASI module, and the host's HTTP-to-waPC
path into the real actor.

Each property runs a few examples of many inputs each, so that one wasm
run or one host checks dozens of mutated files or requests: about a
minute in all. The examples are derived from a fixed seed, so CI is
reproducible; FUZZ_EXAMPLES=N and FUZZ_RANDOM=1 explore further. A crash
found here stays as a case in REGRESSIONS.
"""

import io
import json
import os
import socket
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import REPO, wasmtime_run
from hostproc import Host

sys.path.insert(0, str(REPO / "site_scons"))

SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "4")),
                    derandomize=not os.environ.get("FUZZ_RANDOM"), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def seed_images():
    """Small valid photos to mutate: a PNG and a JPEG of 40x30 pixels."""
    image = Image.open(REPO / "models" / "images" / "chelsea.png").convert("RGB").resize((40, 30))
    out = {}
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        image.save(buf, fmt)
        out[fmt.lower()] = buf.getvalue()
    return out


SEEDS = seed_images()

# One edit of a file: xor a byte, cut it short, insert bytes, or overwrite
# 4 bytes with a number (a chunk length, a width, a height...).
EDIT = st.one_of(
    st.tuples(st.just("xor"), st.integers(0, 1 << 20), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("u32"), st.integers(0, 1 << 20),
              st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, (1 << 32) - 1)),
)
MUTATED = st.tuples(st.sampled_from(sorted(SEEDS)), st.lists(EDIT, min_size=1, max_size=4))


def mutate(data, edits):
    data = bytearray(data)
    for edit in edits:
        at = edit[1] % (len(data) + 1)
        if edit[0] == "xor" and at < len(data):
            data[at] ^= edit[2]
        elif edit[0] == "cut":
            del data[at:]
        elif edit[0] == "insert":
            data[at:at] = edit[2]
        elif edit[0] == "u32":
            data[at:at + 4] = edit[2].to_bytes(4, "big")
    return bytes(data)


# --- image decoding in the WASI module ------------------------------------------

# Inputs that once crashed a fuzzed boundary: (format, edits). None yet.
REGRESSIONS = []


@pytest.fixture(scope="module")
def classify(checkout, checkout_scons):
    checkout_scons("-Q", "wasi")
    return checkout / "build" / "wasi" / "classify.wasm"


def top_of(wasm):
    """The checkout a built build/APP/NAME.wasm is in."""
    return wasm.parents[2]


def classify_all(wasm, files):
    """Runs classify once on every file (paths relative to its checkout);
    returns {file: answer or error}."""
    proc = wasmtime_run("--dir", ".", wasm, *files, cwd=top_of(wasm), timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "panicked" not in proc.stderr and "wasm backtrace" not in proc.stderr, proc.stderr[-2000:]
    answers = {}
    for line in proc.stdout.splitlines():
        path, _, label = line.partition(": ")
        answers[path] = label
    for line in proc.stderr.splitlines():
        assert line.startswith("error: "), line
        path, _, message = line[len("error: "):].partition(": ")
        answers[path] = "error: " + message
    return answers


def check_decoding(wasm, cases, tag):
    work = top_of(wasm) / "build" / "test-fuzz-images"
    work.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (fmt, edits) in enumerate(cases):
        path = work / f"{tag}-{i}.{fmt}"
        path.write_bytes(mutate(SEEDS[fmt], edits))
        files.append(str(path.relative_to(top_of(wasm))))
    answers = classify_all(wasm, [*files, "models/images/coffee.png"])
    # every file gets exactly its answer, and the good photo still its label
    assert sorted(answers) == sorted([*files, "models/images/coffee.png"])
    assert answers["models/images/coffee.png"] == "espresso"


@SETTINGS
@given(cases=st.lists(MUTATED, min_size=40, max_size=40))
def test_mutated_images_get_an_answer_or_a_one_line_error(classify, cases):
    check_decoding(classify, cases, "fuzz")


def test_images_that_once_crashed(classify):
    if REGRESSIONS:
        check_decoding(classify, REGRESSIONS, "regression")


# --- the host's HTTP-to-waPC path ------------------------------------------------

@pytest.fixture(scope="module")
def host(actor, actor_keys):
    from wascc.wascap import KeyPair

    account = KeyPair.from_seed(actor_keys["WASCC_ACCOUNT_SEED"]).public_key
    h = Host(actor, "--issuer", account, "--instances", 2, "--max-body", 1 << 20,
             "--request-timeout", 10)
    assert h.banner.startswith("serving"), h.stop()
    yield h
    code, err = h.stop()
    assert code == 0 and "Traceback" not in err, err


TOKEN = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'", min_size=1,
                max_size=12)
PATH_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
HEADER = st.tuples(TOKEN, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
BODY = st.one_of(st.binary(max_size=2048), MUTATED.map(lambda case: mutate(SEEDS[case[0]], case[1])))
# mostly the methods the actor serves, so that most bodies reach the decoder
METHOD = st.sampled_from(["PUT", "POST"]) | st.sampled_from(["PUT", "POST", "GET", "DELETE", "HEAD"]) | TOKEN
REQUEST = st.tuples(METHOD,
                    PATH_TEXT.map(lambda text: "/" + text), st.lists(HEADER, max_size=4), BODY,
                    st.sampled_from(["length", "chunked", "none"]))


def raw_request(method, path, headers, body, framing):
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers
              if name.lower() not in ("content-length", "transfer-encoding", "connection", "expect")]
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
    else:
        payload = b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def send(port, data):
    """The status code the host answers `data` with, and the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    assert status_line.startswith("HTTP/1.1 "), answer[:200]
    return int(status_line.split()[1]), answer


@SETTINGS
@given(requests=st.lists(REQUEST, min_size=30, max_size=30))
def test_any_request_gets_an_http_answer_below_500(host, requests):
    """Whatever the method, target, headers and body, the actor answers:
    a label (200) or a client error (4xx) as JSON, never a trap or a crash
    (500), and the host serves the next request."""
    for request in requests:
        status, answer = send(host.port, raw_request(*request))
        assert status < 500, (request[:3], answer[:300])
        if status >= 400 and request[0] != "HEAD":
            body = answer.split(b"\r\n\r\n", 1)[1]
            assert "error" in json.loads(body), answer[:300]
    status, answer = send(host.port, raw_request("PUT", "/", [], (REPO / "models" / "images"
                                                                 / "coffee.png").read_bytes(), "length"))
    assert status == 200 and answer.endswith(b'"espresso"'), answer[-200:]


ANY = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats() | st.text(max_size=8)
                   | st.binary(max_size=8),
                   lambda inner: st.lists(inner, max_size=4)
                   | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=12)
# (integers as wide as MessagePack's)
# mostly maps shaped like a response, with fields of the right and the wrong types
REPLY = ANY | st.fixed_dictionaries({}, optional={
    "statusCode": st.integers(-5, 1000) | ANY,
    "status": st.text(max_size=12) | ANY,
    "header": st.dictionaries(st.text(max_size=12), st.text(max_size=12) | ANY, max_size=3) | ANY,
    "body": st.binary(max_size=12) | ANY})


@settings(max_examples=500, derandomize=True, deadline=None, database=None)
@given(REPLY)
def test_any_actor_reply_is_parsed_or_refused_as_malformed(value):
    """The host's side of the actor's answer: a MessagePack value of any
    shape either parses into a response that can be sent as it is, or is a
    ValueError (answered 500 "malformed response from the actor")."""
    import msgpack
    from wascc.host.server import parse_response

    try:
        status, reason, headers, body = parse_response(msgpack.packb(value, use_bin_type=True))
    except ValueError:
        return
    assert type(status) is int and 200 <= status <= 599 and isinstance(body, bytes)
    for text in (reason, *headers, *headers.values()):
        assert "\r" not in text and "\n" not in text
        text.encode("latin-1")
    assert not {k.lower() for k in headers} & {"content-length", "transfer-encoding", "connection"}
