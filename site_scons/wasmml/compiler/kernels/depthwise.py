"""Hand-written schedules for depthwise convolutions (NHWC), which `scons
tune` measures beside MetaSchedule's candidates (wasmml.tuner).

MetaSchedule's search finds poor schedules for these kernels: its best for
EfficientNet-Lite0's depthwise layers pad the input into a copy, add into
an accumulator in memory and apply the bias and activation in a third
pass (5-18 GFLOP/s in the tuner's times, relaxed SIMD). Each schedule here
makes one pass and keeps each output vector in a register for the whole
window:

    for each output row y, for each strip of `columns` outputs x,
      for each group of `channels` channels c (vectors of 4):
        acc[x, c] = sum over the window (i, j) of in[y + i, x + j, c] * w[i, j, c]
        out[y, x, c] = activation(acc[x, c] + bias[c])

with the padding folded into the loads (a border test, not a copy) and the
window unrolled. Channels are innermost of the output loops, so stores run
along each row of NHWC memory.

Which variant is fastest depends on the layer, so each (channels, columns)
pair that divides it is a candidate; the tuner measures them all once and
keeps their records, and a build applies whichever record is fastest.
"""

from wasmml.compiler.kernels.schedule_blocks import (find_block, inline_all_but_last_consumer,
                                                     loop_extents, vectorize_innermost)

CONV_BLOCK = "group_conv2d_nhwc"
PAD_BLOCK = "pad_temp"
# Channels per step (multiples of the 4-float vector) and output columns
# per strip that the candidates try, where they divide the layer.
CHANNELS = (4, 8, 12)
COLUMNS = (1, 2, 4, 7)


def candidates(mod):
    """The hand-written schedules (tvm.s_tir.Schedule, traced) of the
    kernel `mod`: none unless it is a depthwise convolution."""
    shape = _depthwise_shape(mod)
    if shape is None:
        return []
    width, channels = shape
    schedules = []
    for c in CHANNELS:
        for x in COLUMNS:
            if channels % c == 0 and width % x == 0:
                try:
                    schedules.append(schedule(mod, c, x))
                except Exception:  # noqa: BLE001 -- TVM's ScheduleError: a layer this does not fit
                    continue
    return schedules


def _depthwise_shape(mod):
    """(output width, channels) of a depthwise convolution's kernel, else
    None: a group_conv2d_nhwc block whose groups have one input channel."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    conv = find_block(sch, CONV_BLOCK)
    if conv is None:
        return None
    extents = loop_extents(sch, conv)
    if len(extents) != 7 or extents[6] != 1:  # n, y, x, channel, window y, window x, channel in group
        return None
    return extents[2], extents[3]


def schedule(mod, channels, columns):
    """The schedule of the module doc: `channels` channels per step (a
    multiple of 4), strips of `columns` output columns."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    conv = sch.get_sblock(CONV_BLOCK)
    inline_all_but_last_consumer(sch, conv)
    consumers = sch.get_consumers(conv)
    n, y, x, c, wy, wx, rc = sch.get_loops(conv)
    x_outer, x_inner = sch.split(x, [None, columns])
    c_outer, c_inner = sch.split(c, [None, channels])
    sch.reorder(n, y, x_outer, c_outer, wy, wx, rc, x_inner, c_inner)
    acc = sch.cache_write(conv, 0, "local")
    for consumer in consumers:  # the activation, applied as the sum is stored
        sch.reverse_compute_inline(consumer)
    sch.reverse_compute_at(acc, c_outer)
    vectorize_innermost(sch, c_inner, unroll=[x_inner])
    sch.unroll(wy)
    sch.unroll(wx)
    sch.decompose_reduction(conv, wy)
    # looked up twice, as when the databases' records were made: the tuner
    # knows a candidate by its trace's text
    if find_block(sch, PAD_BLOCK) is not None:
        sch.compute_inline(sch.get_sblock(PAD_BLOCK))
    loops = sch.get_loops(acc)
    vectorize_innermost(sch, loops[-1], unroll=[])
    return sch
