"""The example project (examples/iris) built as a user would build it: the
plugin's wheel, built from the checkout's files, installed into a fresh venv
outside the checkout, and the example copied outside the checkout and built
there with that venv's scons alone (no --site-dir, no PYTHONPATH).

Then its output is compared with onnxruntime's, and each kind of edit is
checked for what it rebuilds: nothing for a no-op, the crate alone for a
crate edit, the model and then the crate for a model edit.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest

from conftest import wasmtime_cli

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "iris"
# what the wheel is built from: the files pyproject.toml packages
PACKAGE_INPUTS = ["pyproject.toml", "LICENSE", "README.md", "site_scons/wasmml", "site_scons/wascc", "rust/runtime",
                  "rust/embed"]
FLOWERS = [(5.1, 3.5, 1.4, 0.2), (5.9, 3.0, 5.1, 1.8), (6.4, 3.2, 4.5, 1.5), (4.9, 2.4, 3.3, 1.0)]


def _run(cmd, cwd=None, env=None, timeout=900):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _user_environment():
    """The shell of a user who never heard of this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SCONS"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(REPO)))
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built by setuptools from a copy of the packaged files (so
    setuptools' scratch files never land in the checkout)."""
    source = tmp_path_factory.mktemp("wheel-source")
    for item in PACKAGE_INPUTS:
        src, dst = REPO / item, source / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "target"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
          "--no-build-isolation", "-w", dist, source])
    (built,) = dist.glob("wasm_ml-*.whl")
    return built


@pytest.fixture(scope="module")
def user_venv(wheel, tmp_path_factory):
    """A fresh venv outside the checkout with the wheel installed, as
    `pip install wasm-ml` would make it; the versions it resolves are held
    to requirements.txt's, so the run is the one this checkout was tested with."""
    venv = tmp_path_factory.mktemp("user") / "venv"
    base_python = getattr(sys, "_base_executable", None) or shutil.which("python3")
    _run([base_python, "-m", "venv", venv], env=_user_environment())
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
          "-c", REPO / "requirements.txt", wheel],
         env=_user_environment())
    return venv


@pytest.fixture(scope="module")
def project(user_venv, tmp_path_factory):
    """The example, copied outside the checkout and built once; returns
    (its directory, a function that runs its scons and returns the log)."""
    top = tmp_path_factory.mktemp("project") / "iris"
    shutil.copytree(EXAMPLE, top, ignore=shutil.ignore_patterns("build", ".sconsign*"))
    assert not top.resolve().is_relative_to(REPO)

    def scons(*args):
        proc = _run([user_venv / "bin" / "scons", "-Q", *args], cwd=top, env=_user_environment())
        return proc.stdout + proc.stderr

    first_log = scons()
    return top, scons, first_log


def _classify(wasm, flower):
    proc = _run([wasmtime_cli(), "run", wasm, "--probabilities", *map(str, flower)])
    lines = proc.stdout.split("\n")
    probabilities = {name: float(p) for name, p in (line.split() for line in lines[1:] if line)}
    return lines[0], probabilities


def _assert_matches_onnxruntime(top):
    labels = (top / "model" / "labels.txt").read_text().split()
    session = onnxruntime.InferenceSession(str(top / "model" / "iris.onnx"), providers=["CPUExecutionProvider"])
    for flower in FLOWERS:
        expected = session.run(None, {"measurements": np.array([flower], np.float32)})[0][0]
        best, got = _classify(top / "build" / "iris.wasm", flower)
        assert best == labels[int(expected.argmax())], flower
        np.testing.assert_allclose([got[name] for name in labels], expected, atol=2e-6, rtol=0)


def _ran(log):
    """What a build ran, read from its log: compiles and cargo builds."""
    return set(re.findall(r"^Compiling model (\S+)", log, re.M)) | set(
        re.findall(r"^Building (\S+\.wasm)", log, re.M))


def test_the_installed_plugin_is_not_the_checkout(user_venv):
    where = _run([user_venv / "bin" / "python", "-c",
                  "import wasmml, wascc.host; print(wasmml.__file__, wasmml.crates_dir(), wascc.host.__file__)"],
                 cwd=user_venv, env=_user_environment()).stdout.split()
    assert all(Path(p).resolve().is_relative_to(user_venv.resolve()) for p in where), where
    assert (Path(where[1]) / "runtime" / "Cargo.toml").is_file()


def test_the_example_builds_and_matches_onnxruntime(project):
    top, _, log = project
    assert _ran(log) == {"iris", "iris.wasm"}, log
    assert re.search(r"^  rust: \S*cargo, \S*rustc \(rustc [\d.]+", log, re.M), log
    _assert_matches_onnxruntime(top)


def test_a_second_build_runs_nothing(project):
    top, scons, _ = project
    log = scons()
    assert _ran(log) == set() and "is up to date" in log, log


def test_a_crate_edit_rebuilds_the_crate_alone(project):
    top, scons, _ = project
    main_rs = top / "app" / "src" / "main.rs"
    main_rs.write_text(main_rs.read_text() + "\n// edited by a test\n")
    assert _ran(scons()) == {"iris.wasm"}
    _assert_matches_onnxruntime(top)


def test_a_model_edit_recompiles_the_model_and_relinks(project):
    top, scons, _ = project
    path = top / "model" / "iris.onnx"
    model = onnx.load(path)
    bias = next(t for t in model.graph.initializer if t.name == "b2")
    values = onnx.numpy_helper.to_array(bias) + np.array([2.0, 0.0, 0.0], np.float32)  # favour setosa
    bias.CopyFrom(onnx.numpy_helper.from_array(values, "b2"))
    onnx.save(model, path)
    assert _ran(scons()) == {"iris", "iris.wasm"}
    _assert_matches_onnxruntime(top)


def test_the_tools_load_in_each_usual_scons_way(user_venv, tmp_path):
    (tmp_path / "SConstruct").write_text(
        "import wasmml\n"
        "by_object = Environment(tools=[wasmml.tvm_model, wasmml.cargo_wasm])\n"
        "by_object.Tool(wasmml.wascap_sign)\n"
        "by_name = Environment(tools=['tvm_model', 'cargo_wasm', 'wascap_sign'], toolpath=[wasmml.TOOLPATH])\n"
        "for env in (by_object, by_name):\n"
        "    print(all(hasattr(env, m) for m in ('TVMModel', 'TVMTune', 'CargoWasm', 'WascapSign')))\n")
    log = _run([user_venv / "bin" / "scons", "-Q", "-n"], cwd=tmp_path, env=_user_environment()).stdout
    assert log.split("\n")[:2] == ["True", "True"], log
