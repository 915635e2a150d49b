"""Small ONNX graphs, and a whole ResNet18 and MobileNetV2, compiled by the plugin and run
under wasmtime, must give onnxruntime's results.

Every graph is built in one scons run (-j2) with the default pipeline (nhwc);
each is then its own test. A few graphs are also built with the other
pipelines (fold-fuse, TVM's default), which must agree.
"""
import collections
import importlib.util
import json
import re
import shutil
import subprocess
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import wasmtime
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO

OPSET = 17
ATOL = 1e-4
# ResNet18's logits reach about 20 after 20 layers: float32 rounding grows with them
ATOLS = {"resnet18": 1e-3}
F32, I64, I32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32


def _rng(name):
    return np.random.default_rng(zlib.crc32(name.encode()))  # fixed per graph


def _model(name, nodes, inputs, outputs, weights=None):
    """inputs/outputs: [(name, elem_type, shape)]; weights: {name: array}."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (weights or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def conv(name):
    r = _rng(name)
    return _model(name, [
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2],
                         kernel_shape=[3, 3]),
    ], [("x", F32, [1, 3, 9, 9])], [("y", F32, [1, 4, 5, 5])],
        {"w": r.standard_normal((4, 3, 3, 3), dtype=np.float32),
         "b": r.standard_normal(4, dtype=np.float32)})


def conv_blocks(name):
    """A MobileNet-like block: pointwise, depthwise and grouped dilated
    convolutions with ReLU6 (Clip), a residual add, global average pooling,
    and an inner activation as a second output."""
    r = _rng(name)
    w = lambda *shape: (r.standard_normal(shape) * 0.3).astype(np.float32)  # noqa: E731
    return _model(name, [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "wd", "bd"], ["d"], kernel_shape=[3, 3], group=16,
                         pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["d", "lo", "hi"], ["r2"]),
        helper.make_node("Conv", ["r2", "wg"], ["g"], kernel_shape=[3, 3], group=4,
                         dilations=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["g", "w3", "b3"], ["p"], kernel_shape=[1, 1]),
        helper.make_node("Add", ["p", "x"], ["block"]),
        helper.make_node("GlobalAveragePool", ["block"], ["pooled"]),
    ], [("x", F32, [1, 8, 12, 12])], [("pooled", F32, [1, 8, 1, 1]), ("block", F32, [1, 8, 12, 12])],
        {"w1": w(16, 8, 1, 1), "b1": w(16), "wd": w(16, 1, 3, 3), "bd": w(16),
         "wg": w(16, 4, 3, 3), "w3": w(8, 16, 1, 1), "b3": w(8),
         "lo": np.array(0.0, dtype=np.float32), "hi": np.array(6.0, dtype=np.float32)})


def resnet_block(name):
    """A ResNet basic block on a batch of two: 3x3 convolutions with stride
    1 (the nhwc pipeline computes these by Winograd's F(4x4, 3x3)), batch
    normalisation after them (folded into their weights) and before them
    on the input (ResNet v2's pre-activation: computed), padded and
    unpadded, on images (14x14, then 12x12) that are not a whole number of
    4x4 tiles."""
    r = _rng(name)
    w = lambda *shape: (r.standard_normal(shape) * 0.2).astype(np.float32)  # noqa: E731

    def batch_norm(prefix, channels):
        return {f"{prefix}_scale": 1 + w(channels), f"{prefix}_bias": w(channels),
                f"{prefix}_mean": w(channels), f"{prefix}_var": 0.5 + r.random(channels, dtype=np.float32)}

    return _model(name, [
        helper.make_node("BatchNormalization", ["x", "n0_scale", "n0_bias", "n0_mean", "n0_var"], ["n0"]),
        helper.make_node("Relu", ["n0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "n1_scale", "n1_bias", "n1_mean", "n1_var"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "n2_scale", "n2_bias", "n2_mean", "n2_var"], ["n2"]),
        helper.make_node("Add", ["n2", "x"], ["sum"]),
        helper.make_node("Relu", ["sum"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["y"], kernel_shape=[3, 3], auto_pad="VALID"),
    ], [("x", F32, [2, 16, 14, 14])], [("y", F32, [2, 16, 12, 12])],
        {"w1": w(24, 16, 3, 3), "b1": w(24), **batch_norm("n1", 24), "w2": w(16, 24, 3, 3),
         **batch_norm("n2", 16), "w3": w(16, 16, 3, 3), **batch_norm("n0", 16)})


def mobile_head(name):
    """A MobileNetV3-like tail on a batch of three: a grouped strided
    convolution with bias, HardSwish, a squeeze-and-excite gate (global
    average pool, 1x1 convolutions, HardSigmoid), LeakyReLU, PRelu, then
    flatten, Gemm and Softmax."""
    r = _rng(name)
    w = lambda *shape: (r.standard_normal(shape) * 0.3).astype(np.float32)  # noqa: E731
    return _model(name, [
        helper.make_node("Conv", ["x", "wg", "bg"], ["c"], kernel_shape=[3, 3], group=2,
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c"], ["h"]),
        helper.make_node("GlobalAveragePool", ["h"], ["g"]),
        helper.make_node("Conv", ["g", "ws1"], ["s1"], kernel_shape=[1, 1]),
        helper.make_node("Relu", ["s1"], ["s2"]),
        helper.make_node("Conv", ["s2", "ws2"], ["s3"], kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["s3"], ["gate"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["h", "gate"], ["e"]),
        helper.make_node("LeakyRelu", ["e"], ["l"], alpha=0.1),
        helper.make_node("PRelu", ["l", "slope"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ], [("x", F32, [3, 4, 8, 8])], [("y", F32, [3, 5])],
        {"wg": w(8, 2, 3, 3), "bg": w(8), "ws1": w(4, 8, 1, 1), "ws2": w(8, 4, 1, 1),
         "slope": w(8, 1, 1), "wf": w(5, 8 * 4 * 4), "bf": w(5)})


def _generator(model_dir):
    """models/<model_dir>/make_onnx.py, loaded under its own name (every
    generated model's script is called make_onnx)."""
    path = REPO / "models" / model_dir / "make_onnx.py"
    spec = importlib.util.spec_from_file_location(f"make_{model_dir}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resnet18(name):
    """A whole ResNet18 (the generator of the benchmark's ResNet50, with
    basic blocks) on a batch of two 64x64 images: 20 convolutions, 11.7 M
    parameters, and its stage-1 3x3 convolutions by Winograd."""
    model = _generator("resnet50").resnet18(seed=zlib.crc32(name.encode()), size=64, batch=2)
    model.graph.name = name
    return model


def mobilenet_v2(name):
    """A whole MobileNetV2 on one 64x64 image: 52 convolutions, 17 of them
    depthwise, ReLU6 as Clip, 10 residual adds and 3.5 M parameters."""
    model = _generator("mobilenet_v2").mobilenet_v2(seed=zlib.crc32(name.encode()), size=64)
    model.graph.name = name
    return model


def test_generated_mobilenet_v2_has_mobilenet_v2s_shape():
    nodes = mobilenet_v2("mobilenet_v2").graph.node
    convs = [n for n in nodes if n.op_type == "Conv"]
    groups = [next(a.i for a in n.attribute if a.name == "group") for n in convs]
    depthwise = [g for g in groups if g > 1]
    assert (len(convs), len(depthwise)) == (52, 17)
    assert sum(n.op_type == "Add" for n in nodes) == 10
    weights = mobilenet_v2("mobilenet_v2").graph.initializer
    params = sum(np.prod(t.dims) for t in weights if t.name.split(".")[-1] not in ("mean", "var"))
    assert 3.50e6 < params < 3.51e6  # torchvision's mobilenet_v2: 3,504,872


def maxpool(name):
    return _model(name, [
        helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
    ], [("x", F32, [1, 2, 7, 7])], [("y", F32, [1, 2, 4, 4])])


def avgpool(name):
    # padding that is not counted: border windows divide by fewer elements
    return _model(name, [
        helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=0),
    ], [("x", F32, [1, 2, 7, 7])], [("y", F32, [1, 2, 4, 4])])


def split_pool_resize(name):
    """Split into two halves of the channels: max pooling then nearest
    upsampling (Resize) on one, global max pooling broadcast over the
    image on the other, a sigmoid gate, and the halves concatenated."""
    return _model(name, [
        helper.make_node("Split", ["x", "halves"], ["a", "b"], axis=1),
        helper.make_node("MaxPool", ["a"], ["pa"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Resize", ["pa", "", "scales"], ["ua"], mode="nearest"),
        helper.make_node("GlobalMaxPool", ["b"], ["gb"]),
        helper.make_node("Sigmoid", ["gb"], ["sb"]),
        helper.make_node("Mul", ["b", "sb"], ["mb"]),
        helper.make_node("Concat", ["ua", "mb"], ["y"], axis=1),
    ], [("x", F32, [2, 6, 8, 8])], [("y", F32, [2, 6, 8, 8])],
        {"halves": np.array([3, 3], dtype=np.int64),
         "scales": np.array([1, 1, 2, 2], dtype=np.float32)})


def resize_bilinear(name):
    """Bilinear upsampling by 2 with half-pixel centres (PyTorch's
    align_corners=False), as segmentation heads use."""
    return _model(name, [
        helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
    ], [("x", F32, [1, 3, 5, 7])], [("y", F32, [1, 3, 10, 14])],
        {"scales": np.array([1, 1, 2, 2], dtype=np.float32)})


def pads_and_pools(name):
    """Asymmetric, SAME_LOWER and SAME_UPPER padding, a strided dilated
    convolution, average pooling that counts the padding, and dilated max
    pooling."""
    r = _rng(name)
    return _model(name, [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[0, 1, 2, 0]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], kernel_shape=[3, 3], auto_pad="SAME_LOWER",
                         strides=[2, 2]),
        helper.make_node("AveragePool", ["c2"], ["p1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         count_include_pad=1),
        helper.make_node("MaxPool", ["c1"], ["p2"], kernel_shape=[2, 2], dilations=[2, 2]),
        helper.make_node("Conv", ["c1", "w3"], ["c3"], kernel_shape=[3, 3], dilations=[2, 2],
                         strides=[2, 1], pads=[2, 2, 2, 2]),
        helper.make_node("Conv", ["c1", "w4"], ["c4"], kernel_shape=[2, 2], auto_pad="SAME_UPPER"),
    ], [("x", F32, [1, 3, 9, 8])],
        [("p1", F32, [1, 4, 5, 4]), ("p2", F32, [1, 4, 7, 5]), ("c3", F32, [1, 4, 5, 7]),
         ("c4", F32, [1, 2, 9, 7])],
        {"w1": r.standard_normal((4, 3, 3, 3), dtype=np.float32),
         "w2": r.standard_normal((4, 4, 3, 3), dtype=np.float32),
         "w3": r.standard_normal((4, 4, 3, 3), dtype=np.float32),
         "w4": r.standard_normal((2, 4, 2, 2), dtype=np.float32)})


def broadcast_both_ways(name):
    """Operands that are each expanded along another axis ([2,1,4] and
    [3,1]), a scalar, a Where with a broadcast condition, and Clip with
    attribute-free bounds as inputs."""
    return _model(name, [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Mul", ["s", "two"], ["m"]),
        helper.make_node("Greater", ["b", "zero"], ["positive"]),
        helper.make_node("Where", ["positive", "m", "a"], ["w"]),
        helper.make_node("Clip", ["w", "lo", "hi"], ["y"]),
    ], [("a", F32, [2, 1, 4]), ("b", F32, [3, 1])], [("y", F32, [2, 3, 4])],
        {"two": np.float32(2.0), "zero": np.float32(0.0),
         "lo": np.float32(-1.5), "hi": np.float32(2.5)})


def weights_from_nodes(name):
    """Weights that nodes make (Constant, ConstantOfShape) instead of
    initializers, and outputs that are the input itself and a constant."""
    r = _rng(name)
    weight = numpy_helper.from_array(r.standard_normal((4, 3), dtype=np.float32), "w")
    return _model(name, [
        helper.make_node("Constant", [], ["w"], value=weight),
        helper.make_node("ConstantOfShape", ["bias_shape"], ["bias"],
                         value=numpy_helper.from_array(np.array([0.25], dtype=np.float32))),
        helper.make_node("MatMul", ["x", "w"], ["t"]),
        helper.make_node("Add", ["t", "bias"], ["y"]),
        helper.make_node("Identity", ["x"], ["same"]),
        helper.make_node("Constant", [], ["table"],
                         value=numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3))),
    ], [("x", F32, [2, 4])], [("y", F32, [2, 3]), ("same", F32, [2, 4]), ("table", I64, [2, 3])],
        {"bias_shape": np.array([3], dtype=np.int64)})


def shape_inputs(name):
    """Expand, Tile, Slice, Pad and Reshape whose shapes, repeats, bounds
    and pads are initializers, as exporters write them: the importer must
    see their values for the shapes to be known at build time."""
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    return _model(name, [
        helper.make_node("Expand", ["x", "shape"], ["e"]),
        helper.make_node("Tile", ["e", "repeats"], ["t"]),
        helper.make_node("Slice", ["t", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Pad", ["s", "pads", "fill"], ["p"], mode="constant"),
        helper.make_node("Reshape", ["p", "flat"], ["y"]),
    ], [("x", F32, [1, 3, 1, 4])], [("y", F32, [2, 3, 36])],
        {"shape": i64(2, 3, 5, 4), "repeats": i64(1, 1, 1, 2), "starts": i64(1, 0),
         "ends": i64(5, 8), "axes": i64(2, 3), "steps": i64(1, 2),
         "pads": i64(0, 0, 1, 1, 0, 0, 1, 1), "fill": np.float32(-1.0), "flat": i64(0, 3, -1)})


def gemm(name):
    r = _rng(name)
    return _model(name, [
        helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0),
    ], [("x", F32, [2, 16])], [("y", F32, [2, 8])],
        {"w": r.standard_normal((8, 16), dtype=np.float32),
         "c": r.standard_normal(8, dtype=np.float32)})


def matmul_add(name):
    r = _rng(name)
    return _model(name, [
        helper.make_node("MatMul", ["x", "w"], ["t"]),
        helper.make_node("Add", ["t", "b"], ["y"]),
    ], [("x", F32, [3, 16])], [("y", F32, [3, 8])],
        {"w": r.standard_normal((16, 8), dtype=np.float32),
         "b": r.standard_normal(8, dtype=np.float32)})


def elementwise(name):
    r = _rng(name)
    # per-channel constants, broadcast over N, H, W
    return _model(name, [
        helper.make_node("Add", ["x", "c"], ["t0"]),
        helper.make_node("Mul", ["t0", "d"], ["t1"]),
        helper.make_node("Relu", ["t1"], ["t2"]),
        helper.make_node("Sigmoid", ["t1"], ["t3"]),
        helper.make_node("Mul", ["t2", "t3"], ["t4"]),
        helper.make_node("Tanh", ["t4"], ["t5"]),
        helper.make_node("Add", ["t5", "x"], ["y"]),
    ], [("x", F32, [2, 3, 4, 5])], [("y", F32, [2, 3, 4, 5])],
        {"c": r.standard_normal((3, 1, 1), dtype=np.float32),
         "d": r.standard_normal((3, 1, 1), dtype=np.float32)})


def reshape_transpose_flatten(name):
    return _model(name, [
        helper.make_node("Reshape", ["x", "shape"], ["t0"]),
        helper.make_node("Transpose", ["t0"], ["t1"], perm=[0, 2, 1]),
        helper.make_node("Flatten", ["t1"], ["y"], axis=1),
    ], [("x", F32, [2, 3, 4])], [("y", F32, [2, 12])],
        {"shape": np.array([2, 4, 3], dtype=np.int64)})


def softmax(name):
    return _model(name, [
        helper.make_node("Softmax", ["x"], ["y"], axis=-1),
    ], [("x", F32, [3, 10])], [("y", F32, [3, 10])])


def concat(name):
    r = _rng(name)
    return _model(name, [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Concat", ["x", "r", "k"], ["y"], axis=1),
    ], [("x", F32, [2, 3, 4])], [("y", F32, [2, 8, 4])],
        {"k": r.standard_normal((2, 2, 4), dtype=np.float32)})


def two_in_two_out(name):
    # a and b have the same size, so inputs taken in the wrong order would
    # still run, and give wrong results; the outputs differ in shape.
    r = _rng(name)
    return _model(name, [
        helper.make_node("MatMul", ["a", "w"], ["p"]),
        helper.make_node("Tanh", ["b"], ["t"]),
        helper.make_node("Add", ["t", "one"], ["q"]),
    ], [("a", F32, [2, 8]), ("b", F32, [4, 4])], [("p", F32, [2, 5]), ("q", F32, [4, 4])],
        {"w": r.standard_normal((8, 5), dtype=np.float32), "one": np.float32(1.0)})


def int64_ops(name):
    # integer arithmetic, and an integer input cast to float for a second output
    return _model(name, [
        helper.make_node("Add", ["x", "c"], ["t"]),
        helper.make_node("Mul", ["t", "x"], ["y"]),
        helper.make_node("Cast", ["x"], ["xf"], to=F32),
        helper.make_node("Mul", ["xf", "half"], ["z"]),
    ], [("x", I64, [2, 5])], [("y", I64, [2, 5]), ("z", F32, [2, 5])],
        {"c": np.arange(5, dtype=np.int64) - 2, "half": np.float32(0.5)})


def int32_ops(name):
    return _model(name, [
        helper.make_node("Sub", ["x", "c"], ["t"]),
        helper.make_node("Abs", ["t"], ["a"]),
        helper.make_node("Max", ["a", "x"], ["y"]),
    ], [("x", I32, [3, 4])], [("y", I32, [3, 4])],
        {"c": np.array([3, -7, 11, 0], dtype=np.int32)})


GRAPHS = {f.__name__: f for f in [
    conv, conv_blocks, resnet_block, mobile_head, resnet18, mobilenet_v2, pads_and_pools, maxpool, avgpool, split_pool_resize,
    resize_bilinear, shape_inputs, gemm, matmul_add, elementwise, broadcast_both_ways, reshape_transpose_flatten,
    softmax, concat, two_in_two_out, weights_from_nodes, int64_ops, int32_ops]}
PIPELINE_GRAPHS = ["conv", "conv_blocks", "resnet_block", "elementwise"]  # also built with the other pipelines
OTHER_PIPELINES = ["fold-fuse", "default"]

NP_TYPE = {F32: np.float32, I64: np.int64, I32: np.int32}


def _random_input(rng, vi):
    t = vi.type.tensor_type
    shape = [d.dim_value for d in t.shape.dim]
    dtype = NP_TYPE[t.elem_type]
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-1000, 1000, size=shape, dtype=dtype)
    return (rng.standard_normal(shape) * 2).astype(dtype)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Every graph as <dir>/<name>/model.json + <name>.onnx: {name: (onnx model, model.json)}."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, make in GRAPHS.items():
        model = make(name)
        d = root / name
        d.mkdir()
        onnx.save(model, d / f"{name}.onnx")
        meta = {
            "name": name, "onnx": f"{name}.onnx",
            "inputs": {vi.name: {"shape": [x.dim_value for x in vi.type.tensor_type.shape.dim],
                                 "dtype": np.dtype(NP_TYPE[vi.type.tensor_type.elem_type]).name}
                       for vi in model.graph.input},
            "outputs": [vi.name for vi in model.graph.output],
        }
        (d / "model.json").write_text(json.dumps(meta))
        out[name] = (model, d / "model.json")
    return out


def _build(scons, models, names, top, *args):
    top.mkdir()
    proc = scons("-j2", "-k", "MODELS=" + ",".join(str(models[n][1]) for n in names), *args,
                 cwd=top, check=False)
    return top / "build", proc


@pytest.fixture(scope="module")
def built(scons, models, tmp_path_factory):
    """All graphs, built in one scons run with the default TVM_PIPELINE."""
    return _build(scons, models, GRAPHS, tmp_path_factory.mktemp("small") / "top")


@pytest.fixture(scope="module")
def built_other_pipelines(scons, models, tmp_path_factory):
    """PIPELINE_GRAPHS built with each of OTHER_PIPELINES: {pipeline: build}."""
    return {pipeline: _build(scons, models, PIPELINE_GRAPHS,
                             tmp_path_factory.mktemp(pipeline) / "top", f"TVM_PIPELINE={pipeline}")
            for pipeline in OTHER_PIPELINES}


@pytest.fixture(scope="module")
def built_relaxed(scons, models, tmp_path_factory):
    return _build(scons, models, ["conv_blocks"], tmp_path_factory.mktemp("relaxed") / "top",
                  "TVM_TARGET_FEATURES=+simd128,+relaxed-simd")


def _wasm(build, name):
    build_dir, proc = build
    wasm = build_dir / name / "run-model.wasm"
    assert wasm.is_file(), f"{name} was not built:\n{proc.stdout}\n{proc.stderr}"
    return wasm


def _run(run_wasm, wasm, model, io_dir):
    """Runs the module on seeded random inputs; returns (inputs, outputs)."""
    rng = _rng(model.graph.name)
    io_dir.mkdir()
    inputs = {}
    for i, vi in enumerate(model.graph.input):
        x = inputs[vi.name] = _random_input(rng, vi)
        (io_dir / f"input_{i}.bin").write_bytes(x.astype(x.dtype.newbyteorder("<")).tobytes())
    run_wasm(wasm, io_dir)
    outputs = []
    for i, vi in enumerate(model.graph.output):
        t = vi.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        dtype = np.dtype(NP_TYPE[t.elem_type]).newbyteorder("<")
        data = (io_dir / f"output_{i}.bin").read_bytes()
        assert len(data) == int(np.prod(shape)) * dtype.itemsize, f"output {i} ({vi.name}) size"
        outputs.append(np.frombuffer(data, dtype).reshape(shape))
    assert not (io_dir / f"output_{len(outputs)}.bin").exists(), "more outputs than the graph has"
    return inputs, outputs


def _reference(model, inputs):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def _assert_outputs(model, got, expected):
    assert len(got) == len(expected)
    for vi, g, e in zip(model.graph.output, got, expected):
        assert g.shape == e.shape, vi.name
        if np.issubdtype(e.dtype, np.integer):
            np.testing.assert_array_equal(g, e, err_msg=vi.name)
        else:
            atol = ATOLS.get(model.graph.name, ATOL)
            np.testing.assert_allclose(g, e, atol=atol, rtol=0, err_msg=vi.name)


@pytest.mark.parametrize("name", GRAPHS)
def test_matches_onnxruntime(name, models, built, run_wasm, tmp_path):
    model = models[name][0]
    inputs, got = _run(run_wasm, _wasm(built, name), model, tmp_path / "io")
    _assert_outputs(model, got, _reference(model, inputs))


@pytest.mark.parametrize("name", GRAPHS)
def test_imports_only_wasi(name, built):
    module = wasmtime.Module(wasmtime.Engine(), _wasm(built, name).read_bytes())
    assert module.imports, "a WASI command imports at least fd_write"
    assert {imp.module for imp in module.imports} == {"wasi_snapshot_preview1"}


def test_all_graphs_build_cleanly(built):
    build_dir, proc = built
    assert proc.returncode == 0, proc.stderr
    for name in GRAPHS:
        assert "Compiling model %s with TVM (wasm32 +simd128, nhwc)" % name in proc.stdout
        assert sorted(p.name for p in (build_dir / name).iterdir()) == sorted(
            [f"lib{name}.a", f"{name}.meta.json", f"{name}.plan.json", f"{name}.weights",
             "run-model.wasm"])


def _kernels(build, name):
    return json.loads((build[0] / name / f"{name}.plan.json").read_text())["kernels"]


def test_nhwc_fuses_each_activation_into_its_convolution(built):
    """The default pipeline moves the convolutions to NHWC, and ReLU6 and the
    residual add move with them into the convolutions' kernels: the only
    other kernels are the pooling and the transposes at the graph's edges."""
    kernels = _kernels(built, "conv_blocks")
    convs = [k for k in kernels if "conv2d" in k]
    assert len(convs) == 4, kernels
    assert sum("maximum" in k and "minimum" in k for k in convs) == 2, kernels
    assert sum(k.count("_add") == 2 for k in convs) == 1, kernels  # bias and residual
    others = [k for k in kernels if k not in convs]
    assert all(re.fullmatch(r"transpose\d*|mean", k) for k in others), kernels


def test_nhwc_computes_3x3_stride_1_convolutions_by_winograd(built):
    """resnet_block's three convolutions, padded or not, the first two with
    their batch norm folded into the weights and their ReLU fused;
    conv_blocks' grouped and depthwise ones and conv's strided one stay
    direct."""
    kernels = _kernels(built, "resnet_block")
    convs = [k for k in kernels if "conv2d" in k]
    assert len(convs) == 3 and all("conv2d_winograd" in k for k in convs), convs
    assert sum("_relu" in k for k in convs) == 2, convs
    assert not any("_subtract" in k or "_divide" in k for k in convs), convs
    # the batch norm on the input cannot be folded: it is computed, and its
    # ReLU fuses with it
    assert [k for k in kernels if "_subtract" in k and "_relu" in k], kernels
    for name in ("conv", "conv_blocks"):
        assert not any("winograd" in k for k in _kernels(built, name)), name


def test_winograd_tiles_small_images_by_2x2(built):
    """ResNet18 on 64x64: stage 1's 16x16 images have enough tiles of 4x4
    (F(4x4, 3x3): weights packed 6x6), stage 2's 8x8 ones only of 2x2
    (F(2x2, 3x3): 4x4), and stages 3 and 4 too few of either (direct)."""
    plan = json.loads((built[0] / "resnet18" / "resnet18.plan.json").read_text())
    # packed [alpha, alpha, O / 16, I, 16]
    packed = collections.Counter(tuple(t["shape"][:2]) for t in plan["tensors"]
                                 if t["region"] == "weights" and len(t["shape"]) == 5)
    assert packed == {(6, 6): 4, (4, 4): 3}, packed
    assert all(t["shape"][4] == 16 for t in plan["tensors"] if len(t["shape"]) == 5), plan["tensors"]


@pytest.mark.parametrize("pipeline", OTHER_PIPELINES)
@pytest.mark.parametrize("name", PIPELINE_GRAPHS)
def test_pipelines_agree(name, pipeline, models, built, built_other_pipelines, run_wasm, tmp_path):
    model = models[name][0]
    other = built_other_pipelines[pipeline]
    assert f"Compiling model {name} with TVM (wasm32 +simd128, {pipeline})" in other[1].stdout
    inputs, ours = _run(run_wasm, _wasm(built, name), model, tmp_path / "nhwc")
    inputs2, theirs = _run(run_wasm, _wasm(other, name), model, tmp_path / pipeline)
    # The pipelines really differ: TVM's default fuses less, and nhwc moves
    # convolutions (it is fold-fuse where there are none).
    if pipeline == "default" or name != "elementwise":
        assert _kernels(built, name) != _kernels(other, name)
    assert all(np.array_equal(inputs[k], inputs2[k]) for k in inputs)
    expected = _reference(model, inputs)
    _assert_outputs(model, theirs, expected)
    _assert_outputs(model, ours, theirs)


def test_relaxed_simd_fuses_every_multiply_add(models, built_relaxed, run_wasm, tmp_path):
    """With relaxed SIMD, LLVM may contract a*b+c into f32x4.relaxed_madd
    (wasmtime's vfmadd): no vector multiply is left on its own, and the
    results still match onnxruntime (one rounding instead of two)."""
    model = models["conv_blocks"][0]
    inputs, got = _run(run_wasm, _wasm(built_relaxed, "conv_blocks"), model, tmp_path / "io")
    _assert_outputs(model, got, _reference(model, inputs))
    archive = built_relaxed[0] / "conv_blocks" / "libconv_blocks.a"
    objdump = shutil.which("llvm-objdump") or "llvm-objdump"
    code = subprocess.run([objdump, "-d", str(archive)], capture_output=True, text=True,
                          check=True).stdout
    # LLVM 14's objdump prints relaxed SIMD opcodes as <unknown>
    assert "f32x4.mul" not in code and ("relaxed_madd" in code or "<unknown>" in code)
