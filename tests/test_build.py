"""The build itself: a no-op build runs nothing and never imports TVM or
onnx; `scons -h` documents the targets and variables."""

import pytest


@pytest.fixture(scope="module")
def scons(checkout_scons):
    """scons(*args): the project's build in the tests' checkout, logging its imports."""
    def run(*args):
        return checkout_scons(*args, env={"PYTHONPROFILEIMPORTTIME": "1"}, check=False,
                              capture_output=True, text=True)
    return run


@pytest.fixture(scope="module")
def built(scons):
    out = scons("-Q", "wasi", "run-model")
    assert out.returncode == 0, out.stderr


def imported_modules(importtime_log):
    return {line.split("|")[-1].strip().split(".")[0]
            for line in importtime_log.splitlines() if line.startswith("import time:")}


def test_no_op_build_runs_nothing_and_imports_no_tvm(built, scons):
    out = scons("-Q", "wasi", "run-model")
    assert out.returncode == 0, out.stderr
    assert "is up to date" in out.stdout
    assert "Compiling" not in out.stdout and "Building" not in out.stdout
    modules = imported_modules(out.stderr)
    assert "SCons" in modules  # the log really lists imports
    assert not {"tvm", "tvm_ffi", "onnx", "onnxruntime", "numpy"} & modules


def test_help_lists_targets_and_variables(scons):
    out = scons("-h")
    assert out.returncode == 0, out.stderr
    for word in ("wasi", "run-wasi", "digits", "models", "TVM_TARGET_FEATURES", "TVM_PIPELINE",
                 "IMAGE", "CACHE_DIR", "NAME.OPTION"):
        assert word in out.stdout
