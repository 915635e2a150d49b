"""The hand-written schedules of 1x1 convolutions
(site_scons/wasmml/pointwise.py) that `scons tune` measures beside
MetaSchedule's: each variant, built for wasm32 and run in wasmtime,
computes what the unscheduled kernel does, on layers like ResNet50's (a
ReLU, a stride of 2, a residual add; steps of 4 and 8 input channels). Then
a tuning run measures them once, a build applies the database, and the
module still matches onnxruntime."""

import json
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm.s_tir import meta_schedule as ms

from conftest import REPO, assert_matches_onnxruntime, save_model, tuning_records
from test_depthwise import assert_each_computes, run_kernel

sys.path.insert(0, str(REPO / "site_scons"))
from wasmml.compiler.kernels import pointwise  # noqa: E402
from wasmml.compiler.target import wasm_target  # noqa: E402
from wasmml.tuner.search import model_kernels  # noqa: E402

SIZE = 14
INPUTS = 12  # not a multiple of 8: steps of 4


def pointwise_model(path):
    """Three 1x1 layers: 12 -> 96 channels with a ReLU at 14x14; 96 -> 64
    with stride 2 (7x7 out); 64 -> 64 added to its own input, then a ReLU."""
    rng = np.random.default_rng(5)

    def weights(name, o, i):
        return numpy_helper.from_array((rng.standard_normal((o, i, 1, 1)) / np.sqrt(i)).astype(np.float32), name)

    def bias(name, o):
        return numpy_helper.from_array(rng.standard_normal(o, dtype=np.float32), name)

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[1, 1], strides=[2, 2]),
         helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
         helper.make_node("Add", ["c3", "c2"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"])],
        "pointwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, INPUTS, SIZE, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 7, 7])],
        [weights("w1", 96, INPUTS), bias("b1", 96), weights("w2", 64, 96), bias("b2", 64),
         weights("w3", 64, 64), bias("b3", 64)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, save_model(path, "pointwise", model, [1, INPUTS, SIZE, SIZE])


@pytest.fixture(scope="module")
def pointwise_kernels(tmp_path_factory):
    _, meta = pointwise_model(tmp_path_factory.mktemp("pw") / "model")
    features = "+simd128,+relaxed-simd"
    target = wasm_target(features)
    tasks = ms.relax_integration.extract_tasks(
        model_kernels(str(meta.parent / "pointwise.onnx"), str(meta), "nhwc", features), target)
    return target, [t.dispatched[0] for t in tasks if pointwise.candidates(t.dispatched[0])]


def test_every_variant_computes_what_the_unscheduled_kernel_does(pointwise_kernels):
    target, kernels = pointwise_kernels
    # 96 outputs: blocks of 96, 48 and 32 channels, of 196 and 98 pixels;
    # 64 outputs at 7x7: blocks of 64, 32 and 16 channels, of all 49 pixels
    # (the last one a step of its own with two a step); each with one
    # pixel a step or two
    assert sorted(len(pointwise.candidates(mod)) for mod in kernels) == [6, 6, 12]
    for mod in kernels:
        expected = run_kernel(mod, target)
        assert np.abs(expected).max() > 0.1
        assert_each_computes(pointwise.candidates(mod), expected, target)


def test_pixel_blocks_are_whole_rows():
    assert pointwise.pixel_blocks(56, 56) == [3136, 224, 392]  # 4 and 7 rows
    assert pointwise.pixel_blocks(28, 28) == [784, 196, 392]
    assert pointwise.pixel_blocks(14, 14) == [196, 98]  # 7 rows: nearest both
    assert pointwise.pixel_blocks(7, 7) == [49]  # 1 row is too few
    assert pointwise.pixel_blocks(1, 1) == [1]


def test_blocks_of_rows_on_a_large_image_compute_the_kernel(pointwise_kernels):
    """56x56, where a block of 196 pixels would end mid-row: such a block
    computed wrong sums for the rows it shared (ResNet50's first stage)."""
    import tvm
    from tvm import te, topi

    target, _ = pointwise_kernels
    x = te.placeholder((1, 56, 56, 16), name="x")
    w = te.placeholder((1, 1, 16, 64), name="w")
    b = te.placeholder((1, 1, 1, 64), name="b")
    y = topi.nn.relu(topi.add(topi.nn.conv2d_nhwc(x, w, 1, 0, 1), b))
    mod = tvm.IRModule({"main": te.create_prim_func([x, w, b, y])})
    expected = run_kernel(mod, target)
    schedules = pointwise.candidates(mod)
    assert len(schedules) == 18  # 64, 32 and 16 outputs a block; 56, 4 and 7 rows; 1 or 2 pixels a step
    assert_each_computes(schedules, expected, target)


def test_a_kernel_that_is_not_a_1x1_convolution_has_none(pointwise_kernels):
    import tvm
    from tvm import te, topi

    x = te.placeholder((1, 8, 8, 16), name="x")
    w = te.placeholder((3, 3, 16, 64), name="w")
    conv = topi.nn.conv2d_nhwc(x, w, 1, 1, 1)
    assert pointwise.candidates(tvm.IRModule({"main": te.create_prim_func([x, w, conv])})) == []


def test_tuning_measures_them_once_and_the_build_applies_them(scons, run_wasm, tmp_path):
    model, model_json = pointwise_model(tmp_path / "model")
    top = tmp_path / "top"
    top.mkdir()
    args = [f"MODELS={model_json}", "TUNE_TRIALS=1", "TUNE_KERNELS=conv2d"]
    tuned = scons("tune", *args, cwd=top)
    assert "measuring 24 hand-written schedules" in tuned.stdout, tuned.stdout
    db = model_json.parent / "tuning" / "nhwc" / "simd128"
    records = tuning_records(db)
    assert sorted(sum(r[0] == i for r in records) for i in (0, 1, 2)) == [6, 6, 12], tuned.stdout
    assert "tuning 0 with 1 trials" in tuned.stdout, tuned.stdout  # they count as trials
    again = scons("tune", *args, cwd=top)
    assert "measuring 0 hand-written schedules" in again.stdout, again.stdout

    # Records lost but the fastest: the rest are measured beside it again,
    # their times put on the database's scale by its time now.
    big = max((0, 1, 2), key=lambda i: sum(r[0] == i for r in records))
    fastest = min((r for r in records if r[0] == big), key=lambda r: min(r[1][1]))
    kept = [r for r in records if r[0] != big] + [fastest]
    (db / "database_tuning_record.json").write_text("".join(json.dumps(r) + "\n" for r in kept))
    rescaled = scons("tune", *args, cwd=top)
    assert "measuring 11 hand-written schedules" in rescaled.stdout, rescaled.stdout
    assert "stored on the database's scale" in rescaled.stdout, rescaled.stdout
    records = tuning_records(db)
    assert sorted(sum(r[0] == i for r in records) for i in (0, 1, 2)) == [6, 6, 12]

    built = scons(f"MODELS={model_json}", cwd=top)
    assert "3/5 kernels tuned" in built.stdout, built.stdout  # not the transposes
    # the weights are packed [O / block, I, block], blocks of 16 outputs
    plan = json.loads((top / "build" / "pointwise" / "pointwise.plan.json").read_text())
    packed = sorted(t["shape"] for t in plan["tensors"] if t["region"] == "weights" and len(t["shape"]) == 3)
    assert packed == [[4, 64, 16], [4, 96, 16], [6, INPUTS, 16]], plan["tensors"]
    assert_matches_onnxruntime(run_wasm, top / "build" / "pointwise" / "run-model.wasm", model, tmp_path / "io")
