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

from onnx import helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from graphgen import Graph  # noqa: E402  (models/graphgen.py)

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride
EXPANSION = 4


def bottleneck(g, x, cin, width, stride):
    """ResNet50's block: 1x1 down, 3x3 (strided), 1x1 up, and the shortcut."""
    out = g.conv_bn(x, cin, width, 1, 1)
    out = g.conv_bn(out, width, width, 3, stride)
    out = g.conv_bn(out, width, width * EXPANSION, 1, 1, act=None)
    return _residual(g, x, out, cin, width * EXPANSION, stride)


def basic(g, x, cin, width, stride):
    """ResNet18/34's block: two 3x3 convolutions and the shortcut."""
    out = g.conv_bn(x, cin, width, 3, stride)
    out = g.conv_bn(out, width, width, 3, 1, act=None)
    return _residual(g, x, out, cin, width, stride)


def _residual(g, x, out, cin, cout, stride):
    shortcut = x
    if stride != 1 or cin != cout:
        shortcut = g.conv_bn(x, cin, cout, 1, stride, act=None)
    return g.relu(g.add(out, shortcut))


def resnet50(seed=0):
    return _resnet("resnet50", seed, 224, 1, bottleneck, STAGES, EXPANSION)


def resnet18(seed=0, size=224, batch=1):
    """ResNet18 (basic blocks, 2 per stage) on `size` x `size` images: one of
    the tests' whole architectures, at a size that builds and runs quickly."""
    stages = [(width, 2, stride) for width, _, stride in STAGES]
    return _resnet("resnet18", seed, size, batch, basic, stages, 1)


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
    return g.model(name, x, cin, batch, size)


def write(out_dir=HERE):
    """OUT_DIR/resnet50.onnx, unless it is there; returns the model.json
    beside this script (whose "onnx" names that file)."""
    onnx_path = os.path.join(out_dir, "resnet50.onnx")
    if not os.path.exists(onnx_path):
        import onnx

        onnx.save(resnet50(), onnx_path + ".tmp")
        os.replace(onnx_path + ".tmp", onnx_path)
    return os.path.join(HERE, "model.json")


if __name__ == "__main__":
    print(write(*sys.argv[1:2]))
