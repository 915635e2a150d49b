"""The Rust crates' own unit tests (runtime, vision, the actor's query
parsing), run natively with the toolchain the build discovers, so
`./dev test` covers them too."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "site_scons"))
from wasmml import toolchain  # noqa: E402


@pytest.mark.parametrize("crate", ["model-runtime", "model-vision"])
def test_crate_unit_tests_pass(crate, tmp_path_factory):
    rust = toolchain.find_rust()
    env = dict(os.environ, RUSTC=rust.rustc, RUSTDOC=rust.rustdoc or "rustdoc")
    target_dir = REPO / "build" / "cargo-host"
    out = subprocess.run(
        [rust.cargo, "test", "--locked", "-p", crate, "--target-dir", str(target_dir),
         *toolchain.cargo_source_flags()],
        cwd=REPO / "rust", env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 failed" in out.stdout and "test result: ok" in out.stdout


def test_actor_query_unit_tests_pass(tmp_path):
    """The actor's query-string parsing (rust/actor/src/query.rs) uses std
    only, so its tests compile alone: the actor crate itself builds only
    for wasm32, with a model."""
    rust = toolchain.find_rust()
    binary = tmp_path / "query-tests"
    source = REPO / "rust" / "actor" / "src" / "query.rs"
    build = subprocess.run([rust.rustc, "--edition", "2021", "--test", str(source), "-o", str(binary)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 failed" in out.stdout and "test result: ok" in out.stdout
