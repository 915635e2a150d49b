"""What a compiled model's nodes tell the builders that link them, and the
rule that ties their artifacts together: a program linked from a model
goes when the model stops compiling, so no artifact of a model that does
not compile remains.

tvm_model marks its archive with the build's thread count; cargo_wasm
reads it (kernels with parallel loops need the runtime's threads) and
lists the programs it links as the model's dependents; tvm_model removes
those when a compile fails. The two tools meet only here.
"""

import os


def mark_threads(archive, threads):
    """Records on a model's archive node the TVM_THREADS it compiles for."""
    archive.attributes.tvm_threads = threads


def threads_of(archive):
    """The TVM_THREADS a model's archive node was compiled for (1 if none)."""
    return getattr(archive.attributes, "tvm_threads", 1)


def add_dependents(model_nodes, programs):
    """Lists `programs` as built from the model whose nodes these are."""
    for node in model_nodes:
        node.attributes.dependents = _dependents(node) + list(programs)


def remove_dependents(model_nodes):
    """Removes the programs built from an earlier compile of these nodes'
    model, after its compile failed."""
    for node in model_nodes:
        for program in _dependents(node):
            if os.path.exists(program.abspath):
                os.remove(program.abspath)


def _dependents(node):
    return getattr(node.attributes, "dependents", [])
