"""Hand-written schedules for 1x1 convolutions (NHWC), which `scons tune`
measures beside MetaSchedule's candidates (wasmml.tuner).

They are shaped for what wasmtime's code generator, Cranelift, makes of
the wasm, not for LLVM's x86 code. Two habits of Cranelift decide it:

  - it computes a pure value (a multiply-add) where it is first used, but
    leaves every load where the wasm has it. Sums kept in registers across
    a loop are first used at the loop's end, so all the iteration's loads
    are live until then, and spill;
  - it lowers `f32x4.relaxed_madd(a, b, c)` to `vfmadd213ps`, whose result
    replaces `a`: where `a` is used again, it copies it first.

So each sum lives in memory, and is loaded, brought through a chain of
`steps` multiply-adds and stored again; the store is where Cranelift
computes the chain, right after the loads it needs. Each splat of an input
serves a block of output vectors, and each step's weights serve a block of
pixels from the L1 cache:

    for each block of `pixels` pixels, for each block of `outputs` channels,
      out[p, f] = 0 for the block
      for each step of `steps` input channels k..k+steps,
        for each pixel p of the block, for each output vector f of the block,
          out[p, f] += sum over k' in the step of w[k', f] * in[p, k']
      out = activation(out + bias [+ residual]) for the block

On ResNet50's 1x1 layers (relaxed SIMD) that was 10-17% faster than the
best schedules MetaSchedule found for most of them. Cranelift still copies
an operand before each multiply-add here; variants without those copies
were built and were no faster, as these loops are bound by loads and
latency (docs/performance.md, "How near native a wasm module can come").

A variant takes two pixels a step of 4 input channels (8 splats, as one
pixel's step of 8), the two chains interleaved so that each weight vector
loaded serves both pixels:

        for each pair of pixels p, q, for each output vector f of the block,
          out[p, f], out[q, f] += the sums over the step's 4 channels

It loads 0.75 vectors a multiply-add (a weight vector for two, a sum for
four) where one pixel a step loads 1.125 (one, and a sum for eight), and
took 5-8% less time on most of ResNet50's 1x1 layers in an inference
(run-model --profile, relaxed SIMD). On an odd number of pixels (7x7
layers), the last is a step of its own.

Which variant is fastest depends on the layer, so each (outputs, pixels,
pixels a step) that divides it is a candidate; the tuner measures them all
once and keeps their records, and a build applies whichever record is fastest.

The kernel reads its weights packed at build time (replacement), [O / 16, I,
16] rather than HWIO's [I, O]: a block of outputs then streams its
weights, where each step of [I, O] read a few floats from each of rows
apart by O floats, a new page of memory each on the large layers, which
the hardware prefetcher does not follow. Whole inferences gained 1-2%
with relaxed SIMD (the measurements: docs/tuning.md).
"""

from wasmml.compiler.kernels.schedule_blocks import (find_block, inline_all_but_last_consumer,
                                                     loop_extents, step_shapes, sums_in_chains)

CONV_BLOCK = "conv2d_nhwc"
PAD_BLOCK = "pad_temp"
# Output channels a block: the largest three multiples of 4 up to this that
# divide the layer. More outputs share each splat; fewer keep the step's
# weights and the block's sums in cache.
MAX_OUTPUTS = 256
OUTPUT_CHOICES = 3
# Pixels a block: the whole image, and the whole rows nearest these many
# pixels (fewer sums to keep in L2 on large images). A block must be whole
# rows: the activation after it covers the rows the block touches, and
# where a block ended mid-row it read sums no block had finished yet.
PIXELS = (196, 392)


def candidates(mod):
    """The hand-written schedules (tvm.s_tir.Schedule, traced) of the
    kernel `mod`: none unless it is a 1x1 convolution."""
    shape = _pointwise_shape(mod)
    if shape is None:
        return []
    height, width, outputs, inputs = shape
    schedules = []
    for f in [f for f in range(MAX_OUTPUTS, 0, -4) if outputs % f == 0][:OUTPUT_CHOICES]:
        for p in pixel_blocks(height, width):
            for steps, rows in step_shapes(inputs, p):
                try:
                    schedules.append(schedule(mod, steps, f, p, rows))
                except Exception:  # noqa: BLE001 -- TVM's ScheduleError: a layer this does not fit
                    continue
    return schedules


def pixel_blocks(height, width):
    """The whole image's pixels, then the blocks of whole rows nearest
    PIXELS pixels (each once, and only those smaller than the image)."""
    rows = [r for r in range(1, height) if height % r == 0]
    blocks = [height * width]
    for target in PIXELS:
        if rows:
            nearest = min(rows, key=lambda r: abs(r * width - target)) * width
            if nearest not in blocks and nearest >= target // 2:
                blocks.append(nearest)
    return blocks


def _pointwise_shape(mod):
    """(output height, width, output channels, input channels) of a 1x1
    convolution's kernel, else None: a conv2d_nhwc block of batch 1 whose
    window is 1x1."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    conv = find_block(sch, CONV_BLOCK)
    if conv is None:
        return None
    extents = loop_extents(sch, conv)
    if len(extents) != 7 or extents[0] != 1 or extents[4:6] != [1, 1]:  # n, y, x, f, window y, x, c
        return None
    return extents[1], extents[2], extents[3], extents[6]


def schedule(mod, steps, outputs, pixels, pixels_a_step=1):
    """The schedule of the module doc: `steps` input channels a step for
    `pixels_a_step` pixels, blocks of `outputs` output channels (a multiple
    of 4) and `pixels` pixels."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    if find_block(sch, PAD_BLOCK) is not None:  # a 1x1 window pads nothing
        sch.compute_inline(sch.get_sblock(PAD_BLOCK))
    conv = sch.get_sblock(CONV_BLOCK)
    inline_all_but_last_consumer(sch, conv)
    (epilogue,) = sch.get_consumers(conv)
    n, y, x, f, wy, wx, c = sch.get_loops(conv)
    pixel_outer, pixel = sch.split(sch.fuse(n, y, x), [None, pixels])
    f_outer = sums_in_chains(sch, conv, f, c, steps, outputs, outer=[pixel_outer], between=[wy, wx], rows=pixel,
                             rows_a_step=pixels_a_step)
    sch.reverse_compute_at(epilogue, f_outer)
    _, lanes = sch.split(sch.get_loops(epilogue)[-1], [None, 4])
    sch.vectorize(lanes)
    return sch


def replacement(call, data_shape, weight):
    """packing.rewrite's replacement of a 1x1 convolution (NHWC,
    constant HWIO weights, no padding): conv2d_nhwc on its weights packed
    in blocks of outputs."""
    from wasmml.compiler.kernels.packing import block_outputs, nhwc_hwio_float32

    if not (nhwc_hwio_float32(call, data_shape, weight) and weight.shape[:2] == (1, 1)
            and not any(int(p) for p in call.attrs.padding)):
        return None
    strides = tuple(int(s) for s in call.attrs.strides)
    return conv2d_nhwc, block_outputs(weight[0, 0]), (strides,), "conv2d"


def conv2d_nhwc(data, packed, strides):
    """The TE compute of a 1x1 convolution of NHWC data with weights packed
    [O / block, I, block], with the loops of TOPI's conv2d_nhwc (batch, y,
    x, output channel; window y and x of one each, input channel), which
    candidates() and schedule() expect."""
    from tvm import te

    n, h, w, _ = (int(d) for d in data.shape)
    blocks, inputs, block = (int(d) for d in packed.shape)
    stride_y, stride_x = strides
    window_y, window_x = te.reduce_axis((0, 1), "ry"), te.reduce_axis((0, 1), "rx")
    c = te.reduce_axis((0, inputs), "rc")
    return te.compute(
        (n, (h - 1) // stride_y + 1, (w - 1) // stride_x + 1, blocks * block),
        lambda i, y, x, f: te.sum(
            data[i, y * stride_y + window_y, x * stride_x + window_x, c] * packed[f // block, c, f % block],
            axis=[window_y, window_x, c]),
        name=CONV_BLOCK)
