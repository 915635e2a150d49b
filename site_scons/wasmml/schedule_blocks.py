"""Small steps that the hand-written schedules (depthwise.py, pointwise.py,
winograd_schedule.py) share. None of them adds an instruction of its own to a schedule's trace
beyond the primitives it calls, so moving code here leaves the traces, and
the database records that name them, as they were."""


def inline_all_but_last_consumer(sch, block):
    """Inlines the chain of elementwise blocks after `block` (bias, ReLU6's
    max, a residual add) into the last of them, which then reads the sum
    directly."""
    while True:
        consumers = sch.get_consumers(block)
        if len(consumers) != 1 or not sch.get_consumers(consumers[0]):
            return
        sch.compute_inline(consumers[0])


def vectorize_innermost(sch, loop, unroll):
    """Splits `loop` into vectors of 4 floats, unrolling the rest of it and
    the loops in `unroll`."""
    rest, lanes = sch.split(loop, [None, 4])
    sch.vectorize(lanes)
    for other in [rest] + unroll:
        sch.unroll(other)


def find_block(sch, name):
    """The block named `name`, or None if the kernel has none."""
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001 -- TVM raises its own kinds for a missing block
        return None


def loop_extents(sch, block):
    """The extents of the loops around `block`, outermost first."""
    return [int(sch.get(loop).extent) for loop in sch.get_loops(block)]


# Input channels a step of sums_in_chains: the splats of one row's step
# stay in registers (12 spill). 4 where 8 does not divide the layer.
STEPS = (8, 4)


def step_for(inputs):
    """The first of STEPS that divides `inputs` channels, else None."""
    return next((s for s in STEPS if inputs % s == 0), None)


def sums_in_chains(sch, f, c, steps, outputs, outer, between, rows):
    """The loop order of pointwise.py's module doc, on a block that sums
    over input channels `c` into output channels `f`, row by row (`rows`:
    pixels, or Winograd tiles): `outer`, blocks of `outputs` channels,
    `between`, steps of `steps` channels, `rows`, then for each output
    vector of the block the chain of `steps` multiply-adds, unrolled.
    Returns the loops over blocks of outputs and over steps."""
    f_outer, f_vector, lanes = sch.split(f, [None, outputs // 4, 4])
    c_outer, c_step = sch.split(c, [None, steps])
    sch.reorder(*outer, f_outer, *between, c_outer, rows, f_vector, c_step, lanes)
    sch.vectorize(lanes)
    sch.unroll(f_vector)
    sch.unroll(c_step)
    return f_outer, c_outer
