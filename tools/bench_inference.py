"""Inference speed of this project's WASI modules next to the engines a user
would otherwise pick, measured side by side in one run on the same input.

    .venv/bin/python tools/bench_inference.py [--models efficientnet_lite0,resnet50] [--runs 10]
        [--features +simd128[,+relaxed-simd]] [--pipeline nhwc|fold-fuse|prepack]

For each model (the bundled EfficientNet-Lite0, and ResNet50 with seeded
random weights made by models/resnet50/make_onnx.py), one thread everywhere:
  - onnxruntime, native;
  - onnxruntime-web's WebAssembly backend (SIMD) under Node;
  - TensorFlow.js's WebAssembly backend (SIMD) under Node, on the same graph
    converted by tools/bench/tfjs_graph.py (n/a if it cannot convert it);
  - TVM native (LLVM for this CPU) with the same compile pipeline as ours;
  - ours: run-model.wasm under wasmtime (times measured inside the module).
All outputs are checked against native onnxruntime before any time is
printed. Then for each engine: the first run, the median and minimum of
--runs runs, and our median over its median. Last, our module's load time
(wasmtime compiling it, and deserializing it from a precompiled cache) and
its peak linear memory next to the weights and the planned activations.

The modules are built first with the plugin (tests/project/SConstruct into
build/bench/); the npm engines are installed by tools/setup.sh.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")  # before TVM is imported
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "tools" / "bench"
OUT = REPO / "build" / "bench"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "models" / "resnet50"))
sys.path.insert(0, str(REPO / "site_scons"))
from wasmml.compile_model import DEFAULT_PIPELINE, find_tuning_db  # noqa: E402

MODELS = {
    "efficientnet_lite0": lambda: REPO / "models" / "efficientnet_lite0" / "model.json",
    "resnet50": lambda: Path(__import__("make_onnx").write()),
}
# Our median over each engine's, printed as a ratio. Outputs must agree
# with native onnxruntime within this, relative to the largest logit.
TOLERANCE = 1e-3


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--features", default="+simd128",
                   help="wasm features of our module (TVM_TARGET_FEATURES), e.g. +simd128,+relaxed-simd")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE,
                   help=f"compile pipeline of our module (TVM_PIPELINE, default {DEFAULT_PIPELINE})")
    ns = p.parse_args()
    ns.models = [m.strip() for m in ns.models.split(",") if m.strip()]
    unknown = [m for m in ns.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]} (known: {', '.join(MODELS)})")
    if ns.runs < 1:
        p.error("--runs must be at least 1")
    return ns


def build(model_jsons, features, pipeline):
    """run-model.wasm for each model, with the plugin, into build/bench/NAME/."""
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.executable).with_name("scons")), "-Q", "-C", str(OUT),
                    "-f", str(REPO / "tests" / "project" / "SConstruct"),
                    "--site-dir", str(REPO / "site_scons"),
                    f"CARGO_TARGET_DIR={REPO / 'build' / 'cargo'}", f"TVM_TARGET_FEATURES={features}",
                    f"TVM_PIPELINE={pipeline}",
                    "MODELS=" + ",".join(str(p) for p in model_jsons)], check=True)


class Model:
    def __init__(self, name, model_json, features, pipeline):
        meta = json.loads(Path(model_json).read_text())
        self.name = name
        self.onnx = Path(model_json).parent / meta["onnx"]
        (self.input, spec), = meta["inputs"].items()
        self.shape = spec["shape"]
        self.dir = OUT / "build" / name
        self.wasm = self.dir / "run-model.wasm"
        self.plan = json.loads((self.dir / f"{name}.plan.json").read_text())
        self.pipeline = pipeline
        # the database the build applied, if any (the tvm_model tool asks the same)
        self.tuning_db = find_tuning_db(str(Path(model_json).parent), pipeline, features)


# --- the engines: each returns (times in ms, output) ---------------------------

def onnxruntime_native(model, x, runs):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(model.onnx), options, providers=["CPUExecutionProvider"])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = session.run(None, {model.input: x})[0]
        times.append((time.perf_counter() - start) * 1e3)
    return times, out.ravel()


def _node(script, config, io):
    out_path = Path(io) / f"{script}.out"
    proc = subprocess.run(["node", str(BENCH / script), json.dumps(dict(config, output=str(out_path)))],
                          capture_output=True, text=True, cwd=BENCH)
    if proc.returncode != 0:
        raise RuntimeError(f"{script}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return json.loads(proc.stdout.splitlines()[-1])["times_ms"], np.fromfile(out_path, dtype=np.float32)


def onnxruntime_web(model, x, runs, io):
    inputs = {model.input: {"file": str(Path(io) / "input_0.bin"), "shape": model.shape}}
    return _node("ort_web.mjs", {"model": str(model.onnx), "inputs": inputs, "runs": runs}, io)


def tfjs_wasm(model, x, runs, io):
    import tfjs_graph

    graph = tfjs_graph.write(str(model.onnx), str(Path(io) / "tfjs"))
    return _node("tfjs_wasm.mjs", {"graph": graph, "input": str(Path(io) / "input_0.bin"),
                                   "shape": model.shape, "runs": runs}, io)


def tvm_native(model, x, runs):
    import onnx
    import tvm
    from tvm import relax
    from wasmml import compile_model as cm

    shapes = {model.input: model.shape}
    mod = cm.to_relax(onnx.load(str(model.onnx)), shapes, model.pipeline)
    target = tvm.target.Target.from_device(tvm.cpu())  # LLVM for this CPU, not a generic x86
    lowered = cm.lower(mod, target, model.pipeline, model.tuning_db)  # the same schedules as ours
    vm = relax.VirtualMachine(relax.build(lowered, target, relax_pipeline=None), tvm.cpu())
    arg = tvm.runtime.tensor(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = vm["main"](arg)
        times.append((time.perf_counter() - start) * 1e3)
    out = out if hasattr(out, "numpy") else out[0]  # a tensor, or a tuple of them
    return times, out.numpy().ravel()


class Ours:
    """run-model.wasm in wasmtime, in this process: also its load times and
    its linear memory after the runs."""

    def __init__(self, model, runs, io):
        import wasmtime

        wasm = model.wasm.read_bytes()
        engine = wasmtime.Engine()
        start = time.perf_counter()
        module = wasmtime.Module(engine, wasm)
        self.compile_ms = (time.perf_counter() - start) * 1e3
        with tempfile.TemporaryDirectory() as cache:
            path = Path(cache) / "module.cwasm"
            path.write_bytes(module.serialize())
            start = time.perf_counter()
            module = wasmtime.Module.deserialize_file(engine, str(path))
            self.cached_ms = (time.perf_counter() - start) * 1e3
        stderr = Path(io) / "stderr.txt"
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["run-model", "/io", "--repeat", str(max(runs, 2))]
        wasi.preopen_dir(str(io), "/io")
        wasi.stderr_file = str(stderr)
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        instance = linker.instantiate(store, module)
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as e:
            if e.code != 0:
                raise RuntimeError(f"run-model exited {e.code}: {stderr.read_text()}")
        self.memory = instance.exports(store)["memory"].data_len(store)
        self.times = [float(line.split()[1]) for line in stderr.read_text().splitlines()
                      if line.startswith("run_ms ")][:runs]
        self.output = np.fromfile(Path(io) / "output_0.bin", dtype=np.float32)


# --- the report -------------------------------------------------------------

def measure(model, runs):
    """{engine: (times, output) or the reason it could not run}."""
    x = np.random.default_rng(0).standard_normal(model.shape, dtype=np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as io:
        x.tofile(Path(io) / "input_0.bin")
        ours = Ours(model, runs, io)
        results["onnxruntime native"] = onnxruntime_native(model, x, runs)
        for name, engine in (("onnxruntime-web wasm (Node)", onnxruntime_web),
                             ("TensorFlow.js wasm (Node)", tfjs_wasm)):
            try:
                results[name] = engine(model, x, runs, io)
            except Exception as e:  # noqa: BLE001 -- a peer that cannot run is reported, not fatal
                results[name] = f"cannot run it: {e}"
        results["TVM native (same pipeline)"] = tvm_native(model, x, runs)
    results["ours: wasmtime"] = (ours.times, ours.output)
    return results, ours


def check_outputs(model, results):
    reference = results["onnxruntime native"][1]
    scale = max(1.0, float(np.abs(reference).max()))
    for name, result in results.items():
        if isinstance(result, str):
            continue
        diff = float(np.abs(result[1] - reference).max())
        print(f"  {name:<30} max |diff| vs onnxruntime {diff:.2e}")
        if diff > TOLERANCE * scale:
            sys.exit(f"error: {model.name}: {name} disagrees with onnxruntime (max |diff| {diff:.3g})")


def table(results):
    ours = statistics.median(results["ours: wasmtime"][0])
    print("| engine (1 thread) | first ms | median ms | min ms | ours / engine |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, result in results.items():
        if isinstance(result, str):
            print(f"| {name} | {result} | | | |")
            continue
        times = result[0]
        median = statistics.median(times)
        print(f"| {name} | {times[0]:.1f} | {median:.1f} | {min(times):.1f} | {ours / median:.2f}x |")


def main():
    ns = parse_args()
    jsons = {name: MODELS[name]() for name in ns.models}
    build(jsons.values(), ns.features, ns.pipeline)
    for name, model_json in jsons.items():
        model = Model(name, model_json, ns.features, ns.pipeline)
        tuned = (f"kernels tuned by {Path(model.tuning_db).relative_to(REPO)}" if model.tuning_db
                 else "untuned kernels")
        print(f"\n## {name} ({ns.runs} runs per engine, input {model.shape}, "
              f"{ns.pipeline} {ns.features}, {tuned})\n", flush=True)
        results, ours = measure(model, ns.runs)
        check_outputs(model, results)
        print()
        table(results)
        planned = model.plan["weights_size"] + model.plan["arena_size"]
        print(f"\nmodule {model.wasm.stat().st_size / 1e6:.1f} MB: load {ours.compile_ms:.0f} ms "
              f"compiling, {ours.cached_ms:.0f} ms from a precompiled cache; linear memory "
              f"{ours.memory / 2**20:.1f} MiB after the runs, for {model.plan['weights_size'] / 2**20:.1f} MiB "
              f"of weights + {model.plan['arena_size'] / 2**20:.1f} MiB of planned activations "
              f"({ours.memory / planned:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
