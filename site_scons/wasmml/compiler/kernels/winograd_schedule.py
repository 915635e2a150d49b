"""Hand-written schedules for the Winograd kernels (winograd.py), which
`scons tune` measures beside MetaSchedule's candidates (wasmml.tuner).

The kernel's matrix products (block "bgemm": for each of the (m+2)^2
points of the transform domain, tiles x input channels times input x
output channels) are scheduled as pointwise.py schedules a 1x1
convolution, for the same reasons (see there): the sums in memory, each
brought through a chain of `steps` multiply-adds between a load and a
store, each splat of an input shared by a block of output vectors, one
tile a step or two. The transforms around them are unrolled over the
tile, one vector of 4 channels at a time, and the kernel runs its four
stages one after another:

    transform every input tile        (data_pack: 6x6 or 4x4 in and out)
    for each point, each block of `outputs` channels, each step of channels,
      for each tile, each output vector: the chain of `steps` multiply-adds
    transform every output tile back  (inverse)
    the activation, from the tiles to NHWC

With the transforms computed one matrix product at a time
(winograd._two_sided), this schedule beats MetaSchedule's best on each of
ResNet50's four Winograd layers (56x56, relaxed SIMD: 2.08 against 3.10 ms
a call; the rest in docs/tuning.md). The tuner still measures
MetaSchedule's candidates, which schedule the products alone, and keeps
the faster.
"""

from wasmml.compiler.kernels.schedule_blocks import (find_block, inline_all_but_last_consumer,
                                                     loop_extents, step_shapes, sums_in_chains)

GEMM_BLOCK = "bgemm"
# Output channels a block of the products: those of these that divide the
# layer.
OUTPUTS = (128, 64)


def candidates(mod):
    """The hand-written schedules (tvm.s_tir.Schedule, traced) of the
    kernel `mod`: none unless it is a Winograd kernel."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    gemm = find_block(sch, GEMM_BLOCK)
    if gemm is None or find_block(sch, "data_pack") is None:
        return []
    _, _, tiles, outputs, inputs = loop_extents(sch, gemm)
    schedules = []
    for f in [f for f in OUTPUTS if outputs % f == 0]:
        for steps, rows in step_shapes(inputs, tiles):
            try:
                schedules.append(schedule(mod, steps, f, rows))
            except Exception:  # noqa: BLE001 -- TVM's ScheduleError: a layer this does not fit
                continue
    return schedules


def schedule(mod, steps, outputs, tiles_a_step=1):
    """The schedule of the module doc: `steps` input channels a step for
    `tiles_a_step` tiles and blocks of `outputs` output channels (a multiple
    of 4) in the products."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod)
    for name in ("A", "B", "input_tile", "data_pad"):  # the transforms' constant matrices, the patches
        sch.compute_inline(sch.get_sblock(name))
    _transform_by_vectors(sch, "data_pack")
    _products(sch, steps, outputs, tiles_a_step)
    _transform_by_vectors(sch, "inverse")
    gather = sch.get_sblock("conv2d_winograd")
    inline_all_but_last_consumer(sch, gather)
    sch.compute_inline(gather)  # the activation reads the inverse's tiles
    # the activation: the last block that no other reads (where the products
    # have a partitioned loop, the block around its parts is one too)
    last = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if not sch.get_consumers(b)][-1]
    _, lanes = sch.split(sch.get_loops(last)[-1], [None, 4])
    sch.vectorize(lanes)
    return sch


def _transform_by_vectors(sch, name):
    """A transform, M^T X M (winograd._two_sided: block `name`_half
    computes M^T X, block `name` its product with M), computed per tile and
    vector of 4 channels: both products for the tile's vector, unrolled so
    the constant matrix folds away."""
    block = sch.get_sblock(name)
    y, x, tile, channel, r2 = sch.get_loops(block)
    vectors, lanes = sch.split(channel, [None, 4])
    sch.reorder(tile, vectors, y, x, r2, lanes)
    sch.vectorize(lanes)
    for loop in (y, x, r2):
        sch.unroll(loop)
    half = sch.get_sblock(f"{name}_half")
    sch.compute_at(half, vectors)
    half_y, half_x, half_lanes, r1 = sch.get_loops(half)[2:]
    sch.reorder(half_y, half_x, r1, half_lanes)
    for loop in (half_y, half_x, r1):
        sch.unroll(loop)
    sch.vectorize(half_lanes)
    sch.decompose_reduction(block, r2)
    sch.decompose_reduction(half, r1)


def _products(sch, steps, outputs, tiles_a_step):
    """The matrix products in the order of the module doc."""
    block = sch.get_sblock(GEMM_BLOCK)
    eps, nu, tile, co, ci = sch.get_loops(block)
    sums_in_chains(sch, block, co, ci, steps, outputs, outer=[eps, nu], between=[], rows=tile,
                   rows_a_step=tiles_a_step)
