"""A real TVM kernel that rejects its arguments makes the runtime return an
error carrying TVM's own message: the module exits 1 with one line, it does
not trap. The plan is corrupted on purpose (an output shape the kernel was
not compiled for), which passes the runtime's bounds checks but not the
kernel's own shape checks."""

import json
import os
import shutil
import subprocess
import sys

import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "site_scons"))
from wasmml import toolchain  # noqa: E402
from conftest import wasmtime_run  # noqa: E402


def relu_model(path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              path / "relu.onnx")
    (path / "relu.json").write_text(json.dumps({"name": "relu", "onnx": "relu.onnx"}))
    return path / "relu.json"


def cargo_build(repo, model_dir, target_dir):
    """run-model for the model in model_dir, built as cargo_wasm builds it
    (same flags, so the shared target dir's dependencies are reused)."""
    rust = toolchain.find_rust()
    env = dict(os.environ, RUSTC=rust.rustc, WASM_MODEL_DIR=str(model_dir), WASM_MODEL_NAME="relu",
               RUSTFLAGS=f"--remap-path-prefix={repo / 'rust'}=rust")
    subprocess.run([rust.cargo, "build", "--release", "--locked", "--quiet",
                    "--manifest-path", str(repo / "rust/run-model/Cargo.toml"),
                    "--target", rust.wasi_target, "--target-dir", str(target_dir),
                    "--bin", "run-model", *toolchain.cargo_source_flags()],
                   env=env, check=True, timeout=600)
    return target_dir / rust.wasi_target / "release" / "run-model.wasm"


def test_kernel_error_is_reported_not_trapped(repo, scons, cargo_target_dir, tmp_path):
    scons("-Q", f"MODELS={relu_model(tmp_path)}", "build/relu/relu.plan.json", cwd=tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "build" / "relu", broken)
    plan = json.loads((broken / "relu.plan.json").read_text())
    output = plan["tensors"][plan["outputs"][0]["tensor"]]
    output["shape"] = [1, 4, 4]
    (broken / "relu.plan.json").write_text(json.dumps(plan))

    wasm = tmp_path / "broken.wasm"
    shutil.copyfile(cargo_build(repo, broken, cargo_target_dir), wasm)
    io = tmp_path / "io"
    io.mkdir()
    (io / "input_0.bin").write_bytes(bytes(4 * 32))
    out = wasmtime_run("--dir", io, wasm, io, timeout=120)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: kernel 'relu' failed: "), out.stderr
    # TVM's own check names the argument and the shape it expected.
    assert "Invalid compute.shape[2]" in lines[0] and "expected 8" in lines[0], lines[0]
