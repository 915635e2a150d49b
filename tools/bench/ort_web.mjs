// onnxruntime-web's WebAssembly backend (SIMD, one thread) under Node.
//
//   node ort_web.mjs CONFIG_JSON
//
// CONFIG: {"model": path, "inputs": {name: {"file", "shape"}}, "output": path,
// "runs": N}. Runs the model N times on the float32 inputs, writes the first
// output's float32 data to "output" and prints {"times_ms": [...]} on stdout.
import { readFileSync, writeFileSync } from "node:fs";
import * as ort from "onnxruntime-web";

const config = JSON.parse(process.argv[2]);
ort.env.wasm.numThreads = 1;       // the same thread count as every other row
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
console.log(JSON.stringify({ times_ms: times }));
