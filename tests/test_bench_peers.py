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


def test_onnxruntime_web_runs_on_two_threads_under_node(io):
    """numThreads = 2 is honoured under Node (Emscripten pthreads on
    worker_threads), not silently dropped to 1: the benchmark's threaded
    rows compare against it."""
    path, expected = io
    config = {"model": str(ONNX), "runs": 2, "threads": 2, "output": str(path / "ort2.out"),
              "inputs": {"input": {"file": str(path / "input.bin"), "shape": SHAPE}}}
    proc = subprocess.run(["node", str(BENCH / "ort_web.mjs"), json.dumps(config)], cwd=BENCH,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["threads"] == 2, proc.stderr
    np.testing.assert_allclose(np.fromfile(config["output"], dtype=np.float32), expected, atol=1e-4)


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


def test_model_flops_counts_each_multiply_add_twice(tmp_path):
    """The GFLOP/s the benchmark prints rest on this count: a grouped
    strided convolution, a Gemm reading its first input transposed and a
    batched MatMul, each checked by hand, and ResNet50's well-known 4.1 G
    multiply-adds."""
    import ceiling
    import make_onnx
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w": (8, 2, 3, 3), "g": (32, 10)}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
         helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("Gemm", ["f", "g"], ["y"], transA=1),
         helper.make_node("MatMul", ["y", "y2"], ["z"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [10, 5])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.standard_normal(s, dtype=np.float32), n) for n, s in weights.items()])
    onnx.save(helper.make_model(graph), tmp_path / "g.onnx")
    # batch 32: conv [32, 8, 4, 4] outputs x (2 channels x 3 x 3) each; the
    # Gemm's A is f transposed, [128, 32] x [32, 10]; then [128, 10] x [10, 5]
    conv, gemm, matmul = 32 * 8 * 4 * 4 * 2 * 9, 128 * 10 * 32, 128 * 5 * 10
    assert ceiling.model_flops(tmp_path / "g.onnx", {"x": [32, 4, 8, 8]}) == 2 * (conv + gemm + matmul)

    onnx.save(make_onnx.resnet50(), tmp_path / "resnet50.onnx")
    assert round(ceiling.model_flops(tmp_path / "resnet50.onnx", {"input": [1, 3, 224, 224]}) / 2e9, 2) == 4.09


@pytest.mark.parametrize("fused", [False, True], ids=["simd128", "relaxed_simd"])
def test_the_wasm_peak_loop_computes_what_it_counts(fused):
    """Each of the ceiling's iterations is one multiply-add on every
    accumulator: with a = a * 0.999 + 0.001 from a_i = i, the sum after n
    iterations is known, so a loop that skipped work would be caught."""
    import ceiling

    store, run = ceiling.peak_loop(fused)
    a = np.arange(ceiling.ACCUMULATORS, dtype=np.float32)
    for _ in range(100):
        a = a * np.float32(0.999) + np.float32(0.001)
    assert run(store, 100) == pytest.approx(float(a.sum()), rel=1e-5)
    assert ceiling.wasm_peak_gflops(fused, repeats=1) > 0
