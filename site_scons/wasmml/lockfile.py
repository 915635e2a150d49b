"""Creates a crate's Cargo.lock the way the `cargo_wasm` tool builds it:
with the plugin's crates patched in and the same registry.

    python3 -m wasmml.lockfile CRATE_DIR [--registry auto|debian|default] [--cargo CARGO]

The tool runs cargo `--locked`, so a crate needs a Cargo.lock; plain
`cargo generate-lockfile` would not know where `model-runtime` is.
"""

import argparse
import os
import subprocess
import sys
import tempfile

from wasmml import cargo_project, toolchain


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m wasmml.lockfile", description=__doc__.split("\n")[0])
    parser.add_argument("crate_dir", help="the directory of the crate's Cargo.toml")
    parser.add_argument("--registry", default="auto", choices=cargo_project.REGISTRIES)
    parser.add_argument("--cargo", help="cargo to run (default: the one the build finds)")
    args = parser.parse_args(argv)
    try:
        crate = cargo_project.Crate(args.crate_dir)
        registry, why = cargo_project.choose_registry(args.registry)
        cargo = args.cargo or toolchain.find_rust().cargo
    except (cargo_project.CrateError, toolchain.ToolchainError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        config = cargo_project.config_file(crate, registry, scratch)
        command = [cargo, "generate-lockfile", "--manifest-path", os.path.join(crate.dir, "Cargo.toml")]
        command += ["--config", config] if config else []
        print(f"{cargo}: crates from {why}", file=sys.stderr)
        status = subprocess.run(command).returncode
    if status == 0:
        print(f"wrote {os.path.relpath(crate.lock)}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
