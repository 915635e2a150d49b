"""The compile options the SCons tools and the compiler agree on (the
default pipeline, wasm features, threads), with no TVM import: the tools
check a build's options with them.
"""

RELAXED_SIMD = "+relaxed-simd"
# what a threaded build's kernels need besides the build's features: real
# atomics and a shared memory (wasm-ld refuses to mix objects without them)
THREAD_FEATURES = ("+atomics", "+bulk-memory")
DEFAULT_PIPELINE = "nhwc"


def feature_list(features):
    """"+simd128, +relaxed-simd" -> ["+simd128", "+relaxed-simd"]"""
    return [f.strip() for f in features.split(",") if f.strip()]


def thread_count(value):
    """TVM_THREADS as an int >= 1; ValueError with the one-line reason.
    Not 'auto' (the build machine's cores): a module runs elsewhere, and
    WASI cannot tell it how many it has; $TVM_NUM_THREADS can at run time."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"TVM_THREADS={value!r}: expected a number of threads, 1 or more")
    return n
