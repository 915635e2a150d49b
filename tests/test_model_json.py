"""model.json's format (site_scons/wasmml/model_json.py, docs/model-json.md):
every mistake is one line naming the file and the key, found by load()
when SCons reads the file, or by check_against_onnx() in the compile
before TVM runs; through scons, either stops the build with that line, a
non-zero status and no artifact of the model.
"""
import copy
import json
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO, save_model
from test_bad_models import assert_one_error_line, good_model, leftovers

sys.path.insert(0, str(REPO / "site_scons"))
from wasmml import model_json  # noqa: E402
from wasmml.compiler.errors import ModelError  # noqa: E402
from wasmml.compiler.onnx_import import input_shapes  # noqa: E402
from wasmml.model_json import ModelJsonError  # noqa: E402

CLASSIFIER = {
    "name": "m", "onnx": "m.onnx", "labels": "labels.txt",
    "inputs": {"input": {"shape": [1, 3, 224, 224], "dtype": "float32"}},
    "outputs": ["logits"],
    "preprocess": {"size": [224, 224], "crop_fraction": 0.875, "interpolation": "bicubic",
                   "mean": [127.0, 127.0, 127.0], "std": [128.0, 128.0, 128.0], "layout": "NCHW"},
    "license": "x", "source": "y",
}


def write(tmp_path, meta, raw=None):
    path = tmp_path / "model.json"
    path.write_text(raw if raw is not None else json.dumps(meta))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    return path


def error_of(call, *args):
    with pytest.raises(ModelJsonError) as e:
        call(*args)
    message = str(e.value)
    assert "\n" not in message, message
    return message


def edited(change):
    meta = copy.deepcopy(CLASSIFIER)
    change(meta)
    return meta


def setting(*keys_and_value):
    *keys, last, value = keys_and_value

    def change(meta):
        for k in keys:
            meta = meta[k]
        meta[last] = value
    return change


def removing(*keys):
    *keys, last = keys

    def change(meta):
        for k in keys:
            meta = meta[k]
        del meta[last]
    return change


def test_every_model_json_in_the_repository_passes():
    paths = sorted({*REPO.glob("models/*/model.json"), *REPO.glob("examples/**/model.json")})
    assert len(paths) >= 4
    checked = []
    for path in paths:
        meta = model_json.load(str(path))
        onnx_file = path.parent / meta["onnx"]
        if onnx_file.exists():  # else a build step makes it
            model_json.check_against_onnx(meta, onnx.load(str(onnx_file)), str(path))
            checked.append(meta["name"])
    assert "efficientnet_lite0" in checked


def test_a_valid_classifier_and_a_bare_model_pass(tmp_path):
    assert model_json.load(str(write(tmp_path, CLASSIFIER))) == CLASSIFIER
    assert model_json.load(str(write(tmp_path, {"name": "_m2", "onnx": "m.onnx"})))["name"] == "_m2"


@pytest.mark.parametrize("change,where,problem", [
    # unknown keys, at every level
    (setting("inputz", {}), "", r"unknown key 'inputz' \(known: name, onnx, labels, inputs, outputs, "
                                r"preprocess, license, source\)"),
    (lambda m: m["inputs"]["input"].update(shap=m["inputs"]["input"].pop("shape")),
     "inputs.input: ", r"unknown key 'shap' \(known: shape, dtype\)"),
    (setting("preprocess", "sizes", [1, 1]), "preprocess: ", r"unknown key 'sizes' \(known: size, "),
    # required keys
    (removing("name"), "", r"missing required key 'name'"),
    (removing("onnx"), "", r"missing required key 'onnx'"),
    (removing("inputs", "input", "dtype"), "inputs.input: ", r"missing required key 'dtype'"),
    (removing("preprocess", "layout"), "preprocess: ", r"missing required key 'layout'"),
    # types
    (setting("inputs", "input", "shape", "224"), "inputs.input.shape: ",
     r'expected a list of positive integers, got "224"$'),
    (setting("inputs", "input", "shape", [1, 3, 0, 224]), "inputs.input.shape: ", r"positive integers"),
    (setting("inputs", "input", "shape", [1, 3, True, 224]), "inputs.input.shape: ", r"positive integers"),
    (setting("inputs", "input", "shape", [1, 3, 224.0, 224]), "inputs.input.shape: ", r"positive integers"),
    (setting("inputs", "input", "dtype", "float"), "inputs.input.dtype: ", r"expected one of float32, .*got \"float\""),
    (setting("inputs", "input", [1, 3]), "inputs.input: ", r"expected an object"),
    (setting("inputs", [1, 3]), "inputs: ", r"expected an object"),
    (setting("onnx", 3), "onnx: ", r"expected a non-empty string"),
    (setting("license", None), "license: ", r"expected a string, got null"),
    (setting("outputs", "logits"), "outputs: ", r"expected a non-empty list"),
    (setting("outputs", []), "outputs: ", r"expected a non-empty list"),
    (setting("outputs", ["a", "a"]), "outputs: ", r"distinct"),
    # name: a file name, an SCons alias, NAME.OPTION=, a rustc library name
    (setting("name", "my-model"), "name: ", r"expected an identifier"),
    (setting("name", "a.b"), "name: ", r"expected an identifier"),
    (setting("name", "1st"), "name: ", r"expected an identifier"),
    (setting("name", "my model"), "name: ", r"expected an identifier"),
    (setting("name", ""), "name: ", r"expected an identifier"),
    # the labels file
    (setting("labels", "missing.txt"), "labels: ", r"file not found: missing\.txt"),
    # preprocess: what rust/vision would refuse when the module runs
    (setting("preprocess", "interpolation", "cubic"), "preprocess.interpolation: ",
     r"expected one of nearest, bilinear, bicubic, lanczos"),
    (setting("preprocess", "layout", "nchw"), "preprocess.layout: ", r"expected one of NCHW, NHWC"),
    (setting("preprocess", "channels", 2), "preprocess.channels: ", r"expected 1 or 3"),
    (setting("preprocess", "size", [224]), "preprocess.size: ", r"\[width, height\]"),
    (setting("preprocess", "crop_fraction", 0), "preprocess.crop_fraction: ", r"above 0 and at most 1"),
    (setting("preprocess", "crop_fraction", 1.5), "preprocess.crop_fraction: ", r"above 0 and at most 1"),
    (setting("preprocess", "std", [128.0, 0.0, 128.0]), "preprocess.std: ", r"positive numbers"),
    (setting("preprocess", "mean", [127.0]), "preprocess.mean: ", r"expected 3 values \(one per channel\), got 1"),
    (setting("preprocess", "channels", 1), "preprocess.mean: ", r"expected 1 values"),
    (removing("labels"), "", r"missing key 'labels', which rust/vision needs with 'preprocess'"),
    (removing("outputs"), "", r"missing key 'outputs'"),
    (lambda m: m["inputs"].update(other=m["inputs"]["input"]), "inputs: ", r"expected one input"),
    (setting("inputs", "input", "dtype", "int64"), "inputs.input.dtype: ", r"expected float32"),
    (setting("inputs", "input", "shape", [1, 3, 225, 224]), "inputs.input.shape: ",
     r"\[1, 3, 225, 224\] is not the image that preprocess makes, \[1, 3, 224, 224\]"),
    (setting("preprocess", "layout", "NHWC"), "inputs.input.shape: ", r"preprocess makes, \[1, 224, 224, 3\]"),
])
def test_each_mistake_is_one_line_naming_the_file_and_the_key(tmp_path, change, where, problem):
    path = write(tmp_path, edited(change))
    message = error_of(model_json.load, str(path))
    assert message.startswith(f"{path}: {where}"), message
    assert re.search(problem, message[len(f"{path}: {where}"):]), message


@pytest.mark.parametrize("raw,problem", [
    ('{"name": "m", "onnx": "m.onnx",}', r"model metadata is not valid JSON \(Expecting"),
    ('{"name": "m", "onnx": "m.onnx", "name": "n"}', r"duplicate key 'name'$"),
    ('{"name": "m", "onnx": "m.onnx", "inputs": {"x": {"shape": [NaN], "dtype": "float32"}}}',
     r"not valid JSON \(NaN is not a JSON number\)"),
    ('["name", "m"]', r'expected a JSON object, got \["name", "m"\]'),
    ('{"name": "m", "onnx": "m.onnx", "in\\nputs": 1}', r"unknown key 'in\\nputs'"),
])
def test_unreadable_files_are_one_line(tmp_path, raw, problem):
    path = write(tmp_path, None, raw)
    message = error_of(model_json.load, str(path))
    assert message.startswith(f"{path}: "), message
    assert re.search(problem, message), message
    missing = error_of(model_json.load, str(tmp_path / "absent.json"))
    assert missing == f"{tmp_path / 'absent.json'}: cannot read model metadata (No such file or directory)"


def test_shown_as_names_the_file_in_errors(tmp_path):
    path = write(tmp_path, {"name": "m"})
    assert error_of(lambda: model_json.load(str(path), shown_as="models/m/model.json")) == \
        "models/m/model.json: missing required key 'onnx'"


def test_the_module_is_cheap_to_import():
    """The SCons tool imports it on every build: the standard library only."""
    code = ("import sys; sys.path.insert(0, 'site_scons'); import wasmml.model_json; "
            "print(sorted(m for m in ('SCons', 'tvm', 'onnx', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_reference_names_every_key():
    doc = (REPO / "docs" / "model-json.md").read_text()
    for table in (model_json.TOP_KEYS, model_json.INPUT_KEYS, model_json.PREPROCESS_KEYS):
        for key, _, _, _ in table:
            assert f"| `{key}` |" in doc, key
    for name in model_json.INTERPOLATIONS + model_json.LAYOUTS:
        assert f"`{name}`" in doc, name


# --- against the ONNX file ------------------------------------------------------

def graph_model(x_dims=(1, 2, 6, 6), x_type=TensorProto.FLOAT, weight_as_input=False):
    """y = x + w, z = relu(x): two outputs, a weight w (listed as a graph
    input too when weight_as_input, as IR < 4 exports do)."""
    w = numpy_helper.from_array(np.ones((1, 2, 6, 6), dtype=np.float32), "w")
    inputs = [helper.make_tensor_value_info("x", x_type, None if x_dims is None else list(x_dims))]
    if weight_as_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 2, 6, 6]))
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"]), helper.make_node("Relu", ["x"], ["z"])], "g", inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def meta_for(shape=(1, 2, 6, 6), dtype="float32", outputs=("y", "z"), name="x"):
    return {"name": "m", "onnx": "m.onnx", "inputs": {name: {"shape": list(shape), "dtype": dtype}},
            "outputs": list(outputs)}


@pytest.mark.parametrize("model,meta", [
    (graph_model(), meta_for()),
    (graph_model(("N", 2, 6, 6)), meta_for((4, 2, 6, 6))),  # a dim_param takes model.json's value
    (graph_model((0, 2, 6, 6)), meta_for((3, 2, 6, 6))),  # so does a dim of 0
    (graph_model(None), meta_for((5, 5))),  # no shape in the ONNX file: any rank
    (graph_model(weight_as_input=True), meta_for()),
    (graph_model(), {"name": "m", "onnx": "m.onnx"}),
])
def test_what_agrees_with_the_onnx_file_passes(model, meta):
    model_json.check_against_onnx(model_json.check(meta, "m.json"), model, "m.json")


@pytest.mark.parametrize("model,meta,problem", [
    (graph_model(), meta_for((1, 2, 7, 6)),
     "inputs.x.shape: [1, 2, 7, 6] contradicts the ONNX input's [1, 2, 6, 6] "
     "(dim 2 is 7, the ONNX file fixes it at 6)"),
    (graph_model(("N", 2, 6, 6)), meta_for((4, 3, 6, 6)), "inputs.x.shape: [4, 3, 6, 6] contradicts "
     "the ONNX input's [N, 2, 6, 6] (dim 1 is 3, the ONNX file fixes it at 2)"),
    (graph_model(), meta_for((1, 2, 36)),
     "inputs.x.shape: [1, 2, 36] has rank 3, and the ONNX input has rank 4: [1, 2, 6, 6]"),
    (graph_model(), meta_for(dtype="float16"), "inputs.x.dtype: \"float16\", but m.onnx's input 'x' is float32"),
    (graph_model(x_type=TensorProto.INT64), meta_for(), "inputs.x.dtype: \"float32\", but m.onnx's input 'x' is int64"),
    (graph_model(), meta_for(outputs=("z", "y")),
     "outputs: [\"z\", \"y\"], but m.onnx's outputs are [\"y\", \"z\"] (the same names, in the same order)"),
    (graph_model(), meta_for(outputs=("y",)), "outputs: [\"y\"], but m.onnx's outputs are [\"y\", \"z\"]"),
    (graph_model(), meta_for(name="input"), "inputs.input: m.onnx has no input 'input' (its inputs: x)"),
    (graph_model(), meta_for(name="w"), "inputs.w: 'w' is a weight (an initializer) of m.onnx, not an input"),
    (graph_model(weight_as_input=True), meta_for(name="w"), "inputs.w: 'w' is a weight"),
])
def test_each_contradiction_with_the_onnx_file_is_one_line(model, meta, problem):
    message = error_of(model_json.check_against_onnx, model_json.check(meta, "m/model.json"), model,
                       "m/model.json")
    assert message.startswith("m/model.json: " + problem), message


def test_the_command_line_sets_dynamic_dims_and_may_not_contradict_static_ones():
    meta = {"name": "m", "onnx": "m.onnx"}
    dynamic = graph_model(("N", 2, 6, 6))
    assert input_shapes(dynamic, meta, ["x=8,2,6,6"]) == {"x": [8, 2, 6, 6]}
    with pytest.raises(ModelError) as e:
        input_shapes(dynamic, meta, ["x=8,2,6,5"])
    assert str(e.value) == ("--input-shape x=8,2,6,5 (TVM_INPUT_SHAPES): [8, 2, 6, 5] contradicts the ONNX "
                            "input's [N, 2, 6, 6] (dim 3 is 5, the ONNX file fixes it at 6)")
    with pytest.raises(ModelError, match=r"has rank 2, and the ONNX input has rank 4"):
        input_shapes(graph_model(), meta, ["x=72,1"])


# --- through scons ------------------------------------------------------------

def test_an_unknown_key_stops_the_build_before_anything_runs(scons, tmp_path):
    meta_path = save_model(tmp_path / "models", "typo", good_model(), [1, 2, 6, 6])
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, inputz=meta.pop("inputs"))))
    top = tmp_path / "top"
    top.mkdir()
    proc = scons(f"MODELS={meta_path}", "build/typo/libtypo.a", cwd=top, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    ours = [ln for ln in proc.stderr.splitlines() if "model.json" in ln]
    assert ours == [f"scons: *** {meta_path}: unknown key 'inputz' (known: name, onnx, labels, inputs, "
                    "outputs, preprocess, license, source)"], proc.stderr
    assert "Compiling model" not in proc.stdout
    assert leftovers(top, "typo") == []


def test_a_shape_that_contradicts_the_onnx_file_stops_its_compile(scons, tmp_path):
    """The ONNX input is [1, 2, 6, 6]; model.json says [1, 2, 7, 6]. Only
    the model is asked for: no cargo build."""
    meta_path = save_model(tmp_path / "models", "wrong_shape", good_model(), [1, 2, 7, 6])
    top = tmp_path / "top"
    top.mkdir()
    proc = scons(f"MODELS={meta_path}", "build/wrong_shape/libwrong_shape.a", cwd=top, check=False)
    assert_one_error_line(proc, "wrong_shape", re.escape(
        f"{meta_path}: inputs.x.shape: [1, 2, 7, 6] contradicts the ONNX input's [1, 2, 6, 6] "
        "(dim 2 is 7, the ONNX file fixes it at 6)") + "$")
    assert "[build/wrong_shape/libwrong_shape.a]" in proc.stderr
    assert leftovers(top, "wrong_shape") == []
