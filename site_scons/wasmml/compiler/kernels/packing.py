"""Replace a relax module's convolutions whose weights are constants by
calls of TE kernels that read those weights packed at build time: the
packing is done once, by the compiler, and the kernel streams its weights
in the order its loops read them. winograd.py (3x3 convolutions, weights
in the transform domain) and pointwise.py (1x1 convolutions) supply the
kernels."""

# The packed weights' output channels come in blocks of the first of these
# that divides them, each block's [I, block] contiguous: a kernel computing
# a block of outputs reads its weights in one stream, not a few floats of
# every row of an [I, O] matrix. That matters most for Winograd's kernels on
# small images (ResNet50's 7x7 layer: 7.3 -> 5.5 ms a call); letting the tuned
# schedule choose the layout gained nothing clear (docs/tuning.md).
OUT_BLOCKS = (16, 8, 4, 1)


def rewrite(mod, replacements):
    """`mod` with each conv2d call for which one of `replacements`,
    replacement(call, data shape, weight), gives (TE compute, packed
    weights as numpy, its other arguments, kernel name) replaced by a call
    of that compute on the packed weights as a constant (the first that
    gives one). The data shape is a list of ints (None if not static), the
    weight a numpy array in the call's kernel layout (None if not a
    constant); a replacement returns None to leave the call to the next.
    One pass over the module: each weight is read out once."""
    import tvm
    from tvm import relax

    conv2d = tvm.ir.Op.get("relax.nn.conv2d")
    permute_dims = tvm.ir.Op.get("relax.permute_dims")

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call):
            call = self.visit_expr_post_order(call)
            if call.op != conv2d:
                return call
            shape, weight = _static_shape(call.args[0]), self._constant(call.args[1])
            replaced = next((r for r in (replace(call, shape, weight) for replace in replacements) if r), None)
            if replaced is None:
                return call
            compute, packed, args, name = replaced
            return self.builder_.call_te(compute, call.args[0], relax.const(packed), *args,
                                         primfunc_name_hint=name)

        def _constant(self, expr):
            """The value of a weight as numpy: a constant, or a constant
            that ConvertLayout moved to HWIO (permute_dims). None otherwise."""
            expr = self._bound(expr)
            if isinstance(expr, relax.Call) and expr.op == permute_dims:
                value = self._constant(expr.args[0])
                return None if value is None else value.transpose([int(a) for a in expr.attrs.axes])
            value = getattr(expr, "value", None)  # a relax constant holds a tensor
            return value.numpy() if isinstance(value, tvm.runtime.Tensor) else None

        def _bound(self, expr):
            while isinstance(expr, relax.Var) and self.lookup_binding(expr) is not None:
                expr = self.lookup_binding(expr)
            return expr

    rewriter = Rewriter(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()


def nhwc_hwio_float32(call, data_shape, weight):
    """Whether a conv2d call is one these kernels compute: static NHWC
    data, constant float32 HWIO weights, NHWC out, no groups, no dilation."""
    attrs = call.attrs
    return (data_shape is not None and len(data_shape) == 4
            and weight is not None and weight.ndim == 4
            and attrs.data_layout == "NHWC" and attrs.kernel_layout == "HWIO"
            and attrs.out_layout == "NHWC" and int(attrs.groups) == 1
            and [int(d) for d in attrs.dilation] == [1, 1]
            and str(weight.dtype) == "float32" and str(attrs.out_dtype or "float32") == "float32")


def block_outputs(matrix, blocks=OUT_BLOCKS):
    """[..., I, O] -> [..., O / block, I, block], block the first of
    `blocks` that divides O, contiguous."""
    import numpy as np

    *lead, i, o = matrix.shape
    block = next(b for b in blocks if o % b == 0)
    blocked = matrix.reshape(*lead, i, o // block, block)
    axes = list(range(len(lead))) + [len(lead) + 1, len(lead), len(lead) + 2]
    return np.ascontiguousarray(blocked.transpose(axes))


def _static_shape(expr):
    """The shape of a relax tensor expression as ints, None if not static."""
    try:
        return [int(d) for d in expr.ty.shape]
    except (AttributeError, TypeError, ValueError):
        return None
