"""What cargo_wasm tells cargo about a user's crate (wasmml.cargo_project):
which plugin crates it takes by version and must be patched in, which
files it reads, which registry it builds from, and the one line a crate
without a Cargo.lock gets. No cargo build here; tests/test_example.py builds."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "site_scons"))
import wasmml  # noqa: E402
from wasmml import cargo_project, toolchain  # noqa: E402


def crate(root, manifest, lock=True):
    root.mkdir(parents=True)
    (root / "Cargo.toml").write_text(manifest)
    (root / "src").mkdir()
    (root / "src" / "main.rs").write_text("fn main() {}\n")
    if lock:
        (root / "Cargo.lock").write_text("version = 3\n")
    return root


APP = """[package]
name = "app"
version = "0.1.0"

[dependencies]
model-runtime = "0.1"
anyhow = "1"
helper = { path = "../helper" }

[build-dependencies]
model-embed = { version = "0.1" }
"""


def test_plugin_crates_taken_by_version_are_patched_and_scanned(tmp_path):
    app = crate(tmp_path / "app", APP)
    crate(tmp_path / "helper", '[package]\nname = "helper"\nversion = "0.1.0"\n', lock=False)
    found = cargo_project.Crate(app)
    assert found.patched == {"model-runtime", "model-embed"}
    runtime = Path(wasmml.crates_dir()) / "runtime"
    inputs = {Path(p) for p in found.inputs}
    assert {app / "Cargo.toml", app / "Cargo.lock", app / "src" / "main.rs",
            tmp_path / "helper" / "src" / "main.rs", runtime / "Cargo.toml", runtime / "src" / "lib.rs"} <= inputs
    assert found.default_bin == "app"
    config = Path(cargo_project.config_file(found, "default", str(tmp_path / "cfg"))).read_text()
    assert f'model-runtime = {{ path = "{runtime}" }}' in config and "debian" not in config


def test_plugin_crates_taken_by_path_are_not_patched(tmp_path):
    """This repository's own workspace: an unused patch would change its Cargo.lock."""
    found = cargo_project.Crate(REPO / "rust" / "classify")
    assert found.patched == set()
    assert found.root == str(REPO / "rust") and found.lock == str(REPO / "rust" / "Cargo.lock")
    assert cargo_project.config_file(found, "default", str(tmp_path)) is None


def test_registry_choice(monkeypatch):
    choose = cargo_project.choose_registry.__wrapped__
    monkeypatch.setattr(toolchain, "offline_registry", lambda: None)
    assert choose("auto")[0] == "default"
    with pytest.raises(cargo_project.CrateError, match="CARGO_REGISTRY=debian: .* is not installed"):
        choose("debian")
    monkeypatch.setattr(toolchain, "offline_registry", lambda: "/usr/share/cargo/registry")
    monkeypatch.setattr(cargo_project, "_registry_configured", lambda: False)
    monkeypatch.setattr(cargo_project, "_crates_io_reachable", lambda: False)
    assert choose("auto") == ("debian", "Debian's crate sources in /usr/share/cargo/registry "
                                        "(crates.io unreachable)")
    monkeypatch.setattr(cargo_project, "_crates_io_reachable", lambda: True)
    assert choose("auto")[0] == "default"
    assert choose("default")[0] == "default"
    with pytest.raises(cargo_project.CrateError, match="CARGO_REGISTRY='crates': expected one of"):
        choose("crates")


def test_a_crate_without_cargo_lock_gets_one_line(tmp_path):
    """Before cargo runs: the line names the lock file and the command that
    creates it."""
    shutil.copytree(REPO / "examples" / "iris", tmp_path / "iris", ignore=shutil.ignore_patterns("build"))
    (tmp_path / "iris" / "app" / "Cargo.lock").unlink()
    # the example's SConstruct, with the checkout's plugin; only the crate's step is asked for
    proc = subprocess.run([sys.executable, "-m", "SCons", "-Q", "--site-dir", str(REPO / "site_scons"),
                           "build/iris.wasm", "CARGOCOM=false"], cwd=tmp_path / "iris",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == ["scons: *** [build/iris.wasm] app/Cargo.lock: missing (cargo runs --locked, so builds are reproducible); "
                      "create it with: python3 -m wasmml.lockfile app"], proc.stderr
    assert not (tmp_path / "iris" / "build" / "iris.wasm").exists()
