"""The execution plan: PlanBuilder turns the lowered main function into the
steps, buffers and constants that rust/runtime executes.
"""

import math

from wasmml.compiler.errors import ModelError


PLAN_FORMAT = 1
ALIGN = 64  # TVM kernels assume 64-byte aligned buffers (kAllocAlignment).


def align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


class PlanBuilder:
    """Turns the lowered `main` (a straight line of storage allocations,
    tensor views, kernel calls and reshapes) into a static plan: every tensor
    gets a fixed place in one arena or in the weights blob."""

    IGNORED = {"relax.vm.kill_object", "relax.null_value"}
    IGNORED_BUILTINS = {"vm.builtin.check_tensor_info", "vm.builtin.match_shape"}

    def __init__(self):
        self.tensors = []          # plan entries
        self.values = {}           # relax Var -> tensor index, arena offset or tuple
        self.arena = 0
        self.weights = bytearray()
        self.const_ids = {}        # constant handle -> tensor index
        self.steps = []
        self.kernels = []

    def _tensor(self, dtype, shape, region, offset):
        self.tensors.append({"dtype": dtype, "shape": [int(d) for d in shape],
                             "region": region, "offset": int(offset)})
        return len(self.tensors) - 1

    def _arena_alloc(self, nbytes):
        offset = self.arena
        self.arena = align(self.arena + int(nbytes))
        return offset

    def _constant(self, const):
        key = const.value.__chandle__()
        if key not in self.const_ids:
            array = const.value.numpy()
            offset = len(self.weights)
            self.weights += array.tobytes()
            self.weights += bytes(align(len(self.weights)) - len(self.weights))
            self.const_ids[key] = self._tensor(str(array.dtype), array.shape, "weights", offset)
        return self.const_ids[key]

    def _arg(self, arg):
        import tvm
        from tvm import relax

        if isinstance(arg, relax.Var):
            return {"tensor": self.values[arg]}
        if hasattr(arg, "value") and isinstance(arg.value, tvm.runtime.Tensor):
            return {"tensor": self._constant(arg)}
        if isinstance(arg, tvm.tirx.IntImm):
            return {"int": int(arg.value)}
        raise ModelError(f"unsupported kernel argument in plan: {arg}")

    def _tensor_like(self, var, shape):
        return str(var.ty.dtype), [int(d) for d in shape]

    def bind(self, var, value):
        import tvm
        from tvm import relax

        if isinstance(value, relax.Var):
            self.values[var] = self.values[value]
        elif isinstance(value, relax.Tuple):
            self.values[var] = tuple(self._arg(f)["tensor"] for f in value.fields)
        elif isinstance(value, relax.TupleGetItem):
            self.values[var] = self.values[value.tuple_value][value.index]
        elif not isinstance(value, relax.Call):
            raise ModelError(f"unsupported statement in plan: {value}")
        elif isinstance(value.op, relax.GlobalVar):
            name = value.op.name_hint
            if name not in self.kernels:
                self.kernels.append(name)
            self.steps.append({"kernel": name, "args": [self._arg(a) for a in value.args]})
        elif isinstance(value.op, relax.ExternFunc):
            self._builtin(var, value)
        elif isinstance(value.op, tvm.ir.Op):
            self._vm_op(var, value)
        else:
            raise ModelError(f"unsupported call in plan: {value.op}")

    def _builtin(self, var, call):
        symbol = call.op.global_symbol
        if symbol in self.IGNORED_BUILTINS:
            return
        if symbol != "vm.builtin.reshape":
            raise ModelError(f"unsupported VM builtin in plan: {symbol}")
        src = self.tensors[self._arg(call.args[0])["tensor"]]
        dtype, shape = self._tensor_like(var, call.args[1].values)
        self.values[var] = self._tensor(dtype, shape, src["region"], src["offset"])

    def _vm_op(self, var, call):
        name = call.op.name
        if name in self.IGNORED:
            return
        if name == "relax.vm.alloc_storage":
            self.values[var] = self._arena_alloc(call.args[0].values[0])
        elif name == "relax.vm.alloc_tensor":
            base = self.values[call.args[0]]
            offset = int(call.args[1].value) if hasattr(call.args[1], "value") else int(call.args[1])
            dtype, shape = self._tensor_like(var, call.args[2].values)
            self.values[var] = self._tensor(dtype, shape, "arena", base + offset)
        else:
            raise ModelError(f"unsupported VM operation in plan: {name}")

    def build(self, func, input_names, output_names):
        from tvm import relax

        inputs = []
        for param, name in zip(func.params, input_names):
            dtype, shape = self._tensor_like(param, param.ty.shape.values)
            self.values[param] = self._tensor(dtype, shape, "arena",
                                              self._arena_alloc(nbytes(dtype, shape)))
            inputs.append({"name": name, "tensor": self.values[param]})
        for block in func.body.blocks:
            for binding in block.bindings:
                self.bind(binding.var, binding.value)
        out = self._outputs(func.body.body)
        if len(out) != len(output_names):
            raise ModelError(f"graph has {len(output_names)} outputs but TVM produced {len(out)}")
        return {
            "format": PLAN_FORMAT,
            "arena_size": self.arena,
            "weights_size": len(self.weights),
            "kernels": self.kernels,
            "tensors": self.tensors,
            "inputs": inputs,
            "outputs": [{"name": n, "tensor": t} for n, t in zip(output_names, out)],
            "steps": self.steps,
        }

    def _outputs(self, result):
        """The tensors of main's result: a tuple of them, a variable (bound
        to a tensor or a tuple), or a constant (a graph whose only output is
        an initializer or a Constant node)."""
        from tvm import relax

        if isinstance(result, relax.Tuple):
            return [self._arg(f)["tensor"] for f in result.fields]
        if isinstance(result, relax.Var):
            out = self.values[result]
            return list(out) if isinstance(out, tuple) else [out]
        return [self._arg(result)["tensor"]]


def nbytes(dtype, shape):
    import numpy as np

    return math.prod(shape) * np.dtype(dtype).itemsize
