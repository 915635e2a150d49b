"""Toolchain discovery: finds a rustc whose sysroot really has a wasm32 std,
names the WASI target as that rustc does, and says what to install when
nothing fits. Uses fake rustc scripts, so it runs anywhere."""

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "site_scons"))
from wasmml import toolchain  # noqa: E402


def fake_rust(root, targets):
    """A rustc script answering --print sysroot and --version, a cargo beside
    it, and a sysroot holding a std for each of `targets`."""
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    for target in targets:
        lib = root / "lib" / "rustlib" / target / "lib"
        lib.mkdir(parents=True)
        (lib / "libstd-0123.rlib").write_bytes(b"")
    rustc = bindir / "rustc"
    rustc.write_text(f"""#!/bin/sh
case "$1" in
  --version) echo "rustc 9.99.0 (fake)";;
  --print) echo "{root}";;
esac
""")
    rustc.chmod(0o755)
    (bindir / "cargo").write_text("#!/bin/sh\n")
    (bindir / "cargo").chmod(0o755)
    return str(rustc)


@pytest.mark.parametrize("wasi", ["wasm32-wasip1", "wasm32-wasi"])
def test_detects_the_wasi_target_name(tmp_path, wasi):
    rust = toolchain._probe(fake_rust(tmp_path, [wasi, "wasm32-unknown-unknown"]))
    assert rust.wasi_target == wasi
    assert rust.cargo == str(tmp_path / "bin" / "cargo")
    assert rust.has_target("wasm32-unknown-unknown")


def test_a_rustc_without_wasm_std_is_skipped(tmp_path):
    assert toolchain._probe(fake_rust(tmp_path, ["x86_64-unknown-linux-gnu"])) is None


def test_missing_toolchain_says_what_to_install(tmp_path, monkeypatch):
    rustc = fake_rust(tmp_path, [])
    monkeypatch.setattr(toolchain, "_rustc_candidates", lambda search_path=None: [rustc])
    toolchain.find_rust.cache_clear()
    try:
        with pytest.raises(toolchain.ToolchainError) as err:
            toolchain.find_rust()
    finally:
        toolchain.find_rust.cache_clear()
    assert rustc in str(err.value)
    assert "libstd-rust-dev-wasm32" in str(err.value) and "rustup target add" in str(err.value)


def test_the_real_toolchain_is_found():
    rust = toolchain.find_rust()
    assert rust.wasi_target in toolchain.WASI_NAMES
    assert Path(toolchain.find_llvm_ar()).is_file()


def test_the_first_rustc_on_path_with_a_wasm_std_wins(tmp_path, monkeypatch):
    """A rustup shim without wasm32 targets often comes first on PATH: it is
    passed over for the next one that has them, in PATH's order."""
    without = fake_rust(tmp_path / "rustup", ["x86_64-unknown-linux-gnu"])
    first = fake_rust(tmp_path / "first", ["wasm32-wasip1"])
    second = fake_rust(tmp_path / "second", ["wasm32-wasip1"])
    monkeypatch.delenv("RUSTC", raising=False)
    path = os.pathsep.join(str(Path(p).parent) for p in (without, first, second))
    assert toolchain._rustc_candidates(path)[:3] == [without, first, second]
    cache = tmp_path / "cache.json"
    for _ in range(2):  # the second time from the cache, which remembers the shim too
        assert toolchain.find_rust.__wrapped__(str(cache), search_path=path).rustc == first
    assert len(json.loads(cache.read_text())) == 2


def test_a_named_rustc_without_wasm_std_is_an_error_not_a_fallback(tmp_path):
    rustc = fake_rust(tmp_path, ["x86_64-unknown-linux-gnu"])
    with pytest.raises(toolchain.ToolchainError, match=f"RUSTC={rustc}: not a rustc with a wasm32"):
        toolchain.find_rust.__wrapped__(rustc=rustc)
