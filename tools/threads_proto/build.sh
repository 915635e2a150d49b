#!/bin/sh
# LTO stays off: with LTO, the prebuilt std is recompiled from its bitcode with
# +atomics, its errno access becomes TLS, and wasm-ld refuses it against
# wasi-libc's non-TLS errno (R_WASM_MEMORY_ADDR_TLS_SLEB).
# Prototype build of run-model with TVM's parallel loops on wasi-threads
# (issue 25); see docs/threads-research.md. Usage, from the repository root:
#   tools/threads_proto/build.sh MODEL_ONNX MODEL_JSON NAME OUT_DIR
set -e
ONNX=$1 META=$2 NAME=$3 OUT=$4
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
mkdir -p "$OUT/model"
"$PY" "$ROOT/site_scons/wasmml/compile_model.py" --name "$NAME" --onnx "$ONNX" --meta "$META" \
  --archive "$OUT/model/lib$NAME.a" --plan "$OUT/model/$NAME.plan.json" \
  --weights "$OUT/model/$NAME.weights" --llvm-ar llvm-ar \
  --target-features +simd128,+atomics,+bulk-memory --parallel
cd "$ROOT/rust"
RUSTC=/usr/bin/rustc WASM_MODEL_DIR="$OUT/model" WASM_MODEL_NAME="$NAME" \
RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+simd128 -C link-arg=--shared-memory \
 -C link-arg=--import-memory -C link-arg=--max-memory=4294967296 -C link-arg=--no-check-features" \
/usr/bin/cargo build --release --locked -p run-model --features model-runtime/threads \
  --target wasm32-wasi --target-dir "$OUT/target" --config "source.crates-io.replace-with='debian'" \
  --config "source.debian.directory='/usr/share/cargo/registry'" --config net.offline=true --config profile.release.lto=false
python3 "$ROOT/tools/threads_proto/export_memory.py" "$OUT/target/wasm32-wasi/release/run-model.wasm" "$OUT/run-model.wasm"
echo "$OUT/run-model.wasm: wasmtime run -W threads=y,shared-memory=y -S threads=y --env TVM_NUM_THREADS=2 --dir DIR $OUT/run-model.wasm DIR"
