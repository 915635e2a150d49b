// TensorFlow.js's WebAssembly backend (SIMD, one thread) under Node, on a
// graph written by tfjs_graph.py (NHWC, folded and fused as TF.js's
// converter would leave it).
//
//   node tfjs_wasm.mjs CONFIG_JSON
//
// CONFIG: {"graph": dir, "input": file, "shape": NCHW shape, "output": path,
// "runs": N}. Writes the output's float32 data to "output" and prints
// {"times_ms": [...]} on stdout.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import { setThreadsCount, setWasmPaths } from "@tensorflow/tfjs-backend-wasm";

const config = JSON.parse(process.argv[2]);
const require = createRequire(import.meta.url);
setWasmPaths(path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm")) + path.sep);
setThreadsCount(1);
await tf.setBackend("wasm");

const graph = JSON.parse(readFileSync(path.join(config.graph, "graph.json")));
const blob = readFileSync(path.join(config.graph, "weights.bin"));
const weights = {};
for (const [name, { offset, shape }] of Object.entries(graph.weights)) {
  const size = shape.reduce((a, b) => a * b, 1);
  weights[name] = tf.tensor(new Float32Array(blob.buffer, blob.byteOffset + offset, size), shape);
}

const nhwcToNchw = (x) => (x.rank === 4 ? tf.transpose(x, [0, 3, 1, 2]) : x);
const ops = {
  conv2d: (n, v) => tf.fused.conv2d({ x: v[n.input], filter: weights[n.filter], bias: weights[n.bias],
    strides: n.strides, dilations: n.dilations, pad: n.pad, activation: n.activation }),
  depthwise: (n, v) => tf.fused.depthwiseConv2d({ x: v[n.input], filter: weights[n.filter],
    bias: weights[n.bias], strides: n.strides, dilations: n.dilations, pad: n.pad,
    activation: n.activation }),
  relu: (n, v) => tf.relu(v[n.inputs[0]]),
  clip: (n, v) => tf.clipByValue(v[n.input], n.min, n.max),
  add: (n, v) => tf.add(v[n.inputs[0]], v[n.inputs[1]]),
  maxpool: (n, v) => tf.maxPool(tf.pad(v[n.input], n.pad, -Infinity), n.kernel, n.strides, "valid"),
  gap: (n, v) => tf.mean(v[n.inputs[0]], [1, 2], true),
  flatten: (n, v) => { const x = nhwcToNchw(v[n.inputs[0]]); return tf.reshape(x, [x.shape[0], -1]); },
  matmul: (n, v) => tf.add(tf.matMul(v[n.input], weights[n.weight]), weights[n.bias]),
};

function infer(input) {
  return tf.tidy(() => {
    const values = { [graph.input]: tf.transpose(input, [0, 2, 3, 1]) };  // NCHW -> NHWC
    for (const node of graph.nodes) values[node.output] = ops[node.op](node, values);
    return values[graph.output];
  });
}

const bytes = readFileSync(config.input);
const input = tf.tensor(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4), config.shape);
const times = [];
let data;
for (let i = 0; i < config.runs; i++) {
  const start = performance.now();
  const out = infer(input);
  data = out.dataSync();
  times.push(performance.now() - start);
  out.dispose();
}
writeFileSync(config.output, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
console.log(JSON.stringify({ times_ms: times }));
