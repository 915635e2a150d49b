"""The kernels this project writes itself, by family, and the one list of
them that the compiler and the tuner both read.

- packing: replaces a relax module's convolutions whose weights are
  constants by calls of our TE kernels on weights packed at build time;
- winograd (compute and replacement) and winograd_schedule (hand-written
  schedules): 3x3 convolutions by Winograd's F(4x4, 3x3) or F(2x2, 3x3);
- pointwise: 1x1 convolutions (compute, replacement and schedules);
- depthwise: hand-written schedules of TVM's own depthwise convolutions;
- schedule_blocks: the schedule helpers those share.

Imported only by the compile and tune processes (TVM inside).
"""


def rewrite_convolutions(mod):
    """`mod` with each convolution that one of our families computes (the
    first that takes it, in this order) replaced by its kernel."""
    from wasmml.compiler.kernels import packing, pointwise, winograd

    return packing.rewrite(mod, [winograd.replacement, pointwise.replacement])


def hand_written_schedules(mod):
    """Every hand-written schedule of each family for the kernel `mod` (a
    tuning task's module); none if no family recognises it."""
    from wasmml.compiler.kernels import depthwise, pointwise, winograd_schedule

    return [sch for family in (depthwise, pointwise, winograd_schedule) for sch in family.candidates(mod)]
