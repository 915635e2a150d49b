"""How fast one thread can go, measured on this machine: the bound that the
width of wasm's vectors puts on any wasm module next to native code.

  - model_flops: the floating-point operations of a model's convolutions and
    matrix products (2 per multiply-add), from its ONNX graph;
  - wasm_peak_gflops: f32x4 multiply-adds on independent accumulators in
    wasmtime, the most a wasm module's kernels can reach (SIMD128: a
    multiply and an add; relaxed SIMD: one fused f32x4.relaxed_madd);
  - native_gemm_gflops: native onnxruntime's single-threaded matrix product
    (its MLAS kernels use the CPU's widest vectors, AVX-512 where it has it).

A model that onnxruntime runs at G GFLOP/s cannot run in wasm under
G / peak times its time, however well its kernels are scheduled, unless
the wasm computes fewer operations (Winograd's 3x3 convolutions do)."""
import time

import numpy as np

# Independent accumulators: enough to cover the multiply-add's latency on
# both vector ports (4 cycles x 2 ports), few enough for 16 registers.
ACCUMULATORS = 12
ITERATIONS = 4_000_000


def model_flops(onnx_path, input_shapes):
    """2 x the multiply-adds of every Conv, Gemm and MatMul, with the
    graph's shapes inferred from `input_shapes` ({input name: shape})."""
    import onnx

    model = onnx.load(str(onnx_path))
    for value in model.graph.input:
        if value.name in input_shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, input_shapes[value.name]):
                dim.Clear()
                dim.dim_value = size
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            # each output element sums in_channels/group x kernel elements
            weight = shapes[node.input[1]]
            macs += int(np.prod(shapes[node.output[0]])) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes[node.input[0]]
            transposed = any(attr.name == "transA" and attr.i for attr in node.attribute)
            inner = a[-2] if node.op_type == "Gemm" and transposed else a[-1]
            macs += int(np.prod(shapes[node.output[0]])) * inner
    return 2 * macs


def _peak_wat(fused):
    """A function `run(n)` of n iterations, each one multiply-add on each
    of the accumulators, returning their sum (so nothing is dead code).
    Each product reads its accumulator, so none is hoisted out of the loop."""
    step = ("(f32x4.relaxed_madd (local.get $a{i}) (local.get $x) (local.get $y))" if fused else
            "(f32x4.add (f32x4.mul (local.get $a{i}) (local.get $x)) (local.get $y))")
    locals_ = " ".join(f"(local $a{i} v128)" for i in range(ACCUMULATORS))
    inits = "\n".join(f"(local.set $a{i} (f32x4.splat (f32.const {i})))" for i in range(ACCUMULATORS))
    steps = "\n".join(f"(local.set $a{i} {step.format(i=i)})" for i in range(ACCUMULATORS))
    total = "(local.get $a0)"
    for i in range(1, ACCUMULATORS):
        total = f"(f32x4.add {total} (local.get $a{i}))"
    return f"""(module
      (func (export "run") (param $n i32) (result f32)
        (local $x v128) (local $y v128) {locals_}
        (local.set $x (f32x4.splat (f32.const 0.999)))
        (local.set $y (f32x4.splat (f32.const 0.001)))
        {inits}
        (loop $next
          {steps}
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br_if $next (local.get $n)))
        (f32x4.extract_lane 0 {total})))"""


def peak_loop(fused):
    """(store, run): the multiply-add loop instantiated in wasmtime, called
    as run(store, iterations)."""
    import wasmtime

    config = wasmtime.Config()
    config.wasm_relaxed_simd = True
    store = wasmtime.Store(wasmtime.Engine(config))
    module = wasmtime.Module(store.engine, _peak_wat(fused))
    return store, wasmtime.Instance(store, module, []).exports(store)["run"]


def wasm_peak_gflops(fused, repeats=5):
    """The fastest of `repeats` runs of the multiply-add loop in wasmtime, in
    GFLOP/s (a multiply-add on 4 lanes is 8 operations)."""
    store, run = peak_loop(fused)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(store, ITERATIONS)
        best = min(best, time.perf_counter() - start)
    return ITERATIONS * ACCUMULATORS * 8 / best / 1e9


def native_gemm_gflops(size=1024, repeats=5):
    """The fastest of `repeats` single-threaded size^3 matrix products in
    native onnxruntime, in GFLOP/s."""
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal((size, size), dtype=np.float32) for n in "ab"}
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9
