"""The second product, for real: `scons wascc` builds the signed actor, and
the project's host (wascc.host) serves it over HTTP on loopback. A
real HTTP client sends photos and bad requests; the actor answers each, and
the host refuses actors it must not run."""

import concurrent.futures
import http.client
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
import zlib

import pytest
import wasmtime

from conftest import REPO
from hostproc import Host, free_port, refusal, request

sys.path.insert(0, str(REPO / "site_scons"))

IMAGES = REPO / "models" / "images"
LABELS = (REPO / "models" / "efficientnet_lite0" / "labels.txt").read_text().splitlines()
CAT_CLASSES = range(281, 288)
ESPRESSO = 967


def account_of(actor_keys):
    from wascc.wascap import KeyPair
    return KeyPair.from_seed(actor_keys["WASCC_ACCOUNT_SEED"]).public_key


@pytest.fixture(scope="module")
def host(actor, actor_keys):
    # 48 connections at once from this one address, in a test below
    h = Host(actor, "--issuer", account_of(actor_keys), "--instances", 2,
             "--max-client-connections", 64)
    assert h.banner.startswith("serving"), h.stop()
    yield h
    code, err = h.stop()
    assert code == 0 and "Traceback" not in err, err


def photo(name):
    return (IMAGES / name).read_bytes()


def png_declaring(width, height):
    """A PNG whose header declares width x height; the pixels are absent."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


def test_actor_imports_only_from_wapc(actor):
    module = wasmtime.Module(wasmtime.Engine(), actor.read_bytes())
    assert {i.module for i in module.imports} == {"wapc"}
    assert {"__guest_call", "memory"} <= {e.name for e in module.exports}


def test_health_and_unknown_operations(actor):
    """The waPC calls themselves, in process: HealthRequest answers healthy
    once the model is loaded; an operation the actor lacks is a guest error."""
    import msgpack
    from wascc.host import Actor, GuestError
    instance = Actor(actor.read_bytes(), cache_dir=REPO / "build" / "wascc-host-cache").instantiate()
    health = msgpack.unpackb(instance.call("HealthRequest", msgpack.packb({"placeholder": True})))
    assert health == {"healthy": True, "message": "model 'efficientnet_lite0' loaded"}
    with pytest.raises(GuestError, match="unknown operation 'Frobnicate'"):
        instance.call("Frobnicate", b"")
    with pytest.raises(GuestError, match="HandleRequest: malformed request"):
        instance.call("HandleRequest", b"\xc1")


GOOD_REQUEST = {"method": "PUT", "path": "/", "queryString": "", "header": {}, "body": b""}
WRONG_TYPES = {"method": 5, "path": ["/"], "queryString": {"top": 5}, "header": "Content-Type: x",
               "body": 12.5}


def test_wrong_field_types_are_malformed_requests(actor):
    """A request map whose fields have the wrong types, or lack one, is a
    guest error that says so, not a trap; the actor then still answers."""
    import msgpack
    from wascc.host import Actor, GuestError
    instance = Actor(actor.read_bytes(), cache_dir=REPO / "build" / "wascc-host-cache").instantiate()
    for field, wrong in WRONG_TYPES.items():
        with pytest.raises(GuestError, match="HandleRequest: malformed request: .*invalid type"):
            instance.call("HandleRequest", msgpack.packb(dict(GOOD_REQUEST, **{field: wrong})))
    missing = {k: v for k, v in GOOD_REQUEST.items() if k != "path"}
    with pytest.raises(GuestError, match="HandleRequest: malformed request: .*missing field `path`"):
        instance.call("HandleRequest", msgpack.packb(missing))
    health = msgpack.unpackb(instance.call("HealthRequest", msgpack.packb({"placeholder": True})))
    assert health["healthy"] is True


def test_cat_photo_answers_a_cat_class_as_a_json_string(host):
    status, headers, body = host.request("PUT", photo("chelsea.png"))
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert LABELS.index(json.loads(body)) in CAT_CLASSES


def test_post_works_like_put(host):
    status, _, body = host.request("POST", photo("coffee.png"))
    assert (status, json.loads(body)) == (200, LABELS[ESPRESSO])


def test_top_five_lists_labels_with_probabilities(host):
    status, _, body = host.request("PUT", photo("chelsea.png"), path="/?top=5")
    assert status == 200, body
    ranked = json.loads(body)
    assert len(ranked) == 5 and all(set(r) == {"label", "probability"} for r in ranked)
    probabilities = [r["probability"] for r in ranked]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001
    assert LABELS.index(ranked[0]["label"]) in CAT_CLASSES


def test_sixteen_concurrent_requests_all_answer_right(host):
    cases = [("chelsea.png", CAT_CLASSES), ("coffee.png", [ESPRESSO])] * 8
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(lambda case: host.request("PUT", photo(case[0]), timeout=120), cases))
    for (name, classes), (status, _, body) in zip(cases, answers):
        assert status == 200, (name, body)
        assert LABELS.index(json.loads(body)) in classes, (name, body)


def test_a_burst_of_connections_up_to_the_limit_is_served(host):
    """48 connections at once, under the host's limit of 64, all answered:
    with socketserver's listen backlog of 5, the kernel reset those it had
    no room to queue before the host accepted them."""
    body = photo("coffee.png")
    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        statuses = list(pool.map(lambda _: host.request("PUT", body, timeout=120)[0], range(48)))
    assert statuses == [200] * 48


@pytest.mark.parametrize("method,body,path,status", [
    ("PUT", b"", "/", 400),                               # empty body
    ("PUT", b"this is not an image", "/", 400),           # not an image
    ("POST", photo("chelsea.png")[:2000], "/", 400),      # truncated PNG
    ("PUT", photo("chelsea.png"), "/?top=0", 400),        # bad query
    ("GET", b"", "/", 405),
    ("DELETE", b"", "/", 405),
    ("PUT", png_declaring(100_000, 100_000), "/", 413),   # 10 gigapixels declared
])
def test_bad_requests_get_a_json_error(host, method, body, path, status):
    got, headers, answer = host.request(method, body, path=path)
    assert got == status, answer
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer)["error"]
    if status == 405:
        assert headers["Allow"] == "PUT, POST"


def test_body_above_the_hosts_limit_is_refused_unread(host):
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=30)
    conn.putrequest("PUT", "/")
    conn.putheader("Content-Length", str(1 << 30))  # announced, never sent
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413
    conn.close()
    assert host.request("PUT", photo("coffee.png"))[0] == 200


def test_unsigned_actor_is_refused(actor, actor_keys):
    err = refusal(actor.parent / "classify_actor.unsigned.wasm", "--issuer", account_of(actor_keys))
    assert "not signed" in err


def test_tampered_actor_is_refused(actor, actor_keys, tmp_path):
    wasm = bytearray(actor.read_bytes())
    wasm[len(wasm) // 2] ^= 0x01  # a byte of the embedded weights
    tampered = tmp_path / "tampered.wasm"
    tampered.write_bytes(wasm)
    assert "hash does not match" in refusal(tampered, "--issuer", account_of(actor_keys))


def test_actor_signed_by_a_stranger_is_refused(actor, actor_keys, tmp_path):
    from wascc import wascap
    stranger = wascap.KeyPair.generate("account")
    module = wascap.KeyPair.from_seed(actor_keys["WASCC_MODULE_SEED"])
    resigned = tmp_path / "resigned.wasm"
    resigned.write_bytes(wascap.sign_actor(actor.read_bytes(), stranger, module, name="classify",
                                           caps=["wascc:http_server"]))
    err = refusal(resigned, "--issuer", account_of(actor_keys))
    assert stranger.public_key in err and "not a trusted" in err


def test_scons_serve_serves_the_built_actor_until_ctrl_c(actor, actor_keys, checkout, cargo_target_dir):
    """The documented command: `scons serve PORT=...` builds (nothing to do
    here, in the checkout the actor was built in) and serves; Ctrl-C, sent
    to the whole process group as a terminal does, stops the host without a
    traceback."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "SCons", "-Q", "serve", f"PORT={port}",
                             f"CARGO_TARGET_DIR={cargo_target_dir}"], cwd=checkout,
                            env=dict(os.environ, **actor_keys), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        banner = next((line for line in proc.stdout if line.startswith("serving")), "")
        assert banner.startswith("serving classify"), proc.stderr.read() if proc.poll() else banner
        status, _, body = request(port, "PUT", photo("chelsea.png"))
        assert status == 200 and LABELS.index(json.loads(body)) in CAT_CLASSES, body
        # the host logs a request after answering it: Ctrl-C only once it has
        logged = read_until(proc.stderr, "PUT / 200", timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    err = "".join(logged) + err
    assert "Traceback" not in err, err
    assert "PUT / 200" in err  # the host's request log


def read_until(stream, text, timeout):
    """What `stream` gives up to and with `text`, or all it gave within
    `timeout` seconds (read from its descriptor, so that what is left stays
    for communicate())."""
    chunks, deadline = [], time.monotonic() + timeout
    while text not in "".join(chunks) and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(stream.fileno(), 65536).decode(errors="replace") if ready else ""
        if not chunk:
            break
        chunks.append(chunk)
    return chunks


# --- memory: images refused from their header, or decoded within 512 MiB -------

@pytest.mark.parametrize("make,message", [
    # issue 24: within the old pixel limit, it trapped the actor (a 500)
    ("wide_row_png", "image is 33554432x1 pixels, 16-bit RGBA PNG: decoding needs about 1890 MiB, "
                     "more than the limit of 416 MiB"),
    ("over_budget_png", "image is 11000x10000 pixels, 8-bit grayscale PNG: decoding needs about "
                        "451 MiB, more than the limit of 416 MiB"),
])
def test_valid_images_over_the_memory_limit_get_413_naming_their_size(host, make, message):
    import big_images
    status, headers, body = host.request("PUT", getattr(big_images, make)())
    assert (status, headers["Content-Type"]) == (413, "application/json"), body
    assert json.loads(body) == {"error": message}


def test_the_costliest_32_megapixel_photo_is_classified_within_512_mib(host):
    """About 400 MiB to decode (a progressive JPEG without chroma
    subsampling), within the limit and the host's default 512 MiB."""
    from big_images import near_budget_jpeg
    status, _, body = host.request("PUT", near_budget_jpeg(), path="/?top=2", timeout=120)
    assert status == 200, body
    assert [r["label"] in LABELS for r in json.loads(body)] == [True, True]


def test_out_of_memory_is_reported_as_such(actor, actor_keys):
    """Under a host memory limit below the 512 MiB the actor's limit
    assumes, an image within that limit (5000x5000 RGB, about 100 MiB to
    decode) still fails an allocation: the actor tells the host so before
    it traps, and the next request is answered."""
    from big_images import black_png
    h = Host(actor, "--issuer", account_of(actor_keys), "--instances", 1, "--max-memory", 64)
    try:
        assert h.banner.startswith("serving"), h.stop()
        status, _, body = h.request("PUT", black_png(5000, 5000))
        message = json.loads(body)["error"]
        # the decoded image's buffer, the first large allocation
        assert status == 500 and message.startswith(
            "actor out of memory: an allocation of 75000000 bytes failed (memory is "), message
        assert message.endswith("; the limit is 64 MiB"), message
        status, _, body = h.request("PUT", photo("chelsea.png"))
        assert status == 200 and LABELS.index(json.loads(body)) in CAT_CLASSES, body
    finally:
        code, err = h.stop()
    assert code == 0 and "Traceback" not in err, err


# --- the query string, which the host passes raw ------------------------------

@pytest.mark.parametrize("query,entries", [("top=%33", 3), ("%74op=2", 2), ("x=%20&top=%34", 4)])
def test_query_keys_and_values_are_percent_decoded(host, query, entries):
    status, _, body = host.request("PUT", photo("coffee.png"), path=f"/?{query}")
    assert status == 200, body
    assert len(json.loads(body)) == entries


@pytest.mark.parametrize("query,escape", [("top=%3", "%3"), ("top=%zz", "%zz"), ("top=3&x=%", "%")])
def test_a_malformed_escape_is_a_400_naming_it(host, query, escape):
    status, _, body = host.request("PUT", photo("coffee.png"), path=f"/?{query}")
    assert status == 400, body
    message = f"malformed escape '{escape}' in the query: % takes two hex digits"
    assert json.loads(body) == {"error": message}
