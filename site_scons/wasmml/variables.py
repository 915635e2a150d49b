"""The plugin's command-line variables, for an SConstruct to extend:

    vars = wasmml.variables.plugin_variables(ARGUMENTS)
    vars.Add("IMAGE", ...)
    env = Environment(variables=vars, tools=["tvm_model", "cargo_wasm"])
"""

import os

from SCons.Variables import BoolVariable, EnumVariable, PathVariable, Variables

from wasmml.compiler.options import DEFAULT_PIPELINE


def plugin_variables(arguments, cargo_registry="auto"):
    """The variables, with `cargo_registry` as CARGO_REGISTRY's default (a
    project whose Cargo.lock was made against Debian's crates says so)."""
    variables = Variables(None, arguments)
    variables.Add("TVM_TARGET_FEATURES", "LLVM features of the wasm32 kernels", "+simd128")
    variables.Add(EnumVariable("TVM_PIPELINE", "model optimisation pipeline", DEFAULT_PIPELINE,
                               allowed_values=("nhwc", "fold-fuse", "prepack", "default")))
    variables.Add(EnumVariable("TVM_TUNING", "apply the model's tuning database (models/NAME/tuning/)",
                               "on", allowed_values=("on", "off")))
    variables.Add("TVM_THREADS", "N > 1: kernels with parallel loops, linked into modules that run them "
                  "on N wasi threads ($TVM_NUM_THREADS at run time overrides N)", "1")
    variables.Add("TUNE_TRIALS", "`scons tune`: measured candidates per kernel", "64")
    variables.Add("TUNE_FOCUS", "`scons tune`: tune only the N kernels that cost most so far (0: all)",
                  "0")
    variables.Add("TUNE_KERNELS", "`scons tune`: tune only the kernels whose names contain one of "
                  "these comma-separated texts (default: all)", "")
    variables.Add(BoolVariable("TUNE_PRUNE", "`scons tune`: afterwards, drop the records of kernels "
                               "the model no longer has", False))
    variables.Add(EnumVariable(
        "TUNE_MEASURE", "`scons tune`: where candidates are timed", "wasmtime",
        allowed_values=("wasmtime", "native")))
    variables.Add(EnumVariable("CARGO_LTO", "link the modules with LTO (off: links several times "
                               "faster, runs a few percent slower)", "on", allowed_values=("on", "off")))
    variables.Add(EnumVariable("CARGO_REGISTRY", "where cargo takes crates from (auto: Debian's offline "
                               "crate sources when crates.io is unreachable)", cargo_registry,
                               allowed_values=("auto", "debian", "default")))
    variables.Add("CARGO_TARGET_DIR", "cargo's target directory", "#build/cargo")
    variables.Add(PathVariable("CACHE_DIR", "shared build cache (SCons CacheDir); also $WASMML_CACHE_DIR",
                               os.environ.get("WASMML_CACHE_DIR", ""), PathVariable.PathAccept))
    variables.Add(PathVariable("WASCC_KEYS_DIR", "where actor signing keys are generated and kept "
                               "(outside build/; $WASCC_ACCOUNT_SEED and $WASCC_MODULE_SEED override)",
                               "#keys", PathVariable.PathAccept))
    return variables
