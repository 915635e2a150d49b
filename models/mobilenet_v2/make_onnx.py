"""MobileNetV2 (Sandler et al., 2018) as an ONNX graph with seeded random
weights, written without any download. The layers, shapes and operators are
those of torchvision's mobilenet_v2 export in eval mode: a 3x3 stem, 17
inverted residual blocks (1x1 expansion, 3x3 depthwise, linear 1x1
projection, the residual add where the shape allows it), a 1x1 convolution
to 1280 channels and the classifier; Conv, BatchNormalization, Clip (ReLU6),
Add, GlobalAveragePool, Flatten, Gemm; opset 13.

    python models/mobilenet_v2/make_onnx.py [OUT.onnx [SIZE]]

tests/test_small_graphs.py compares a small one (64x64) with onnxruntime.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from graphgen import Graph  # noqa: E402  (models/graphgen.py)

# expansion t, output channels c, blocks n, stride s of the first block
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
LAST = 1280


def divisible(channels, by=8):
    """The paper's width rounding: the nearest multiple of `by`, never below
    90% of `channels`."""
    rounded = max(by, int(channels + by / 2) // by * by)
    return rounded + by if rounded < 0.9 * channels else rounded


def inverted_residual(g, x, cin, cout, stride, expansion):
    hidden = cin * expansion
    out = x
    if expansion != 1:
        out = g.conv_bn(out, cin, hidden, 1, 1, act="relu6")
    out = g.conv_bn(out, hidden, hidden, 3, stride, group=hidden, act="relu6")
    out = g.conv_bn(out, hidden, cout, 1, 1, act=None)
    return g.add(x, out) if stride == 1 and cin == cout else out


def mobilenet_v2(seed=0, size=224, batch=1, width=1.0):
    g = Graph(seed)
    cin = divisible(32 * width)
    x = g.conv_bn("input", 3, cin, 3, 2, act="relu6")
    for expansion, channels, blocks, stride in BLOCKS:
        cout = divisible(channels * width)
        for i in range(blocks):
            x = inverted_residual(g, x, cin, cout, stride if i == 0 else 1, expansion)
            cin = cout
    last = divisible(LAST * max(1.0, width))
    x = g.conv_bn(x, cin, last, 1, 1, act="relu6")
    return g.model("mobilenet_v2", x, last, batch, size)


if __name__ == "__main__":
    import onnx

    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "mobilenet_v2.onnx")
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    onnx.save(mobilenet_v2(size=size), out)
    print(out)
