"""Trains the example's model and writes iris.onnx beside this file.

A 4-16-3 perceptron on Fisher's iris measurements (150 flowers, as
scikit-learn ships them), trained with plain NumPy: full-batch gradient
descent on softmax cross-entropy, seeded, so the file is reproducible.
The graph takes raw measurements in cm (it standardizes them itself) and
gives the three species' probabilities.

    python3 train.py   # needs numpy, onnx and scikit-learn
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_iris

HIDDEN = 16
STEPS = 3000
RATE = 0.1


def train(x, y):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, HIDDEN)).astype(np.float32) * 0.5
    b1 = np.zeros(HIDDEN, np.float32)
    w2 = rng.standard_normal((HIDDEN, 3)).astype(np.float32) * 0.5
    b2 = np.zeros(3, np.float32)
    onehot = np.eye(3, dtype=np.float32)[y]
    for _ in range(STEPS):
        h = np.maximum(x @ w1 + b1, 0)
        logits = h @ w2 + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        d_logits = (p - onehot) / len(x)
        d_h = d_logits @ w2.T * (h > 0)
        w2 -= RATE * h.T @ d_logits
        b2 -= RATE * d_logits.sum(0)
        w1 -= RATE * x.T @ d_h
        b1 -= RATE * d_h.sum(0)
    return w1, b1, w2, b2


def to_onnx(mean, std, w1, b1, w2, b2):
    consts = {"mean": mean, "std": std, "w1": w1, "b1": b1, "w2": w2, "b2": b2}
    nodes = [
        helper.make_node("Sub", ["measurements", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("Gemm", ["scaled", "w1", "b1"], ["hidden_in"]),
        helper.make_node("Relu", ["hidden_in"], ["hidden"]),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "iris",
        [helper.make_tensor_value_info("measurements", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="examples/iris/model/train.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    iris = load_iris()
    x, y = iris.data.astype(np.float32), iris.target
    mean, std = x.mean(0), x.std(0)
    w1, b1, w2, b2 = train((x - mean) / std, y)
    hidden = np.maximum((x - mean) / std @ w1 + b1, 0)
    accuracy = ((hidden @ w2 + b2).argmax(1) == y).mean()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "iris.onnx")
    onnx.save(to_onnx(mean, std, w1, b1, w2, b2), path)
    print(f"wrote {path}: training accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
