"""A small builder of ONNX classifiers with seeded random weights, shared by
the generated models (resnet50/make_onnx.py, mobilenet_v2/make_onnx.py).

The graphs use the operators and layouts of a torchvision export (Conv,
BatchNormalization, Relu or Clip, Add, GlobalAveragePool, Flatten, Gemm;
opset 13), so they exercise the same compiler paths as a real model. Speed
and shapes do not depend on the weights, and the same seed gives the same
file.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


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

    def _node(self, op, inputs, kind, **attrs):
        out = self._name(kind)
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv_bn(self, x, cin, cout, kernel, stride, group=1, act="relu"):
        """Convolution (padded to keep the size), batch norm, then `act`:
        "relu", "relu6" (Clip to [0, 6], as torchvision exports ReLU6) or None."""
        name = self._name("conv")
        fan_in = cin // group * kernel * kernel
        # He initialisation keeps activations in range through 50 layers
        w = self.rng.standard_normal((cout, cin // group, kernel, kernel)) * np.sqrt(2.0 / fan_in)
        self.nodes.append(helper.make_node(
            "Conv", [x, self._weight(name + ".w", w)], [name], kernel_shape=[kernel, kernel],
            strides=[stride, stride], pads=[kernel // 2] * 4, dilations=[1, 1], group=group))
        bn = name + ".bn"
        params = [self.rng.uniform(0.5, 1.0, cout), self.rng.uniform(-0.1, 0.1, cout),
                  self.rng.uniform(-0.1, 0.1, cout), self.rng.uniform(0.5, 1.5, cout)]
        names = [self._weight(f"{bn}.{p}", v) for p, v in zip(("scale", "bias", "mean", "var"), params)]
        self.nodes.append(helper.make_node("BatchNormalization", [name, *names], [bn], epsilon=1e-5))
        if act == "relu":
            return self.relu(bn)
        if act == "relu6":
            return self._node("Clip", [bn, self._clip_bound("lo", 0.0), self._clip_bound("hi", 6.0)],
                              "relu6")
        return bn

    def _clip_bound(self, name, value):
        if name not in {w.name for w in self.weights}:
            self._weight(name, np.array(value))
        return name

    def relu(self, x):
        return self._node("Relu", [x], "relu")

    def add(self, a, b):
        return self._node("Add", [a, b], "add")

    def model(self, name, x, channels, batch, size, classes=1000):
        """Ends the graph at `x` (`channels` wide) with global pooling and a
        fully connected layer; returns the checked model on one input,
        `batch` x 3 x `size` x `size`, named "input"."""
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
        self.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
        fc_w = self._weight("fc.w", self.rng.standard_normal((classes, channels)) * np.sqrt(1.0 / channels))
        fc_b = self._weight("fc.b", self.rng.uniform(-0.1, 0.1, classes))
        self.nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], transB=1))
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])], self.weights)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=f"wasm-ml models/graphgen.py ({name})")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model
