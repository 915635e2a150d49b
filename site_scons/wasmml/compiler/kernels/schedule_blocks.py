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


# Input channels a step of sums_in_chains, one row at a time: the splats
# of one row's step stay in registers (12 spill). 4 where 8 does not
# divide the layer.
STEPS = (8, 4)
# Two rows a step, 4 channels each: as many splats (8), and each weight
# vector loaded serves both rows' multiply-adds (most of ResNet50's 1x1
# layers 8-12% faster than one row of 8). Of the other shapes tried, more
# rows or channels hold too many splats for 16 registers, and fewer
# channels load and store each sum too often (docs/tuning.md).
TWO_ROWS_STEPS = 4


def step_for(inputs):
    """The first of STEPS that divides `inputs` channels, else None."""
    return next((s for s in STEPS if inputs % s == 0), None)


def step_shapes(inputs, rows):
    """[(channels, rows) a step] that sums_in_chains can take for a block of
    `rows` rows summing over `inputs` channels: one row (step_for), and two
    rows of TWO_ROWS_STEPS channels where that divides the channels."""
    one_row = step_for(inputs)
    shapes = [(one_row, 1)] if one_row else []
    if inputs % TWO_ROWS_STEPS == 0 and rows >= 2:
        shapes.append((TWO_ROWS_STEPS, 2))
    return shapes


def sums_in_chains(sch, block, f, c, steps, outputs, outer, between, rows, rows_a_step=1):
    """The loop order of pointwise.py's module doc, on `block`, which sums
    over input channels `c` into output channels `f`, row by row (`rows`:
    pixels, or Winograd tiles): `outer`, blocks of `outputs` channels,
    `between`, steps of `steps` channels, `rows` (`rows_a_step` at a time),
    then for each output vector of the block the chain of `steps`
    multiply-adds, unrolled, each weight vector used for the step's rows.
    The sums are zeroed before the first of `between` (else of the steps).
    Returns the loop over blocks of outputs."""
    row_count = int(sch.get(rows).extent)
    f_outer, f_vector, lanes = sch.split(f, [None, outputs // 4, 4])
    c_outer, c_step = sch.split(c, [None, steps])
    inner = [f_vector, c_step]
    if rows_a_step > 1:  # one row keeps the trace of the records made before two rows existed
        rows, row = sch.split(rows, [None, rows_a_step])
        inner.append(row)
        sch.unroll(row)
    sch.reorder(*outer, f_outer, *between, c_outer, rows, *inner, lanes)
    sch.vectorize(lanes)
    sch.unroll(f_vector)
    sch.unroll(c_step)
    sch.decompose_reduction(block, between[0] if between else c_outer)
    if row_count % rows_a_step:
        # The last step's rows get a loop of their own, so that the others
        # run without a bounds check: on 7x7 layers (49 pixels two at a
        # time) a check on every multiply-add lost what two rows a step
        # gain (docs/tuning.md).
        sch.loop_partition(rows, [row_count // rows_a_step, None])
    return f_outer
