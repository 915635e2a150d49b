"""wasm-ml: an SCons plugin that compiles ONNX models with Apache TVM into
wasm32 archives, and links them into pure WebAssembly programs with Cargo.

An SConstruct loads its tools as SCons tools:

    import wasmml
    env = Environment(tools=[wasmml.tvm_model, wasmml.cargo_wasm])

(or `env.Tool(wasmml.tvm_model)`, or by name with `toolpath=[wasmml.TOOLPATH]`).
This module imports neither SCons nor TVM until a tool is asked for, so the
compiler's own process stays light.
"""

import os

__version__ = "0.2.0"

_HERE = os.path.dirname(os.path.abspath(__file__))

# The directory of the tool modules, for `toolpath=[wasmml.TOOLPATH]`.
TOOLPATH = os.path.join(_HERE, "site_tools")
TOOLS = ("tvm_model", "cargo_wasm", "wascap_sign")


def setup(env):
    """The tree's build policy, from its SConstruct (wasmml.project): one
    build at a time, the decider for large artifacts, $CACHE_DIR."""
    from wasmml import project

    project.setup(env)


def crates_dir():
    """Where the Rust half (the crates `model-runtime` and `model-embed`)
    is: inside the installed package, or the checkout's rust/ workspace."""
    packaged = os.path.join(_HERE, "crates")
    if os.path.isdir(os.path.join(packaged, "runtime")):
        return packaged
    return os.path.normpath(os.path.join(_HERE, "..", "..", "rust"))


def __getattr__(name):
    """wasmml.tvm_model, wasmml.cargo_wasm, wasmml.wascap_sign: SCons Tool
    objects, for `tools=[...]` and `env.Tool(...)`."""
    if name in TOOLS:
        import SCons.Tool

        tool = SCons.Tool.Tool(name, toolpath=[TOOLPATH])
        globals()[name] = tool
        return tool
    raise AttributeError(f"module 'wasmml' has no attribute {name!r}")
