"""`scons tune` times candidate kernels in wasmtime (site_scons/wasmml/
wasm_measure.py): each is built for wasm32, linked into a module of its own
and called with its arguments laid out in linear memory. These check that
such a kernel computes what numpy does, that it is timed with its
weights out of the caches, as an inference finds them, and that a kernel's
own error comes back as a message, not a crash."""

import sys

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.s_tir import meta_schedule as ms

from conftest import REPO

sys.path.insert(0, str(REPO / "site_scons"))
from wasmml.compiler.target import wasm_target  # noqa: E402
from wasmml.tuner import wasm_measure  # noqa: E402


def pointwise_conv(channels=16, filters=24, size=8):
    """A 1x1 convolution with its rows tiled by 4, and a vectorised bias add
    that reads an int32 argument."""
    x = te.placeholder((1, channels, size, size), name="x")
    w = te.placeholder((filters, channels), name="w")
    shift = te.placeholder((filters,), name="shift", dtype="int32")
    c = te.reduce_axis((0, channels), "c")
    y = te.compute((1, filters, size, size),
                   lambda n, k, i, j: te.sum(x[n, c, i, j] * w[k, c], axis=c), name="y")
    z = te.compute(y.shape, lambda n, k, i, j: y[n, k, i, j] + shift[k].astype("float32"), name="z")
    func = te.create_prim_func([x, w, shift, z])
    sch = tvm.s_tir.Schedule(func)
    block = sch.get_sblock("y")
    _, _, _, j, c = sch.get_loops(block)
    outer, inner = sch.split(j, [None, 4])
    sch.reorder(outer, c, inner)
    *_, j = sch.get_loops(sch.get_sblock("z"))
    sch.vectorize(sch.split(j, [None, 4])[1])
    return sch.mod, ms.arg_info.ArgInfo.from_prim_func(func)


def built(mod):
    target = wasm_target("+simd128")
    return wasm_measure.export_wasm(wasm_measure.build_kernel(mod, target, None))


def test_a_kernel_in_wasmtime_computes_what_numpy_does():
    mod, args = pointwise_conv()
    kernel = wasm_measure.Kernel(wasm_measure.engine(), built(mod), args)
    times = kernel.time(number=2, repeat=3, min_repeat_ms=1)
    x, w, shift, z = (kernel.tensor(i) for i in range(4))
    assert np.abs(x).max() > 0.1 and np.abs(w).max() > 0.1  # random, not zeros
    expected = np.einsum("nchw,kc->nkhw", x, w) + shift[None, :, None, None]
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)
    assert len(times) == 3 and all(0 < t < 0.1 for t in times), times


def test_each_timed_call_starts_with_all_but_its_input_flushed_from_the_caches():
    mod, args = pointwise_conv()
    kernel = wasm_measure.Kernel(wasm_measure.engine(), built(mod), args)
    # the flush reaches the arguments where the kernel reads them
    for i, view in enumerate(kernel.host_views()):
        assert view.numpy().tobytes() == kernel.tensor(i).tobytes(), i
    flushes, calls = [], []
    flush, call = kernel.flush_all_but_input, kernel.call
    kernel.flush_all_but_input = lambda: (flushes.append(len(calls)), flush())
    kernel.call = lambda: (calls.append(len(flushes)), call())
    kernel.time(number=3, repeat=2, min_repeat_ms=0)
    # a warm-up call, then 6 timed ones, each right after its own flush
    assert calls == [0, 1, 2, 3, 4, 5, 6] and flushes == [1, 2, 3, 4, 5, 6], (calls, flushes)
    kernel.time(number=3, repeat=1, min_repeat_ms=0, cold=False)
    assert len(flushes) == 6 and len(calls) == 11


def test_a_kernels_own_error_is_a_message():
    mod, args = pointwise_conv()
    wrong = [ms.arg_info.TensorInfo("float32", [1, 16, 8, 7])] + list(args[1:])
    kernel = wasm_measure.Kernel(wasm_measure.engine(), built(mod), wrong)
    with pytest.raises(wasm_measure.KernelError, match="shape"):
        kernel.call()
