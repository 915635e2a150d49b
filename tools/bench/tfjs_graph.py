"""An ONNX vision graph as TensorFlow.js would run it after its converter:
NHWC, batch normalisation folded into the convolutions, each convolution
fused with the bias and the activation (Relu, Clip 0..6) that follow it.

    write(onnx_path, out_dir) -> out_dir/graph.json + out_dir/weights.bin

tfjs_wasm.mjs executes that graph with TF.js ops on its WebAssembly
backend. Operators outside what a classic CNN needs raise Unsupported, and
the benchmark then reports TF.js as unable to load the model.
"""
import json
import os

import numpy as np
import onnx
from onnx import numpy_helper


class Unsupported(Exception):
    pass


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _consumers(nodes):
    uses = {}
    for node in nodes:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


class Exporter:
    def __init__(self, model):
        self.consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.nodes = [n for n in model.graph.node if not self._constant(n)]
        self.uses = _consumers(self.nodes)
        self.renamed = {}     # output of a folded node -> the tensor that replaces it
        self.out_nodes, self.weights = [], {}

    def _constant(self, node):
        if node.op_type != "Constant":
            return False
        self.consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        return True

    def _name(self, name):
        while name in self.renamed:
            name = self.renamed[name]
        return name

    def _only_consumer(self, name, op_types):
        uses = self.uses.get(name, [])
        return uses[0] if len(uses) == 1 and uses[0].op_type in op_types else None

    def _weight(self, name, array):
        self.weights[name] = np.ascontiguousarray(array, dtype=np.float32)
        return name

    def run(self):
        skipped = set()
        for node in self.nodes:
            if id(node) in skipped:
                continue
            handler = getattr(self, "_" + node.op_type.lower(), None)
            if handler is None:
                raise Unsupported(f"operator {node.op_type} (node {node.name or node.output[0]})")
            skipped |= handler(node) or set()

    def _conv(self, node):
        a = _attrs(node)
        w = self.consts[node.input[1]].astype(np.float64)
        bias = (self.consts[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0])).astype(np.float64)
        out, skipped = node.output[0], set()
        bn = self._only_consumer(out, {"BatchNormalization"})
        if bn is not None:
            scale, beta, mean, var = (self.consts[n].astype(np.float64) for n in bn.input[1:5])
            factor = scale / np.sqrt(var + _attrs(bn).get("epsilon", 1e-5))
            w = w * factor[:, None, None, None]
            bias = (bias - mean) * factor + beta
            self.renamed[bn.output[0]] = out
            skipped.add(id(bn))
            out = bn.output[0]
        activation = "linear"
        act = self._only_consumer(out, {"Relu", "Clip"})
        if act is not None and (act.op_type == "Relu" or self._clip_range(act) == (0.0, 6.0)):
            activation = "relu" if act.op_type == "Relu" else "relu6"
            self.renamed[act.output[0]] = node.output[0]
            skipped.add(id(act))
        group = a.get("group", 1)
        if group == 1:
            filt, kind = w.transpose(2, 3, 1, 0), "conv2d"            # OIHW -> HWIO
        elif group == w.shape[0] and w.shape[1] == 1:
            filt, kind = w.transpose(2, 3, 0, 1), "depthwise"         # (C,1,H,W) -> HWC1
        else:
            raise Unsupported(f"grouped Conv with group={group} (node {node.name})")
        top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
        self.out_nodes.append({
            "op": kind, "input": self._name(node.input[0]), "output": node.output[0],
            "filter": self._weight(node.output[0] + ".filter", filt),
            "bias": self._weight(node.output[0] + ".bias", bias),
            "strides": a.get("strides", [1, 1]), "dilations": a.get("dilations", [1, 1]),
            "pad": [[0, 0], [top, bottom], [left, right], [0, 0]], "activation": activation})
        return skipped

    def _clip_range(self, node):
        lo = float(self.consts[node.input[1]]) if len(node.input) > 1 and node.input[1] else -np.inf
        hi = float(self.consts[node.input[2]]) if len(node.input) > 2 and node.input[2] else np.inf
        return lo, hi

    def _simple(self, node, op, **extra):
        self.out_nodes.append({"op": op, "inputs": [self._name(i) for i in node.input],
                               "output": node.output[0], **extra})

    def _relu(self, node):
        self._simple(node, "relu")

    def _clip(self, node):
        lo, hi = self._clip_range(node)
        self.out_nodes.append({"op": "clip", "input": self._name(node.input[0]), "output": node.output[0],
                               "min": lo if np.isfinite(lo) else -3.4e38, "max": hi if np.isfinite(hi) else 3.4e38})

    def _add(self, node):
        if any(i in self.consts for i in node.input):
            raise Unsupported(f"Add with a constant (node {node.name})")
        self._simple(node, "add")

    def _maxpool(self, node):
        a = _attrs(node)
        top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
        self.out_nodes.append({"op": "maxpool", "input": self._name(node.input[0]), "output": node.output[0],
                               "kernel": a["kernel_shape"], "strides": a.get("strides", [1, 1]),
                               "pad": [[0, 0], [top, bottom], [left, right], [0, 0]]})

    def _globalaveragepool(self, node):
        self._simple(node, "gap")

    def _flatten(self, node):
        self._simple(node, "flatten")

    def _reshape(self, node):
        shape = self.consts[node.input[1]].tolist()
        if len(shape) != 2:
            raise Unsupported(f"Reshape to rank {len(shape)} (node {node.name})")
        self.out_nodes.append({"op": "flatten", "inputs": [self._name(node.input[0])],
                               "output": node.output[0]})

    def _gemm(self, node):
        a = _attrs(node)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise Unsupported(f"Gemm with transA/alpha/beta (node {node.name})")
        b = self.consts[node.input[1]]
        b = b.T if a.get("transB", 0) else b
        self.out_nodes.append({"op": "matmul", "input": self._name(node.input[0]), "output": node.output[0],
                               "weight": self._weight(node.output[0] + ".w", b),
                               "bias": self._weight(node.output[0] + ".b", self.consts[node.input[2]])})


def write(onnx_path, out_dir):
    model = onnx.load(onnx_path)
    exporter = Exporter(model)
    exporter.run()
    os.makedirs(out_dir, exist_ok=True)
    manifest, offset = {}, 0
    with open(os.path.join(out_dir, "weights.bin"), "wb") as f:
        for name, array in exporter.weights.items():
            f.write(array.tobytes())
            manifest[name] = {"offset": offset, "shape": list(array.shape)}
            offset += array.nbytes
    graph = {"input": model.graph.input[0].name,
             "output": exporter._name(model.graph.output[0].name),
             "nodes": exporter.out_nodes, "weights": manifest}
    with open(os.path.join(out_dir, "graph.json"), "w") as f:
        json.dump(graph, f)
    return out_dir
