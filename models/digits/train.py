"""Train the digits classifier and write it as ONNX.

    python models/digits/train.py OUT.onnx

A multilayer perceptron 64 -> 32 (ReLU) -> 10, trained with plain numpy
(full-batch Adam, fixed seed, fixed number of steps) on scikit-learn's
bundled ``load_digits()`` data set (8x8 grayscale, values 0..16, no
download). Prints one line: the accuracy on the held-out test split.

The output is byte-reproducible: one BLAS thread (a fixed summation order),
a fixed seed, no timestamps, fixed names, empty doc strings; it is written
to a temporary file and renamed into place, so an interrupted run leaves no
half-written OUT.onnx.

The model's input is the 8-bit grayscale image (0..255) mapped to the data
set's 0..16 scale, x = p / 15.9375 (model.json's mean 0, std 15.9375);
the data set's values v are that scale already, so training uses them as
they are.
"""

import os

# Before numpy: one BLAS/OpenMP thread, so every matrix product sums in the
# same order on every run.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import sys
import tempfile

# The fixed split of load_digits()' 1797 samples, in the data set's order.
N_SAMPLES = 1797
TRAIN_COUNT = 1500  # samples [0, 1500) train
TEST_COUNT = N_SAMPLES - TRAIN_COUNT  # samples [1500, 1797) test: 297 images

# The network and its training.
N_IN, N_HIDDEN, N_OUT = 64, 32, 10
SEED = 0
STEPS = 300  # full-batch Adam steps
LEARNING_RATE = 0.01
BETA1, BETA2, EPSILON = 0.9, 0.999, 1e-8
WEIGHT_DECAY = 1e-3  # L2 on the weight matrices, not the biases
INPUT_SCALE = 16.0  # training sees v / 16 (0..1); folded into the first layer's weights

# The ONNX file.
OPSET = 13
IR_VERSION = 8
PRODUCER = "wasm-ml models/digits/train.py"


def fail(message):
    print(f"train.py: error: {message}", file=sys.stderr)
    sys.exit(1)


def load_data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype("float64")
    y = digits.target.astype("int64")
    if x.shape != (N_SAMPLES, N_IN):
        fail(f"load_digits() has shape {x.shape}, expected ({N_SAMPLES}, {N_IN})")
    return (x[:TRAIN_COUNT], y[:TRAIN_COUNT]), (x[TRAIN_COUNT:], y[TRAIN_COUNT:])


def train(np, x, y):
    """Full-batch Adam on softmax cross-entropy, float64; returns float32
    [w1, b1, w2, b2] for inputs on the 0..16 scale."""
    x = x / INPUT_SCALE
    rng = np.random.default_rng(SEED)
    params = [
        rng.standard_normal((N_IN, N_HIDDEN)) * np.sqrt(2.0 / N_IN),
        np.zeros(N_HIDDEN),
        rng.standard_normal((N_HIDDEN, N_OUT)) * np.sqrt(2.0 / N_HIDDEN),
        np.zeros(N_OUT),
    ]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(N_OUT)[y]
    n = x.shape[0]
    for step in range(1, STEPS + 1):
        w1, b1, w2, b2 = params
        pre = x @ w1 + b1
        h = np.maximum(pre, 0.0)
        logits = h @ w2 + b2
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        prob = e / e.sum(axis=1, keepdims=True)
        d_logits = (prob - onehot) / n
        d_w2 = h.T @ d_logits + WEIGHT_DECAY * w2
        d_b2 = d_logits.sum(axis=0)
        d_h = d_logits @ w2.T
        d_pre = d_h * (pre > 0.0)
        d_w1 = x.T @ d_pre + WEIGHT_DECAY * w1
        d_b1 = d_pre.sum(axis=0)
        grads = [d_w1, d_b1, d_w2, d_b2]
        c1 = 1.0 - BETA1**step
        c2 = 1.0 - BETA2**step
        for i, g in enumerate(grads):
            m[i] = BETA1 * m[i] + (1.0 - BETA1) * g
            v[i] = BETA2 * v[i] + (1.0 - BETA2) * g * g
            params[i] = params[i] - LEARNING_RATE * (m[i] / c1) / (np.sqrt(v[i] / c2) + EPSILON)
    params[0] = params[0] / INPUT_SCALE  # a power of two: exact
    return [p.astype(np.float32) for p in params]


def forward(np, params, x):
    """The exported model's computation, in float32: logits [N, 10]."""
    w1, b1, w2, b2 = params
    h = np.maximum(x.astype(np.float32) @ w1 + b1, np.float32(0))
    return h @ w2 + b2


def build_onnx(params):
    from onnx import TensorProto, checker, helper, numpy_helper

    w1, b1, w2, b2 = params
    inits = [
        numpy_helper.from_array(w1, "fc1.weight"),
        numpy_helper.from_array(b1, "fc1.bias"),
        numpy_helper.from_array(w2, "fc2.weight"),
        numpy_helper.from_array(b2, "fc2.bias"),
    ]
    nodes = [
        helper.make_node("Flatten", ["pixels"], ["flat"], name="flatten", axis=1),
        helper.make_node("MatMul", ["flat", "fc1.weight"], ["fc1.matmul"], name="fc1.matmul"),
        helper.make_node("Add", ["fc1.matmul", "fc1.bias"], ["fc1.out"], name="fc1.add"),
        helper.make_node("Relu", ["fc1.out"], ["hidden"], name="relu"),
        helper.make_node("MatMul", ["hidden", "fc2.weight"], ["fc2.matmul"], name="fc2.matmul"),
        helper.make_node("Add", ["fc2.matmul", "fc2.bias"], ["logits"], name="fc2.add"),
    ]
    graph = helper.make_graph(
        nodes,
        "digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, N_OUT])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name=PRODUCER,
        producer_version="",
        doc_string="",
    )
    checker.check_model(model, full_check=True)
    return model.SerializeToString(deterministic=True)


def write_atomically(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".digits-", suffix=".onnx.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: train.py OUT.onnx", file=sys.stderr)
        return 2
    out = argv[1]
    try:
        import numpy as np
    except ImportError:
        fail("numpy is not installed (pip install numpy)")
    try:
        import onnx  # noqa: F401
    except ImportError:
        fail("onnx is not installed (pip install onnx)")
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        fail("scikit-learn is not installed (pip install scikit-learn)")

    (x_train, y_train), (x_test, y_test) = load_data()
    params = train(np, x_train, y_train)
    correct = int((forward(np, params, x_test).argmax(axis=1) == y_test).sum())
    data = build_onnx(params)
    try:
        write_atomically(out, data)
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror or e}")
    print(
        f"  digits: trained MLP {N_IN}-{N_HIDDEN}-{N_OUT}, "
        f"test accuracy {correct / TEST_COUNT:.4f} ({correct}/{TEST_COUNT} images)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
