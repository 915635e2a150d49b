"""ResNet50 (v1.5: the stride on each stage's 3x3 convolution) as an ONNX
graph with seeded random weights, written without any download: speed does
not depend on the weights, and the layers, shapes and operators are those of
the torchvision export (Conv, BatchNormalization, Relu, MaxPool, Add,
GlobalAveragePool, Flatten, Gemm; opset 13).

    python models/resnet50/make_onnx.py     # models/resnet50/resnet50.onnx (about 100 MB)

resnet18() makes the same family with basic blocks, at any image size and
batch: tests/test_small_graphs.py compares a small one with onnxruntime.

The file is not in the repository (git-ignored): tools/bench_inference.py
makes it when it is missing. The same seed gives the same file.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride
EXPANSION = 4


class Graph:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.weights = [], []
        self.count = 0

    def _name(self, kind):
        self.count += 1
        return f"{kind}_{self.count}"

    def _weight(self, name, array):
        self.weights.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv_bn(self, x, cin, cout, kernel, stride, relu=True):
        name = self._name("conv")
        # He initialisation keeps activations in range through 50 layers
        w = self.rng.standard_normal((cout, cin, kernel, kernel)) * np.sqrt(2.0 / (cin * kernel * kernel))
        pad = kernel // 2
        self.nodes.append(helper.make_node(
            "Conv", [x, self._weight(name + ".w", w)], [name], kernel_shape=[kernel, kernel],
            strides=[stride, stride], pads=[pad] * 4, dilations=[1, 1], group=1))
        bn = name + ".bn"
        params = [self.rng.uniform(0.5, 1.0, cout), self.rng.uniform(-0.1, 0.1, cout),
                  self.rng.uniform(-0.1, 0.1, cout), self.rng.uniform(0.5, 1.5, cout)]
        names = [self._weight(f"{bn}.{p}", v) for p, v in zip(("scale", "bias", "mean", "var"), params)]
        self.nodes.append(helper.make_node("BatchNormalization", [name, *names], [bn], epsilon=1e-5))
        return self.relu(bn) if relu else bn

    def relu(self, x):
        out = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [out]))
        return out

    def bottleneck(self, x, cin, width, stride):
        out = self.conv_bn(x, cin, width, 1, 1)
        out = self.conv_bn(out, width, width, 3, stride)
        out = self.conv_bn(out, width, width * EXPANSION, 1, 1, relu=False)
        shortcut = x
        if stride != 1 or cin != width * EXPANSION:
            shortcut = self.conv_bn(x, cin, width * EXPANSION, 1, stride, relu=False)
        total = self._name("add")
        self.nodes.append(helper.make_node("Add", [out, shortcut], [total]))
        return self.relu(total)


    def basic(self, x, cin, width, stride):
        """ResNet18/34's block: two 3x3 convolutions and the shortcut."""
        out = self.conv_bn(x, cin, width, 3, stride)
        out = self.conv_bn(out, width, width, 3, 1, relu=False)
        shortcut = x
        if stride != 1 or cin != width:
            shortcut = self.conv_bn(x, cin, width, 1, stride, relu=False)
        total = self._name("add")
        self.nodes.append(helper.make_node("Add", [out, shortcut], [total]))
        return self.relu(total)


def resnet50(seed=0):
    return _resnet("resnet50", seed, 224, 1, Graph.bottleneck, STAGES, EXPANSION)


def resnet18(seed=0, size=224, batch=1):
    """ResNet18 (basic blocks, 2 per stage) on `size` x `size` images: the
    tests' third whole architecture, at a size that builds and runs quickly."""
    stages = [(width, 2, stride) for width, _, stride in STAGES]
    return _resnet("resnet18", seed, size, batch, Graph.basic, stages, 1)


def _resnet(name, seed, size, batch, block, stages, expansion):
    """The stem, `block` repeated as `stages` say, and the classifier."""
    g = Graph(seed)
    x = g.conv_bn("input", 3, 64, 7, 2)
    g.nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2],
                                    pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for width, blocks, stride in stages:
        for i in range(blocks):
            x = block(g, x, cin, width, stride if i == 0 else 1)
            cin = width * expansion
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    g.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    fc_w = g._weight("fc.w", g.rng.standard_normal((1000, cin)) * np.sqrt(1.0 / cin))
    fc_b = g._weight("fc.b", g.rng.uniform(-0.1, 0.1, 1000))
    g.nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], transB=1))
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1000])], g.weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="wasm-ml models/resnet50/make_onnx.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


HERE = os.path.dirname(os.path.abspath(__file__))


def write(out_dir=HERE):
    """OUT_DIR/resnet50.onnx, unless it is there; returns the model.json
    beside this script (whose "onnx" names that file)."""
    onnx_path = os.path.join(out_dir, "resnet50.onnx")
    if not os.path.exists(onnx_path):
        onnx.save(resnet50(), onnx_path + ".tmp")
        os.replace(onnx_path + ".tmp", onnx_path)
    return os.path.join(HERE, "model.json")


if __name__ == "__main__":
    print(write(*sys.argv[1:2]))
