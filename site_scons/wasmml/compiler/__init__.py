"""The compiler: one ONNX model into the three artifacts a wasm32 program
needs, a static archive of kernels, an execution plan and the weights. Run
as its own process by the tvm_model tool (`python -m wasmml.compiler`, or
this directory's __main__.py as a file), so SCons never imports TVM.

- cli: the command line and the order of the steps;
- errors: what a user-caused failure is (ModelError) and its one line;
- options: the options the SCons tools check too (no TVM import);
- onnx_import: ONNX model and model.json to Relax, with the graph rewrites
  (fold_batch_norm: batch norms folded into the convolutions before them);
- pipelines: the Relax pipelines by name, and lower() with the tuning
  database's schedules;
- target: TVM's wasm32 target and the TIR pipeline its kernels build with;
- kernels: our own kernels, by family (kernels/__init__.py);
- parallel, parallel_noalias: threaded builds' parallel loops;
- plan: the execution plan rust/runtime executes;
- diagnosis: failures explained in terms of the model's nodes;
- artifacts: the archive, plan and weights, written whole or not at all.

The tuning databases' layout and format are wasmml.tuning_db's.
This file imports nothing: the tools import `options` cheaply.
"""
