"""Compile options are part of a model's build signature: changing one
recompiles exactly the models it applies to, and nothing else runs."""

import json
import re

import onnx
import pytest
from onnx import TensorProto, helper

pytestmark = pytest.mark.usefixtures("project")


def relu_model(path, name):
    """A dynamic batch dim, N: model.json sets it to 1, and TVM_INPUT_SHAPES
    may set it to another (a static dim it may not contradict)."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], name,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              path / f"{name}.onnx")
    (path / f"{name}.json").write_text(json.dumps({
        "name": name, "onnx": f"{name}.onnx", "outputs": ["y"],
        "inputs": {"x": {"shape": [1, 4, 8], "dtype": "float32"}}}))
    return path / f"{name}.json"


@pytest.fixture(scope="module")
def project(tmp_path_factory, scons):
    top = tmp_path_factory.mktemp("options")
    models = ",".join(str(relu_model(top, n)) for n in ("alpha", "beta"))

    def build(*args):
        out = scons("-Q", f"MODELS={models}", *args, cwd=top)
        return sorted(re.findall(r"Compiling model (\w+)", out.stdout)), out

    build()
    return {"top": top, "build": build}


def test_no_change_compiles_nothing(project):
    compiled, out = project["build"]()
    assert compiled == [] and "Building" not in out.stdout


def test_target_features_recompile_every_model(project):
    compiled, _ = project["build"]("TVM_TARGET_FEATURES=+simd128,+bulk-memory")
    assert compiled == ["alpha", "beta"]
    compiled, _ = project["build"]()
    assert compiled == ["alpha", "beta"]


def test_pipeline_recompiles(project):
    assert project["build"]("TVM_PIPELINE=default")[0] == ["alpha", "beta"]
    assert project["build"]()[0] == ["alpha", "beta"]


def test_one_models_input_shape_recompiles_only_that_model(project):
    compiled, out = project["build"]("beta.TVM_INPUT_SHAPES=x=2,4,8")
    assert compiled == ["beta"]
    assert "Building run-model.wasm" in out.stdout
    plan = json.loads((project["top"] / "build/beta/beta.plan.json").read_text())
    assert plan["tensors"][plan["inputs"][0]["tensor"]]["shape"] == [2, 4, 8]
    assert project["build"]()[0] == ["beta"]


def test_silent_builds_print_nothing_and_normal_ones_say_what_runs(project):
    compiled, out = project["build"]("-s", "alpha.TVM_INPUT_SHAPES=x=2,4,8")
    assert out.stdout == "" and compiled == []
    compiled, out = project["build"]()
    lines = out.stdout.splitlines()
    # Each step: what it is, then one line with the model and the time taken.
    assert compiled == ["alpha"]
    assert any(re.fullmatch(r"  alpha: imported [\d.]+s, lowered [\d.]+s, kernels built [\d.]+s \([\d.]+s\)", line)
               for line in lines), out.stdout
    assert any(re.fullmatch(r"  run-model.wasm: [\d.]+ MB, cargo [\d.]+s", line) for line in lines), out.stdout


def test_cargo_lto_relinks_every_module_and_compiles_no_model(project):
    """The suite links with CARGO_LTO=off (conftest); the default links with
    the release profile's LTO, into other bytes."""
    wasm = project["top"] / "build/alpha/run-model.wasm"
    without = wasm.read_bytes()
    compiled, out = project["build"]("CARGO_LTO=on")
    assert compiled == [] and out.stdout.count("Building run-model.wasm") == 2, out.stdout
    assert wasm.read_bytes() != without
    compiled, out = project["build"]()
    assert compiled == [] and out.stdout.count("Building run-model.wasm") == 2, out.stdout
    assert wasm.read_bytes() == without
