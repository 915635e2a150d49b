"""The Winograd kernel's compute (wasmml.winograd) against a direct 3x3
convolution in numpy, compiled by TVM for this machine: both tile sizes,
padded or not, and output channels that make blocks of 16 or of 8 in the
packed weights. The wasm builds of whole graphs that use it are in
test_small_graphs and test_tuning."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "site_scons"))
from wasmml.compiler.kernels import winograd  # noqa: E402


def direct_conv(nhwc, hwio, padding):
    top, left, bottom, right = padding
    x = np.pad(nhwc.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h, out_w = x.shape[1] - 2, x.shape[2] - 2
    return sum(np.einsum("nhwi,io->nhwo", x[:, dy:dy + out_h, dx:dx + out_w], hwio[dy, dx])
               for dy in range(3) for dx in range(3))


@pytest.mark.parametrize("tile, out_channels, padding, block", [
    (4, 32, (1, 1, 1, 1), 16),
    (2, 24, (0, 0, 0, 0), 8),
])
def test_winograd_computes_the_convolution(tile, out_channels, padding, block):
    import tvm
    from tvm import te

    rng = np.random.default_rng(5)
    data = rng.standard_normal((1, 9, 10, 16)).astype(np.float32)
    hwio = rng.standard_normal((3, 3, 16, out_channels)).astype(np.float32)
    packed = winograd.pack_weights(hwio, tile)
    assert packed.shape == (tile + 2, tile + 2, out_channels // block, 16, block)

    x = te.placeholder(data.shape, name="x")
    w = te.placeholder(packed.shape, name="w")
    y = winograd.conv2d_nhwc(x, w, padding)
    run = tvm.compile(te.create_prim_func([x, w, y]), target="llvm")
    got = tvm.runtime.empty([int(d) for d in y.shape], "float32")
    run(tvm.runtime.tensor(data), tvm.runtime.tensor(packed), got)
    np.testing.assert_allclose(got.numpy(), direct_conv(data, hwio, padding), atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("tile, size, out_channels, variants", [
    (4, 14, 64, 2),  # 16 tiles of 4x4; blocks of 64 outputs; one tile a step, or two
    (2, 7, 128, 4),  # 16 tiles of 2x2; blocks of 128 and of 64; one tile a step, or two
    (4, 28, 64, 2),  # 49 tiles of 4x4: two a step, the last one a step of its own
])
def test_hand_written_schedules_compute_the_kernel(tile, size, out_channels, variants):
    """Each schedule of winograd_schedule.py, built for wasm32 and run in
    wasmtime, against the unscheduled kernel with the activation that
    follows it in ResNet50 (bias, ReLU)."""
    import tvm
    from tvm import te, topi

    from test_depthwise import run_kernel
    from wasmml.compiler.kernels import winograd_schedule
    from wasmml.compiler.target import wasm_target

    x = te.placeholder((1, size, size, 16), name="x")
    w = te.placeholder((tile + 2, tile + 2, out_channels // 16, 16, 16), name="w")
    b = te.placeholder((1, 1, 1, out_channels), name="b")
    y = topi.nn.relu(topi.add(winograd.conv2d_nhwc(x, w, (1, 1, 1, 1)), b))
    mod = tvm.IRModule({"main": te.create_prim_func([x, w, b, y])})
    target = wasm_target("+simd128,+relaxed-simd")
    expected = run_kernel(mod, target)
    schedules = winograd_schedule.candidates(mod)
    assert len(schedules) == variants
    for sch in schedules:
        got = run_kernel(sch.mod, target)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max(), str(sch.trace)


def test_a_kernel_without_winograd_has_no_hand_written_schedule():
    import tvm
    from tvm import te, topi

    from wasmml.compiler.kernels import winograd_schedule

    x = te.placeholder((1, 8, 8, 16), name="x")
    w = te.placeholder((1, 1, 16, 64), name="w")
    mod = tvm.IRModule({"main": te.create_prim_func([x, w, topi.nn.conv2d_nhwc(x, w, 1, 0, 1)])})
    assert winograd_schedule.candidates(mod) == []
