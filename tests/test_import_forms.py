"""Graph forms that TVM's ONNX importer takes wrongly, as the compiler
imports them: weights also listed among the graph inputs (IR 3, or
keep_initializers_as_inputs exports), batch norm statistics that are not
1-D, and Dropout and Sum, which kept the nhwc pipeline's graphs in NCHW.
Compiled by TVM for this machine (no cargo) and compared with onnxruntime;
the wasm builds of whole such graphs are in test_zoo."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "site_scons"))
from wasmml.compiler import cli, errors, onnx_import, pipelines  # noqa: E402

F32 = TensorProto.FLOAT
RNG = np.random.default_rng(11)


def _weights(**shapes):
    return {name: (RNG.standard_normal(shape) * 0.5).astype(np.float32) for name, shape in shapes.items()}


def _variances(name, shape):
    return {name: (0.5 + RNG.random(shape)).astype(np.float32)}


def weights_as_inputs():
    """An IR 3 export: every weight among the graph inputs, one before the
    data, one read by nothing ([1, 1], as the zoo's resnet50 has); a folded
    batch norm, a Dropout whose mask nothing reads and a Sum of three."""
    weights = {**_weights(w=(8, 3, 3, 3), b=(8,), s=(8,), beta=(8,), m=(8,), w2=(8, 8, 1, 1),
                          unused=(1, 1)), **_variances("v", (8,))}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "beta", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Dropout", ["r"], ["d", "mask"], ratio=0.3),
             helper.make_node("Conv", ["d", "w2"], ["c2"]),
             helper.make_node("Sum", ["c2", "d", "r"], ["y"])]
    info = {k: helper.make_tensor_value_info(k, F32, v.shape) for k, v in weights.items()}
    inputs = [info["w"], helper.make_tensor_value_info("x", F32, [1, 3, 8, 8])] + \
        [v for k, v in info.items() if k != "w"]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", F32, [1, 8, 8, 8])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)


def batch_norm(statistics, opset=15, after_conv=False, **attrs):
    """x [2, 8, 6, 6] -> (Conv or Relu) -> BatchNormalization 'the_norm' whose
    statistics (initializers) have the shape `statistics`."""
    weights = {**_weights(w=(8, 8, 1, 1), s=statistics, beta=statistics, m=statistics),
               **_variances("v", statistics)}
    first = (helper.make_node("Conv", ["x", "w"], ["h"]) if after_conv
             else helper.make_node("Relu", ["x"], ["h"]))
    graph = helper.make_graph(
        [first, helper.make_node("BatchNormalization", ["h", "s", "beta", "m", "v"], ["y"], name="the_norm",
                                 **attrs)], "g",
        [helper.make_tensor_value_info("x", F32, [2, 8, 6, 6])],
        [helper.make_tensor_value_info("y", F32, [2, 8, 6, 6])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _input(model):
    weights = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in weights)
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    return inp.name, RNG.standard_normal(shape).astype(np.float32)


def onnxruntime_output(model, name, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x})[0]


def host_output(model, name, x, pipeline="nhwc"):
    """The model as the compiler imports and lowers it, built for this
    machine; also the notes of the lowering (such as a layout kept)."""
    import tvm
    from tvm import relax

    target = tvm.target.Target("llvm")
    stages = cli.Stages()
    lowered = pipelines.lower(onnx_import.to_relax(model, onnx_import.input_shapes(model, {}, []), pipeline), target, pipeline,
                       stages=stages)
    vm = relax.VirtualMachine(relax.build(lowered, target, relax_pipeline=None), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy(), stages.notes


def test_weights_listed_as_inputs_are_weights():
    model = weights_as_inputs()
    onnx.checker.check_model(model)
    assert onnx_import.input_shapes(model, {}, []) == {"x": [1, 3, 8, 8]}
    name, x = _input(model)
    got, notes = host_output(model, name, x)
    np.testing.assert_allclose(got, onnxruntime_output(model, name, x), rtol=1e-5, atol=1e-5)
    assert notes == []  # Dropout and Sum no longer keep the graph in NCHW


def test_the_plan_has_one_input_and_the_layout_is_nhwc(repo, tmp_path):
    """The compiler as $TVMCOM runs it: the plan's inputs (run-model's
    input_N.bin) are the graph's one data input, not its weights."""
    from wasmml import toolchain

    onnx.save(weights_as_inputs(), tmp_path / "old.onnx")
    (tmp_path / "model.json").write_text(json.dumps({"name": "old", "onnx": "old.onnx"}))
    proc = subprocess.run(
        [sys.executable, str(repo / "site_scons" / "wasmml" / "compiler" / "__main__.py"), "--name", "old",
         "--meta", str(tmp_path / "model.json"), "--onnx", str(tmp_path / "old.onnx"),
         "--archive", str(tmp_path / "libold.a"), "--plan", str(tmp_path / "old.plan.json"),
         "--weights", str(tmp_path / "old.weights"), "--llvm-ar", toolchain.find_llvm_ar()],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "kept in NCHW" not in proc.stdout, proc.stdout
    plan = json.loads((tmp_path / "old.plan.json").read_text())
    inputs = [(i["name"], plan["tensors"][i["tensor"]]["shape"]) for i in plan["inputs"]]
    assert inputs == [("x", [1, 3, 8, 8])]


def test_per_activation_statistics_match_onnxruntime():
    """Opset 7, spatial=0: one statistic per activation, [C, H, W]."""
    model = batch_norm([8, 6, 6], opset=7, spatial=0)
    name, x = _input(model)
    got, _ = host_output(model, name, x)
    np.testing.assert_allclose(got, onnxruntime_output(model, name, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("statistics, after_conv, opset, attrs", [
    ([8, 1], False, 15, {}),
    ([1, 8, 1, 1], False, 15, {}),
    ([8, 1], True, 15, {}),  # foldable into the convolution: refused all the same
    ([8, 1, 1], False, 7, {"spatial": 0}),  # per activation, but not one sample's shape
])
def test_statistics_onnxruntime_refuses_are_one_line_naming_the_node(statistics, after_conv, opset, attrs):
    model = batch_norm(statistics, opset=opset, after_conv=after_conv, **attrs)
    name, x = _input(model)
    with pytest.raises(Exception, match="BatchNormalization"):
        onnxruntime_output(model, name, x)
    with pytest.raises(errors.ModelError) as error:
        onnx_import.to_relax(model, onnx_import.input_shapes(model, {}, []))
    message = str(error.value)
    assert message.startswith(
        f"node 'the_norm' (operator BatchNormalization): its scale has shape {statistics}, "), message
    assert "\n" not in message
