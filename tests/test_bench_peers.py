"""The peers that tools/bench_inference.py measures against run for real and
compute the same thing as onnxruntime: onnxruntime-web's and TensorFlow.js's
WebAssembly backends under Node (installed by the set-up), on the bundled
EfficientNet-Lite0, and the ResNet50 the benchmark generates is a valid
ResNet50. A benchmark whose peers computed something else would compare
nothing."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest

from conftest import REPO

BENCH = REPO / "tools" / "bench"
ONNX = REPO / "models" / "efficientnet_lite0" / "efficientnet_lite0.onnx"
SHAPE = [1, 3, 224, 224]
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "models" / "resnet50"))


@pytest.fixture(scope="module")
def io(tmp_path_factory):
    """A random input and onnxruntime's output for it."""
    path = tmp_path_factory.mktemp("peers")
    x = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
    x.tofile(path / "input.bin")
    session = onnxruntime.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])
    return path, session.run(None, {"input": x})[0].ravel()


def node(script, config):
    proc = subprocess.run(["node", str(BENCH / script), json.dumps(config)], cwd=BENCH,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    times = json.loads(proc.stdout.splitlines()[-1])["times_ms"]
    assert len(times) == config["runs"] and all(t > 0 for t in times)
    return np.fromfile(config["output"], dtype=np.float32)


def test_onnxruntime_web_matches_onnxruntime(io):
    path, expected = io
    out = node("ort_web.mjs", {"model": str(ONNX), "runs": 2, "output": str(path / "ort.out"),
                               "inputs": {"input": {"file": str(path / "input.bin"), "shape": SHAPE}}})
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_tfjs_wasm_runs_the_converted_graph_like_onnxruntime(io):
    import tfjs_graph

    path, expected = io
    graph = tfjs_graph.write(str(ONNX), str(path / "tfjs"))
    spec = json.loads((path / "tfjs" / "graph.json").read_text())
    # folded and fused as TF.js's converter would: no BatchNorm or Clip left
    assert {n["op"] for n in spec["nodes"]} <= {"conv2d", "depthwise", "add", "gap", "flatten", "matmul"}
    out = node("tfjs_wasm.mjs", {"graph": graph, "input": str(path / "input.bin"), "shape": SHAPE,
                                 "runs": 2, "output": str(path / "tfjs.out")})
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_tfjs_graph_names_an_operator_it_cannot_convert(tmp_path):
    import onnx
    import tfjs_graph
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"], name="the_det")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    onnx.save(helper.make_model(graph), tmp_path / "det.onnx")
    with pytest.raises(tfjs_graph.Unsupported, match="operator Det .node the_det"):
        tfjs_graph.write(str(tmp_path / "det.onnx"), str(tmp_path / "out"))


def test_generated_resnet50_has_resnet50s_shape():
    import make_onnx

    model = make_onnx.resnet50()
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    params = sum(np.prod(t.dims) for t in model.graph.initializer
                 if not t.name.split(".")[-1] in ("scale", "bias", "mean", "var"))
    assert len(convs) == 53                      # the stem, 16 blocks of 3, 4 projections
    assert 25.0e6 < params < 25.6e6              # ResNet50: 25.5 M parameters
