// onnxruntime-web's WebAssembly backend (SIMD) under Node, on one thread or
// more: its threaded build runs Emscripten pthreads, which in Node are
// worker_threads over a shared WebAssembly memory (Node 20 has wasm threads
// and SharedArrayBuffer on by default; no flag, no cross-origin isolation).
//
//   node ort_web.mjs CONFIG_JSON
//
// CONFIG: {"model": path, "inputs": {name: {"file", "shape"}}, "output": path,
// "runs": N, "threads": N (default 1)}. Runs the model N times on the float32 inputs, writes the first
// output's float32 data to "output" and prints {"times_ms": [...]} on stdout.
import { readFileSync, writeFileSync } from "node:fs";
import * as ort from "onnxruntime-web";

const config = JSON.parse(process.argv[2]);
ort.env.wasm.numThreads = config.threads ?? 1;  // the same thread count as the row it is compared with
ort.env.wasm.simd = true;
ort.env.logLevel = "error";

const session = await ort.InferenceSession.create(readFileSync(config.model), {
  executionProviders: ["wasm"],
  graphOptimizationLevel: "all",
});
const feeds = {};
for (const [name, { file, shape }] of Object.entries(config.inputs)) {
  const bytes = readFileSync(file);
  const data = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  feeds[name] = new ort.Tensor("float32", data, shape);
}
const times = [];
let result;
for (let i = 0; i < config.runs; i++) {
  const start = performance.now();
  result = await session.run(feeds);
  times.push(performance.now() - start);
}
const first = result[session.outputNames[0]];
writeFileSync(config.output, Buffer.from(first.data.buffer, first.data.byteOffset, first.data.byteLength));
// the threads it ran on: numThreads falls back to 1 where threads are not supported
console.log(JSON.stringify({ times_ms: times, threads: ort.env.wasm.numThreads }));
