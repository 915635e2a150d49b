"""The waSCC host's cache of compiled modules (wascc.module_cache): a hit
deserializes what an earlier load compiled, and a corrupt entry is compiled
again and rewritten, never loaded."""

import hashlib
import sys

import pytest
import wasmtime

from conftest import REPO

sys.path.insert(0, str(REPO / "site_scons"))
from wascc.module_cache import load_module  # noqa: E402

ENGINE = wasmtime.Engine()
WASM = wasmtime.wat2wasm('(module (func (export "answer") (result i32) (i32.const 42)))')


def answer(engine, module):
    store = wasmtime.Store(engine)
    return wasmtime.Instance(store, module, []).exports(store)["answer"](store)


def cache_state(cache):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in cache.iterdir()}


def test_smoke(tmp_path):
    assert answer(ENGINE, load_module(ENGINE, WASM, tmp_path / "cache")) == 42


def test_cache_hit(tmp_path):
    cache = tmp_path / "cache"
    load_module(ENGINE, WASM, cache)
    before = cache_state(cache)
    assert sorted(n.rsplit(".", 1)[1] for n in before) == ["cwasm", "sha256"]
    assert answer(ENGINE, load_module(ENGINE, WASM, cache)) == 42
    assert cache_state(cache) == before  # nothing new, nothing rewritten


@pytest.mark.parametrize("how", ["digest-mismatch", "digest-matches"])
def test_corrupt_entry_is_recompiled(tmp_path, how):
    cache = tmp_path / "cache"
    load_module(ENGINE, WASM, cache)
    entry = next(cache.glob("*.cwasm"))
    good = entry.read_bytes()
    entry.write_bytes(b"garbage")
    if how == "digest-matches":  # reaches wasmtime's own deserialize checks
        entry.with_suffix(".cwasm.sha256").write_text(hashlib.sha256(b"garbage").hexdigest())
    assert answer(ENGINE, load_module(ENGINE, WASM, cache)) == 42
    assert entry.read_bytes() == good
    assert not list(cache.glob(".tmp-*"))


def test_flavors_have_their_own_entries(tmp_path):
    cache = tmp_path / "cache"
    load_module(ENGINE, WASM, cache)
    load_module(ENGINE, WASM, cache, flavor="epoch")
    assert len(list(cache.glob("*.cwasm"))) == 2


def test_no_cache(tmp_path):
    assert answer(ENGINE, load_module(ENGINE, WASM, None)) == 42
