"""SCons tool `cargo_wasm`: builds a Cargo crate's binary or cdylib for wasm32.

Builder `CargoWasm(target_wasm, crate_dir, model=nodes, CARGO_BIN=name)`
runs `cargo build --release` for the crate and copies the binary's `.wasm` to
target_wasm; with `CARGO_LIB=name` (the [lib] name) it builds the crate's
cdylib instead, e.g. a waPC actor for `WASM_TARGET="unknown"`. `model` is what `TVMModel` returned: the crate's build script
links that archive and embeds that plan and weights (see rust/embed).

A scanner reads the crate's Cargo.toml and finds everything cargo reads:
Cargo.toml files, Cargo.lock, build.rs and sources of the crate, of its
path dependencies and of the workspace root, so SCons runs cargo exactly
when one of them changed. It never runs cargo.

Construction variables:
    RUSTC, CARGO, RUSTDOC  found by wasmml.toolchain unless set
    WASM_TARGET          "wasi" (default: the WASI name this rustc uses) or
                         "unknown" (wasm32-unknown-unknown)
    CARGO_TARGET_DIR     cargo's target dir, shared by all crates
                         (default: $BUILD_DIR/cargo); a SideEffect and Clean
    CARGO_BIN, CARGO_LIB which artifact: a binary (default: the crate
                         directory's name) or, when CARGO_LIB is set, the lib
    CARGO_LTO            "on" (default: the release profile's LTO) or "off"
    CARGOFLAGS           extra flags for cargo build
    CARGOCOM, CARGOCOMSTR
"""

import os
import time
import tomllib

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Scanner

from wasmml import buildlock, buildstate, staging, toolchain

# Paths and the model are passed as environment; the command line shows them,
# so they are part of the build signature.
# Absolute paths stay out of the signature (between $( and $)), so that
# checkouts in other directories share a CacheDir; the files behind them are
# sources of the build.
CARGOCOM = (
    "env RUSTC=$RUSTC $( \"WASM_MODEL_DIR=$WASM_MODEL_DIR\" $) WASM_MODEL_NAME=$WASM_MODEL_NAME "
    "$( RUSTFLAGS=$_CARGO_RUSTFLAGS $) "
    "$CARGO build --release --locked --quiet $( --manifest-path \"$CARGO_MANIFEST\" "
    "--target-dir \"${__env__.Dir(CARGO_TARGET_DIR).abspath}\" $) --target $CARGO_TRIPLE "
    "${_cargo_artifact_flags(__env__)} $_CARGO_LTO_FLAGS $( $_CARGO_SOURCE_FLAGS $) $CARGOFLAGS"
)
# The workspace's release profile links with LTO. Without it a module
# links several times faster (classify.wasm after an edit: 2 s, not 16 s)
# and runs a few percent slower; the flag is part of the build signature.
CARGO_LTO_FLAGS = "${'--config profile.release.lto=false' if CARGO_LTO == 'off' else ''}"


# --- scanner -----------------------------------------------------------------

def _read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise SCons.Errors.UserError(f"{path}: cannot read ({e.strerror})")
    except tomllib.TOMLDecodeError as e:
        raise SCons.Errors.UserError(f"{path}: invalid TOML ({e})")


def _workspace_root(crate_dir):
    """The nearest directory at or above the crate whose Cargo.toml has
    [workspace], or None."""
    d = crate_dir
    while True:
        manifest = os.path.join(d, "Cargo.toml")
        if os.path.isfile(manifest) and "workspace" in _read_toml(manifest):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def _path_dependencies(manifest, data, workspace_deps):
    crate_dir = os.path.dirname(manifest)
    for table in ("dependencies", "build-dependencies", "dev-dependencies"):
        for name, spec in data.get(table, {}).items():
            if not isinstance(spec, dict):
                continue
            if spec.get("workspace"):
                spec = workspace_deps.get(name, {})
                base = None
            else:
                base = crate_dir
            if isinstance(spec, dict) and "path" in spec:
                yield os.path.normpath(os.path.join(base or spec["_root"], spec["path"]))


def _crate_files(crate_dir):
    files = [os.path.join(crate_dir, "Cargo.toml")]
    build_rs = os.path.join(crate_dir, "build.rs")
    if os.path.isfile(build_rs):
        files.append(build_rs)
    for root, dirs, names in os.walk(os.path.join(crate_dir, "src")):
        dirs.sort()
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".rs")]
    return files


def crate_inputs(crate_dir):
    """Every file cargo reads to build the crate at crate_dir."""
    crate_dir = os.path.abspath(crate_dir)
    root = _workspace_root(crate_dir)
    workspace_deps = {}
    files = []
    if root:
        root_manifest = os.path.join(root, "Cargo.toml")
        files.append(root_manifest)
        for name, spec in _read_toml(root_manifest)["workspace"].get("dependencies", {}).items():
            if isinstance(spec, dict):
                workspace_deps[name] = dict(spec, _root=root)
        lock = os.path.join(root, "Cargo.lock")
    else:
        lock = os.path.join(crate_dir, "Cargo.lock")
    if os.path.isfile(lock):
        files.append(lock)
    pending, seen = [crate_dir], set()
    while pending:
        d = pending.pop()
        if d in seen:
            continue
        seen.add(d)
        manifest = os.path.join(d, "Cargo.toml")
        if not os.path.isfile(manifest):
            raise SCons.Errors.UserError(f"{manifest}: crate manifest not found")
        files += _crate_files(d)
        pending += _path_dependencies(manifest, _read_toml(manifest), workspace_deps)
    return sorted(set(files))


def _scan_crate(node, env, path):
    if not node.name == "Cargo.toml":
        return []
    return [env.File(f) for f in crate_inputs(os.path.dirname(node.srcnode().abspath))
            if os.path.abspath(f) != node.srcnode().abspath]


CrateScanner = SCons.Scanner.Scanner(function=_scan_crate, name="CargoCrate", skeys=[".toml"])


# --- builder -------------------------------------------------------------------

_started = {}  # target path -> when its cargo step began


def _start(target, source, env):
    if env.get("CARGO_TOOLCHAIN_ERROR"):
        raise SCons.Errors.UserError(env["CARGO_TOOLCHAIN_ERROR"])
    _started[target[0].abspath] = time.monotonic()
    return 0


def _copy_artifact(target, source, env):
    """Cargo leaves its binary in the shared target dir; copy it out
    atomically so no half-written module is ever taken as up to date."""
    name = env.subst("$CARGO_LIB") or env.subst("$CARGO_BIN")
    built = os.path.join(env.Dir("$CARGO_TARGET_DIR").abspath,
                         env.subst("$CARGO_TRIPLE/release/") + name + ".wasm")
    final = target[0].abspath
    staging.copy_into_place(built, final)
    if not env.GetOption("silent"):
        seconds = time.monotonic() - _started.pop(final, time.monotonic())
        size = os.path.getsize(final) / 1e6
        print(f"  {target[0].name}: {size:.1f} MB, cargo {seconds:.1f}s", flush=True)
    return 0


def _emitter(target, source, env):
    env.SideEffect(env.Dir("$CARGO_TARGET_DIR"), target)
    return target, source


def _cargo_wasm(env, target, crate_dir, model=None, **overrides):
    """Pseudo-builder: see the module docstring."""
    crate = env.Dir(crate_dir)
    manifest = crate.File("Cargo.toml")
    model = list(model or [])
    archive = next((n for n in model if n.name.startswith("lib") and n.name.endswith(".a")), None)
    if archive is not None:
        overrides.setdefault("WASM_MODEL_DIR", archive.dir.abspath)
        overrides.setdefault("WASM_MODEL_NAME", archive.name[3:-2])
    overrides.setdefault("CARGO_BIN", os.path.basename(crate.abspath))
    overrides["CARGO_MANIFEST"] = manifest.srcnode().abspath
    nodes = env._CargoWasm(target, [manifest] + model, **overrides)
    # tvm_model removes these when the model stops compiling.
    for model_node in model:
        model_node.attributes.dependents = getattr(model_node.attributes, "dependents", []) + list(nodes)
    env.Clean(nodes, env.Dir("$CARGO_TARGET_DIR"))
    return nodes


def _triple(env):
    return env["WASI_TRIPLE"] if env["WASM_TARGET"] == "wasi" else toolchain.WASM_UNKNOWN


def _artifact_flags(env):
    return ["--lib"] if env.subst("$CARGO_LIB") else ["--bin", env.subst("$CARGO_BIN")]


def _rustflags(env):
    """Keeps absolute paths out of the module, so builds are reproducible.
    Depends only on where the crates are, so every project that builds
    them shares one cargo target dir without rebuilding dependencies."""
    crate_dir = os.path.dirname(env.subst("$CARGO_MANIFEST"))
    root = _workspace_root(crate_dir) or crate_dir
    return f"--remap-path-prefix={root}=rust"


def generate(env):
    buildlock.hold(env.Dir("#").abspath)
    buildstate.guard_saving()
    try:
        # Kept beside SCons's own state (.sconsign.dblite), not in build/.
        rust = toolchain.find_rust(env.File("#.sconsign.rust-toolchain.json").abspath)
        env.SetDefault(RUSTC=rust.rustc, CARGO=rust.cargo, RUSTDOC=rust.rustdoc or "rustdoc",
                       WASI_TRIPLE=rust.wasi_target)
    except toolchain.ToolchainError as e:
        env.SetDefault(RUSTC="rustc", CARGO="cargo", RUSTDOC="rustdoc", WASI_TRIPLE="wasm32-wasip1")
        env["CARGO_TOOLCHAIN_ERROR"] = str(e)
    env.SetDefault(
        WASM_TARGET="wasi",
        BUILD_DIR="#build",
        CARGO_TARGET_DIR="$BUILD_DIR/cargo",
        CARGOFLAGS="",
        CARGO_LTO="on",
        _CARGO_LTO_FLAGS=CARGO_LTO_FLAGS,
        WASM_MODEL_DIR="",
        WASM_MODEL_NAME="",
        CARGO_LIB="",
        _cargo_artifact_flags=_artifact_flags,
        CARGO_TRIPLE="${_cargo_triple(__env__)}",
        _cargo_triple=_triple,
        _CARGO_RUSTFLAGS="${_cargo_rustflags(__env__)}",
        _cargo_rustflags=_rustflags,
        _CARGO_SOURCE_FLAGS=toolchain.cargo_source_flags(),
        CARGOCOM=CARGOCOM,
        CARGOCOMSTR="Building ${TARGET.file} (crate ${CARGO_LIB or CARGO_BIN}, $CARGO_TRIPLE) with cargo",
    )
    env["BUILDERS"]["_CargoWasm"] = SCons.Builder.Builder(
        action=[
            SCons.Action.Action(_start, None),
            SCons.Action.Action("$CARGOCOM", "$CARGOCOMSTR"),
            SCons.Action.Action(_copy_artifact, None,
                                varlist=["CARGO_TARGET_DIR", "CARGO_TRIPLE", "CARGO_BIN", "CARGO_LIB"]),
        ],
        emitter=_emitter,
        source_scanner=CrateScanner,
        single_source=False,
    )
    env.AddMethod(_cargo_wasm, "CargoWasm")


def exists(env):
    try:
        toolchain.find_rust()
    except toolchain.ToolchainError:
        return False
    return True
