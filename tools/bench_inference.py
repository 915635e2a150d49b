"""One model's inference time in wasmtime next to onnxruntime's, measured
side by side in one run on the same input (no speed target; a report).

    .venv/bin/scons run-model && .venv/bin/python tools/bench_inference.py [--runs 10]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

REPO = Path(__file__).resolve().parent.parent
ONNX = REPO / "models/efficientnet_lite0/efficientnet_lite0.onnx"
WASM = REPO / "build/wasi/run-model.wasm"


def wasm_times(tensor, runs):
    """Per-run times that run-model itself measures inside the module, so
    they exclude loading and compiling the module."""
    with tempfile.TemporaryDirectory() as io:
        tensor.tofile(Path(io) / "input_0.bin")
        out = subprocess.run([sys.executable, str(REPO / "tools/wasmrun.py"), "--dir", io,
                              str(WASM), io, "--repeat", str(runs)],
                             capture_output=True, text=True, check=True)
        times = [float(line.split()[1]) for line in out.stderr.splitlines()
                 if line.startswith("run_ms ")]
        return times, np.fromfile(Path(io) / "output_0.bin", dtype=np.float32)


def onnxruntime_times(tensor, runs):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(ONNX), options, providers=["CPUExecutionProvider"])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = session.run(None, {"input": tensor})[0]
        times.append((time.perf_counter() - start) * 1e3)
    return times, out.ravel()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    tensor = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    wasm, wasm_out = wasm_times(tensor, runs)
    ort, ort_out = onnxruntime_times(tensor, runs)
    diff = float(np.abs(wasm_out - ort_out).max())
    print(f"outputs agree: max |diff| = {diff:.2e}")
    print(f"{'runtime':<28}{'first ms':>10}{'median ms':>11}{'min ms':>9}")
    for name, t in (("wasmtime (run-model.wasm)", wasm), ("onnxruntime native, 1 thread", ort)):
        print(f"{name:<28}{t[0]:>10.1f}{statistics.median(t):>11.1f}{min(t):>9.1f}")
    print(f"ratio wasm / onnxruntime (median): {statistics.median(wasm) / statistics.median(ort):.1f}x")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
