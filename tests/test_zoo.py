"""The onnx package's own copies of model-zoo networks (onnx/backend/test/
data/light: the real graphs, IR version 3 with every weight also listed
among the graph inputs, each float weight a ConstantOfShape of 0.02),
compiled through the plugin in one scons run and compared with onnxruntime.
All nine compile; left out for time: vgg19 and zfnet512 (their fully
connected weights make run-model.wasm 350-575 MB) and densenet121 (slowest)."""
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import assert_matches_onnxruntime, model_input, save_model

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO = ["bvlc_alexnet", "squeezenet", "shufflenet", "resnet50", "inception_v1", "inception_v2"]
# Every channel of a layer computes the same value (constant weights), so
# the softmax is a uniform 0.001 whatever the network computed: its input,
# the logits, is compared too, as a second output. With no normalisation the
# values grow layer by layer (vgg19's logits reach 2.6e31), so the tolerance
# is relative to each output's largest magnitude; float32 sums in another
# order (NHWC layouts, fused epilogues) differ here by up to 1.1e-5 of it.
RELATIVE = 1e-4


def with_logits(model):
    """The model with the input of its final Softmax as a second output (of
    the Softmax's shape and type)."""
    last = model.graph.node[-1]
    if last.op_type == "Softmax":
        logits = model.graph.output.add()
        logits.CopyFrom(next(o for o in model.graph.output if o.name == last.output[0]))
        logits.name = last.input[0]
    return model


@pytest.fixture(scope="module")
def zoo(scons, tmp_path_factory):
    """{name: (model as built, its run-model.wasm)}, all built by one scons -j2."""
    root = tmp_path_factory.mktemp("zoo")
    (root / "models").mkdir()
    models, metas = {}, []
    for name in ZOO:
        model = with_logits(onnx.load(LIGHT / f"light_{name}.onnx"))
        shape = [d.dim_value for d in model_input(model).type.tensor_type.shape.dim]
        metas.append(save_model(root / "models" / name, name, model, shape))
        models[name] = model
    top = root / "top"
    top.mkdir()
    scons("-j2", "MODELS=" + ",".join(map(str, metas)), cwd=top)
    return {name: (model, top / "build" / name / "run-model.wasm") for name, model in models.items()}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_onnxruntime(name, zoo, run_wasm, tmp_path):
    model, wasm = zoo[name]
    assert_matches_onnxruntime(run_wasm, wasm, model, tmp_path / "io",
                               atol=lambda expected: RELATIVE * float(np.max(np.abs(expected))))
