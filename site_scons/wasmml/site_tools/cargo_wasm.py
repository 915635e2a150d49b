"""SCons tool `cargo_wasm`: builds a Cargo crate's binary or cdylib for wasm32.

Builder `CargoWasm(target_wasm, crate_dir, model=nodes, CARGO_BIN=name)`
runs `cargo build --release` for the crate and copies the binary's `.wasm` to
target_wasm; with `CARGO_LIB=name` (the [lib] name) it builds the crate's
cdylib instead, e.g. a waPC actor for `WASM_TARGET="unknown"`. `model` is
what `TVMModel` returned: the crate's build script
links that archive and embeds that plan and weights (crate model-embed).

The crate takes the plugin's Rust crates by version (`model-runtime = "0.1"`,
`model-embed = "0.1"` for its build script); the tool points cargo at the
copies inside the installed plugin. Cargo runs `--locked`: a crate without
a Cargo.lock gets one line saying what to run (`python3 -m wasmml.lockfile`).

A scanner reads the crate's Cargo.toml and finds everything cargo reads:
Cargo.toml files, Cargo.lock, build.rs and sources of the crate, of its
path dependencies, of the workspace root and of the plugin crates it takes,
so SCons runs cargo exactly when one of them changed. It never runs cargo.

Construction variables:
    RUSTC, CARGO         the build's rustc and cargo; unless set, $RUSTC,
                         else the first rustc on PATH whose sysroot has a
                         wasm32 std, with the cargo beside it (the log names them)
    CARGO_REGISTRY       where other crates come from: "default" (cargo's
                         own configuration), "debian" (Debian's offline
                         crate sources), or "auto" (default: Debian's when
                         installed and crates.io is unreachable)
    WASM_TARGET          "wasi" (default: the WASI name this rustc uses) or
                         "unknown" (wasm32-unknown-unknown)
    CARGO_TARGET_DIR     cargo's target dir, shared by all crates
                         (default: $BUILD_DIR/cargo); a SideEffect and Clean
    CARGO_BIN, CARGO_LIB which artifact: a binary (default: the crate's only
                         [[bin]], else its package name) or, when CARGO_LIB
                         is set, the lib
    CARGO_LTO            "on" (default: the release profile's LTO) or "off"
    TVM_THREADS          N > 1: link for wasi-threads (model-runtime's
                         `threads` feature, shared memory, LTO off), N
                         threads by default; taken from the model linked
                         (tvm_model's option), else 1
    CARGOFLAGS           extra flags for cargo build
    CARGOCOM, CARGOCOMSTR
"""

import os
import time

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Scanner

import wasmml
from wasmml import cargo_project, model_nodes, staging, toolchain, wasm_module
from wasmml.compiler import options as compile_options

# Paths and the model are passed as environment; the command line shows them,
# so they are part of the build signature.
# Absolute paths stay out of the signature (between $( and $)), so that
# checkouts in other directories share a CacheDir; the files behind them are
# sources of the build.
CARGOCOM = (
    "env RUSTC=$RUSTC $( \"WASM_MODEL_DIR=$WASM_MODEL_DIR\" $) WASM_MODEL_NAME=$WASM_MODEL_NAME "
    "$( \"RUSTFLAGS=$_CARGO_RUSTFLAGS\" $) $_CARGO_THREADS_ENV "
    "$CARGO build --release --locked --quiet $( --manifest-path \"$CARGO_MANIFEST\" "
    "--target-dir \"${__env__.Dir(CARGO_TARGET_DIR).abspath}\" $) --target $CARGO_TRIPLE "
    "${_cargo_artifact_flags(__env__)} $_CARGO_LTO_FLAGS $_CARGO_THREADS_FLAGS "
    "$( $_CARGO_SOURCE_FLAGS $) $CARGOFLAGS"
)
# The workspace's release profile links with LTO. Without it a module
# links several times faster (classify.wasm after an edit: 2 s, not 16 s)
# and runs a few percent slower; the flag is part of the build signature.
CARGO_LTO_FLAGS = "${'--config profile.release.lto=false' if CARGO_LTO == 'off' else ''}"

# A module whose kernels have parallel loops (TVM_THREADS=N > 1) runs them on
# model-runtime's pool of wasi threads (feature `threads`, N threads unless
# $TVM_NUM_THREADS says otherwise): its code with real atomics, its memory
# shared, imported and exported (wasm-ld 14 has no --export-memory, so
# _export_memory adds the export). Debian's std and wasi-libc were built
# without atomics, so --no-check-features lets them in; the pool's workers
# never call them. LTO stays off: it would recompile std with atomics, whose
# errno then becomes thread-local, which wasi-libc's is not.
# See docs/design.md, "Threads".
THREADS_RUSTFLAGS = ("-C target-feature=+atomics,+bulk-memory -C link-arg=--shared-memory "
                     "-C link-arg=--import-memory -C link-arg=--max-memory=4294967296 "
                     "-C link-arg=--no-check-features")
CARGO_THREADS_ENV = "${'WASMML_THREADS=%s ' % TVM_THREADS if _cargo_threads(__env__) else ''}"
CARGO_THREADS_FLAGS = ("${'--features model-runtime/threads --config profile.release.lto=false' "
                       "if _cargo_threads(__env__) else ''}")


# --- scanner -----------------------------------------------------------------

def _crate(crate_dir):
    """The crate at crate_dir as cargo sees it (wasmml.cargo_project.Crate),
    read once a build."""
    try:
        if crate_dir not in _crates:
            _crates[crate_dir] = cargo_project.Crate(crate_dir)
        return _crates[crate_dir]
    except cargo_project.CrateError as e:
        raise SCons.Errors.UserError(str(e))


_crates = {}


def crate_inputs(crate_dir):
    """Every file cargo reads to build the crate at crate_dir."""
    return _crate(os.path.abspath(crate_dir)).inputs


def _scan_crate(node, env, path):
    if not node.name == "Cargo.toml":
        return []
    return [env.File(f) for f in crate_inputs(os.path.dirname(node.srcnode().abspath))
            if os.path.abspath(f) != node.srcnode().abspath]


CrateScanner = SCons.Scanner.Scanner(function=_scan_crate, name="CargoCrate", skeys=[".toml"])


# --- builder -------------------------------------------------------------------

_said_toolchain = []  # the toolchain line is printed once a build


def _crate_and_registry(env):
    """(the crate, (registry, why)) of the builder call `env` belongs to;
    a UserError if either cannot be had."""
    crate = _crate(os.path.dirname(env.subst("$CARGO_MANIFEST")))
    try:
        return crate, cargo_project.choose_registry(env.subst("$CARGO_REGISTRY"))
    except cargo_project.CrateError as e:
        raise SCons.Errors.UserError(str(e))


def _start(target, source, env):
    """Checks what cargo will need before it runs, and says once a build
    which cargo, rustc and registry it is."""
    if env.get("CARGO_TOOLCHAIN_ERROR"):
        raise SCons.Errors.UserError(env["CARGO_TOOLCHAIN_ERROR"])
    crate, (_, why) = _crate_and_registry(env)
    if not os.path.isfile(crate.lock):
        raise SCons.Errors.UserError(
            f"{os.path.relpath(crate.lock)}: missing (cargo runs --locked, so builds are "
            f"reproducible); create it with: {cargo_project.lock_hint(crate.dir, env.subst('$CARGO_REGISTRY'))}")
    if not _said_toolchain and not env.GetOption("silent"):
        _said_toolchain.append(True)
        print(f"  rust: {env.subst('$CARGO')}, {env.subst('$RUSTC')} ({env.get('RUST_VERSION', '?')}); "
              f"crates: {why}", flush=True)
    target[0].attributes.cargo_started = time.monotonic()
    return 0


def _source_flags(target, source, env, for_signature):
    """--config FILE: the plugin crates' patches and the registry. Nothing
    in the signature: the files it points at are sources of the build
    already, and choosing the registry may probe the network."""
    if for_signature:
        return []
    try:
        crate, (registry, _) = _crate_and_registry(env)
    except SCons.Errors.UserError:
        return []  # _start reports it before cargo runs
    config = cargo_project.config_file(crate, registry, os.path.join(env.Dir("$CARGO_TARGET_DIR").abspath,
                                                                     "wasmml"))
    return ["--config", config] if config else []


def _copy_artifact(target, source, env):
    """Cargo leaves its binary in the shared target dir; copy it out
    atomically so no half-written module is ever taken as up to date."""
    name = env.subst("$CARGO_LIB") or env.subst("$CARGO_BIN")
    built = os.path.join(env.Dir("$CARGO_TARGET_DIR").abspath,
                         env.subst("$CARGO_TRIPLE/release/") + name + ".wasm")
    final = target[0].abspath
    staging.copy_into_place(built, final)
    if not env.GetOption("silent"):
        seconds = time.monotonic() - getattr(target[0].attributes, "cargo_started", time.monotonic())
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
        # kernels with parallel loops need the runtime's threads (tvm_model)
        overrides.setdefault("TVM_THREADS", model_nodes.threads_of(archive))
    overrides.setdefault("CARGO_BIN", _crate(crate.srcnode().abspath).default_bin)
    overrides["CARGO_MANIFEST"] = manifest.srcnode().abspath
    nodes = env._CargoWasm(target, [manifest] + model, **overrides)
    model_nodes.add_dependents(model, nodes)
    env.Clean(nodes, env.Dir("$CARGO_TARGET_DIR"))
    return nodes


def _triple(env):
    return env["WASI_TRIPLE"] if env["WASM_TARGET"] == "wasi" else toolchain.WASM_UNKNOWN


def _artifact_flags(env):
    return ["--lib"] if env.subst("$CARGO_LIB") else ["--bin", env.subst("$CARGO_BIN")]


def _rustflags(env):
    """Keeps absolute paths out of the module, so builds are reproducible:
    the crates' workspace is named by its directory's name alone.
    Depends only on where the crates are, so every project that builds
    them shares one cargo target dir without rebuilding dependencies."""
    crate = _crate(os.path.dirname(env.subst("$CARGO_MANIFEST")))
    root = crate.root or crate.dir
    flags = f"--remap-path-prefix={root}={os.path.basename(root)}"
    crates = wasmml.crates_dir()
    if crate.patched and os.path.relpath(crates, root).startswith(".."):
        flags += f" --remap-path-prefix={crates}=wasmml-crates"
    if _threads(env):
        flags += " " + THREADS_RUSTFLAGS
    return flags


def _threads(env):
    """Whether the module is linked for threads: TVM_THREADS of the call,
    which CargoWasm takes from the model it links."""
    try:
        n = compile_options.thread_count(env.subst("$TVM_THREADS") or 1)
    except ValueError as e:
        raise SCons.Errors.UserError(str(e)) from None
    if n > 1 and env.subst("$WASM_TARGET") != "wasi":
        raise SCons.Errors.UserError(f"TVM_THREADS={n}: threads need WASM_TARGET=wasi (wasi-threads)")
    return n > 1


def _export_memory(target, source, env):
    """A threaded module imports its shared memory; WASI runtimes want it
    exported as `memory` too."""
    if _threads(env):
        path = target[0].abspath
        with open(path, "rb") as f:
            module = wasm_module.export_memory(f.read())
        staging.write_into_place(path, module)
    return 0


def _search_path(env):
    """Where a rustc is looked for: the build's PATH, then the shell's."""
    return os.pathsep.join(filter(None, [env["ENV"].get("PATH"), os.environ.get("PATH")]))


def generate(env):
    try:
        # Kept beside SCons's own state (.sconsign.dblite), not in build/.
        rust = toolchain.find_rust(env.File("#.sconsign.rust-toolchain.json").abspath,
                                   rustc=env.get("RUSTC"), search_path=_search_path(env))
        env.SetDefault(RUSTC=rust.rustc, CARGO=rust.cargo, WASI_TRIPLE=rust.wasi_target,
                       RUST_VERSION=rust.version)
    except toolchain.ToolchainError as e:
        env.SetDefault(RUSTC="rustc", CARGO="cargo", WASI_TRIPLE="wasm32-wasip1")
        env["CARGO_TOOLCHAIN_ERROR"] = str(e)
    env.SetDefault(
        WASM_TARGET="wasi",
        BUILD_DIR="#build",
        CARGO_TARGET_DIR="$BUILD_DIR/cargo",
        CARGOFLAGS="",
        CARGO_LTO="on",
        _CARGO_LTO_FLAGS=CARGO_LTO_FLAGS,
        TVM_THREADS=1,
        _cargo_threads=_threads,
        _CARGO_THREADS_ENV=CARGO_THREADS_ENV,
        _CARGO_THREADS_FLAGS=CARGO_THREADS_FLAGS,
        WASM_MODEL_DIR="",
        WASM_MODEL_NAME="",
        CARGO_LIB="",
        _cargo_artifact_flags=_artifact_flags,
        CARGO_TRIPLE="${_cargo_triple(__env__)}",
        _cargo_triple=_triple,
        _CARGO_RUSTFLAGS="${_cargo_rustflags(__env__)}",
        _cargo_rustflags=_rustflags,
        CARGO_REGISTRY="auto",
        _CARGO_SOURCE_FLAGS=_source_flags,
        CARGOCOM=CARGOCOM,
        CARGOCOMSTR="Building ${TARGET.file} (crate ${CARGO_LIB or CARGO_BIN}, $CARGO_TRIPLE) with cargo",
    )
    env["BUILDERS"]["_CargoWasm"] = SCons.Builder.Builder(
        action=[
            SCons.Action.Action(_start, None),
            SCons.Action.Action("$CARGOCOM", "$CARGOCOMSTR"),
            SCons.Action.Action(_copy_artifact, None,
                                varlist=["CARGO_TARGET_DIR", "CARGO_TRIPLE", "CARGO_BIN", "CARGO_LIB"]),
            SCons.Action.Action(_export_memory, None, varlist=["TVM_THREADS"]),
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
