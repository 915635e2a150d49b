"""The hand-written depthwise schedules (site_scons/wasmml/depthwise.py)
that `scons tune` measures beside MetaSchedule's: each variant, built for
wasm32 and run in wasmtime, computes what the unscheduled kernel does, on
layers like EfficientNet-Lite0's (3x3 with a ReLU6, 5x5 strided, an odd
width, no activation). Then a tuning run measures them once, a build
applies the database, and the module still matches onnxruntime."""

import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm.s_tir import meta_schedule as ms

from conftest import REPO, assert_matches_onnxruntime, save_model, tuning_records

sys.path.insert(0, str(REPO / "site_scons"))
from wasmml.compiler.kernels import depthwise  # noqa: E402
from wasmml.compiler.target import wasm_target  # noqa: E402
from wasmml.tuner import wasm_measure  # noqa: E402
from wasmml.tuner.search import model_kernels  # noqa: E402

SIZE = 14
CHANNELS = 24


def depthwise_model(path):
    """Two depthwise layers: 3x3 with bias and ReLU6 at 14x14; 5x5 with
    stride 2 (7x7 out) and bias only. 24 channels: steps of 4, 8 and 12."""
    rng = np.random.default_rng(11)
    shape = [1, CHANNELS, SIZE, SIZE]

    def weights(name, k):
        return numpy_helper.from_array(rng.standard_normal((CHANNELS, 1, k, k), dtype=np.float32), name)

    def bias(name):
        return numpy_helper.from_array(rng.standard_normal(CHANNELS, dtype=np.float32), name)

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w3", "b3"], ["c3"], group=CHANNELS, kernel_shape=[3, 3],
                          pads=[1, 1, 1, 1]),
         helper.make_node("Clip", ["c3", "lo", "hi"], ["r"]),
         helper.make_node("Conv", ["r", "w5", "b5"], ["y"], group=CHANNELS, kernel_shape=[5, 5],
                          strides=[2, 2], pads=[2, 2, 2, 2])],
        "depthwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, 7, 7])],
        [weights("w3", 3), bias("b3"), weights("w5", 5), bias("b5"),
         numpy_helper.from_array(np.array(0, np.float32), "lo"),
         numpy_helper.from_array(np.array(6, np.float32), "hi")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, save_model(path, "depthwise", model, shape)


@pytest.fixture(scope="module")
def depthwise_kernels(tmp_path_factory):
    _, meta = depthwise_model(tmp_path_factory.mktemp("dw") / "model")
    features = "+simd128,+relaxed-simd"
    target = wasm_target(features)
    tasks = ms.relax_integration.extract_tasks(
        model_kernels(str(meta.parent / "depthwise.onnx"), str(meta), "nhwc", features), target)
    return target, [t.dispatched[0] for t in tasks if depthwise.candidates(t.dispatched[0])]


def run_kernel(mod, target):
    """The kernel's output in wasmtime, on the arguments Kernel lays out
    (random, the same for every schedule of one workload)."""
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    wasm = wasm_measure.export_wasm(wasm_measure.build_kernel(mod, target, None))
    kernel = wasm_measure.Kernel(wasm_measure.engine(), wasm, args)
    kernel.call()
    return kernel.tensor(len(args) - 1)


def assert_each_computes(schedules, expected, target):
    """Each schedule's kernel, built for wasm32 and run in wasmtime, gives
    `expected` (the unscheduled kernel's output, run_kernel)."""
    for sch in schedules:
        np.testing.assert_allclose(run_kernel(sch.mod, target), expected, rtol=1e-5, atol=1e-5,
                                   err_msg=str(sch.trace))


def test_every_variant_computes_what_the_unscheduled_kernel_does(depthwise_kernels):
    target, kernels = depthwise_kernels
    # the 3x3 layer with its ReLU6, the strided 5x5 one: channel steps of 4,
    # 8 and 12 times columns 1, 2 and 7 (14 wide) or 1 and 7 (7 wide)
    assert sorted(len(depthwise.candidates(mod)) for mod in kernels) == [6, 9]
    for mod in kernels:
        expected = run_kernel(mod, target)
        assert np.abs(expected).max() > 0.1
        assert_each_computes(depthwise.candidates(mod), expected, target)


def test_a_kernel_that_is_not_depthwise_has_none():
    import tvm
    from tvm import te

    x = te.placeholder((1, 8, 8, 16), name="x")
    y = te.compute(x.shape, lambda *i: x[i] * 2, name="y")
    assert depthwise.candidates(tvm.IRModule({"main": te.create_prim_func([x, y])})) == []


def test_tuning_measures_them_once_and_the_build_applies_them(scons, run_wasm, tmp_path):
    model, model_json = depthwise_model(tmp_path / "model")
    top = tmp_path / "top"
    top.mkdir()
    args = [f"MODELS={model_json}", "TUNE_TRIALS=2", "TUNE_KERNELS=conv2d"]
    tuned = scons("tune", *args, cwd=top)
    assert "measuring 15 hand-written schedules" in tuned.stdout, tuned.stdout
    db = model_json.parent / "tuning" / "nhwc" / "simd128"
    records = tuning_records(db)
    # 9 and 6 records, which count as the 2 trials of each: no search ran
    assert sorted(sum(r[0] == i for r in records) for i in (0, 1)) == [6, 9], tuned.stdout
    assert "tuning 0 with 2 trials" in tuned.stdout, tuned.stdout
    assert all(0 < r[1][1][0] < 1 for r in records), records
    again = scons("tune", *args, cwd=top)  # measured once: the records say so
    assert "measuring 0 hand-written schedules" in again.stdout, again.stdout

    built = scons(f"MODELS={model_json}", cwd=top)
    assert "2/4 kernels tuned" in built.stdout, built.stdout  # not the transposes
    assert_matches_onnxruntime(run_wasm, top / "build" / "depthwise" / "run-model.wasm", model, tmp_path / "io")
