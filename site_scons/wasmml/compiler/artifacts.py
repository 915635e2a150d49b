"""The three artifacts written as a whole or not at all: the kernels' object
and archive (llvm-ar), the plan and the weights.
"""

import json
import os
import subprocess

from wasmml import staging
from wasmml.compiler.target import tir_pipeline


def build_object(mod, target, path):
    from tvm import relax

    ex = relax.build(mod, target, relax_pipeline=None, tir_pipeline=tir_pipeline(target),
                     system_lib=True)
    ex.mod.imports[0].write_to_file(path)


def write_outputs(args, plan, weights, obj_path):
    """Write every artifact beside its final name, then rename them all, so a
    failure or a kill never leaves a partial artifact under a final name."""
    with staging.all_into_place(args.archive, args.plan, args.weights) as (archive_tmp, plan_tmp, weights_tmp):
        member = os.path.join(os.path.dirname(obj_path), args.name + ".o")
        os.replace(obj_path, member)
        # D: deterministic (no timestamps, uids); s: write the symbol index.
        ar = subprocess.run([args.llvm_ar, "rcsD", archive_tmp, member],
                            capture_output=True, text=True)
        if ar.returncode != 0:
            raise OSError(f"{os.path.basename(args.llvm_ar)}: {_tool_error(ar)}")
        _write(plan_tmp, json.dumps(plan, indent=1, sort_keys=True).encode())
        _write(weights_tmp, bytes(weights))


def _tool_error(proc):
    """What a failed tool said: its error line, not the stack dump after it
    (llvm-ar aborts on a full disk: "LLVM ERROR: IO failure ...")."""
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [f"exited with {proc.returncode}"])[0][:300]


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def remove_outputs(args):
    for path in (args.archive, args.plan, args.weights):
        for p in (path, path + ".tmp"):
            if os.path.exists(p):
                os.remove(p)


def write_error(e, default_path):
    """One line for a failure to write the artifacts (a read-only or full
    build directory), naming the file."""
    return f"cannot write {e.filename or default_path} ({e.strerror or e})"
