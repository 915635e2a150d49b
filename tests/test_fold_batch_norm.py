"""Batch norm folded into the convolution before it (wasmml.compiler.fold_batch_norm):
the folded model computes what the original does, by onnxruntime, and only
pairs whose fold is exact are folded. No TVM here: the compiled graphs with
batch norm (resnet_block, resnet18, mobilenet_v2) are in test_small_graphs."""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "site_scons"))
from wasmml.compiler.fold_batch_norm import fold_batch_norms  # noqa: E402

RNG = np.random.default_rng(7)


def _weights(**shapes):
    return {name: (RNG.standard_normal(shape) * 0.3).astype(np.float32)
            for name, shape in shapes.items()}


def _norm_params(prefix, channels):
    return {f"{prefix}_scale": 1 + _weights(s=(channels,))["s"],
            f"{prefix}_bias": _weights(b=(channels,))["b"],
            f"{prefix}_mean": _weights(m=(channels,))["m"],
            f"{prefix}_var": (0.2 + RNG.random(channels)).astype(np.float32)}


def _norm(prefix, data, out, **attrs):
    return helper.make_node("BatchNormalization", [data] + [f"{prefix}_{p}" for p in
                            ("scale", "bias", "mean", "var")], [out], **attrs)


def _model(nodes, weights, outputs, ir_version=8):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 6, 6])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", "c", "h", "w"]) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    if ir_version < 4:  # initializers listed among the inputs, as old exporters wrote
        graph.input.extend(helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape)
                           for k, v in weights.items())
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version
    return model


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _assert_same_results(model):
    folded = fold_batch_norms(model)
    onnx.checker.check_model(folded)
    x = RNG.standard_normal((2, 8, 6, 6)).astype(np.float32)
    for got, want in zip(_run(folded, x), _run(model, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return folded


def _ops(model):
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("ir_version", [8, 3])
def test_conv_batch_norm_pairs_become_one_conv(ir_version):
    """With and without a conv bias, grouped, with its own epsilon, and two
    convolutions sharing one weight: each pair is one Conv, and the old
    weights and statistics are gone from the model."""
    weights = {**_weights(w=(8, 8, 3, 3), b=(8,), wg=(8, 2, 3, 3)),
               **_norm_params("n1", 8), **_norm_params("n2", 8), **_norm_params("n3", 8),
               **_norm_params("n4", 8)}
    model = _model([
        helper.make_node("Conv", ["x", "w", "b"], ["c1"], pads=[1, 1, 1, 1]),
        _norm("n1", "c1", "y1"),
        helper.make_node("Conv", ["x", "w"], ["c2"]),
        _norm("n2", "c2", "y2", epsilon=1e-3),
        helper.make_node("Conv", ["x", "wg"], ["c3"], group=4, strides=[2, 2]),
        _norm("n3", "c3", "n3_out"),
        helper.make_node("Relu", ["n3_out"], ["y3"]),
        helper.make_node("Conv", ["x", "w"], ["c4"], dilations=[2, 2]),
        _norm("n4", "c4", "y4"),
    ], weights, ["y1", "y2", "y3", "y4"], ir_version)
    folded = _assert_same_results(model)
    assert _ops(folded) == ["Conv", "Conv", "Conv", "Relu", "Conv"]
    names = {t.name for t in folded.graph.initializer}
    assert not names & set(weights), names
    listed = names if ir_version < 4 else set()
    assert {i.name for i in folded.graph.input} == {"x"} | listed


def test_pairs_whose_fold_is_not_exact_stay():
    """The conv's output also read elsewhere, or a graph output; statistics
    computed by a node; a batch norm on the input: all left as they are."""
    weights = {**_weights(w=(8, 8, 1, 1)), **_norm_params("n1", 8), **_norm_params("n2", 8),
               **_norm_params("n3", 8), **_norm_params("n4", 8)}
    model = _model([
        helper.make_node("Conv", ["x", "w"], ["c1"]),
        _norm("n1", "c1", "y1"),
        helper.make_node("Relu", ["c1"], ["y1b"]),
        helper.make_node("Conv", ["x", "w"], ["c2"]),
        _norm("n2", "c2", "y2"),
        helper.make_node("Conv", ["x", "w"], ["c3"]),
        helper.make_node("Neg", ["n3_mean"], ["computed_mean"]),
        helper.make_node("BatchNormalization", ["c3", "n3_scale", "n3_bias", "computed_mean",
                                                "n3_var"], ["y3"]),
        _norm("n4", "x", "y4"),
    ], weights, ["y1", "y1b", "c2", "y2", "y3", "y4"])
    assert fold_batch_norms(model) is model
    assert _run(model, RNG.standard_normal((2, 8, 6, 6)).astype(np.float32))  # a valid model


def test_a_model_without_pairs_is_returned_as_it_is():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], {}, ["y"])
    assert fold_batch_norms(model) is model
