"""TVM's target for wasm32 with a build's features and threads, and the TIR
pipeline its kernels are built with.
"""

from wasmml.compiler.options import RELAXED_SIMD, THREAD_FEATURES, feature_list


def wasm_target(features, threads=1):
    """TVM's target for wasm32 with these LLVM features; with threads > 1,
    also atomics and bulk memory (a shared memory) and `num-cores`, which
    MetaSchedule's parallel loops are sized by."""
    import tvm

    mattr = feature_list(features)
    target = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm", "mattr": mattr}
    if threads > 1:
        mattr += [f for f in THREAD_FEATURES if f not in mattr]
        target["num-cores"] = threads
    if RELAXED_SIMD in mattr:
        # Without contraction LLVM keeps most a*b+c as a multiply and an add:
        # EfficientNet-Lite0 had 1515 f32x4.relaxed_madd and 1379 f32x4.mul
        # left over; with it, 2946 and none. A fused multiply-add rounds once
        # instead of twice, which relaxed_madd allows anyway.
        target["fast-math-contract"] = True
    return tvm.target.Target(target)


def tir_pipeline(target):
    """The TIR pipeline that builds kernels for `target`: TVM's default, or
    for a threaded target the default followed by parallel_noalias's
    outlining, which gives the parallel loops' bodies back the `noalias`
    their lambdas lose."""
    if int(target.attrs.get("num-cores", 1)) > 1:
        from wasmml.compiler import parallel_noalias

        return parallel_noalias.pipeline_name()
    return "default"
