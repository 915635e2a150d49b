"""SCons tool `tvm_model`: compiles an ONNX model with Apache TVM for wasm32.

Builder `TVMModel(target_dir, model_json)` reads the model's metadata
(`model.json`: the ONNX file, labels, input shapes; checked by
wasmml.model_json, see docs/model-json.md) and makes, in target_dir:

    lib<NAME>.a         the kernels, a wasm32 static archive with symbol index
    <NAME>.plan.json    the static execution plan (see rust/runtime)
    <NAME>.weights      the weights and folded constants, 64-byte aligned
    <NAME>.meta.json    a copy of model.json, for programs that embed it
    <NAME>.labels.txt   a copy of the label file, if the model has one

It returns those nodes in that order. The copies are separate steps, so a
label edit never recompiles the model.

Tuned kernels: when the model's directory has a MetaSchedule database for
the pipeline and target, `tuning/<pipeline>/<features>/` (e.g.
tuning/nhwc/simd128/), the compile applies it, and its files are sources of
the compile. A relaxed-SIMD build without a database of its own applies the
SIMD128 one. `TVMTune(model_json)` returns an alias, `tune-NAME`, that
tunes the model into that database (wasmml.tuner): an explicit,
resumable step, never run by a build.

Construction variables (all part of the compile's signature; the first
five can be set for one model from the command line: NAME.OPTION=VALUE):
    TVM_TARGET_FEATURES  LLVM features for wasm32 (default "+simd128")
    TVM_PIPELINE         "nhwc" (default: convolutions in NHWC, weights in
                         HWIO, constants folded, elementwise work fused),
                         "fold-fuse" (the same in the ONNX file's NCHW),
                         "prepack" (fold-fuse, and the weights rewritten at
                         build time into the layout the tuned kernels read)
                         or "default" (TVM's own)
    TVM_INPUT_SHAPES     list of "NAME=D0,D1,..." overriding model.json; it
                         sets dynamic dims and may not contradict static ones
    TVM_TUNING           "on" (default): apply the model's tuning database
                         if it has one; "off": TVM's untuned kernels
    TVM_THREADS          N (default 1): with N > 1, kernels with parallel
                         loops for a module linked with model-runtime's
                         `threads` feature (cargo_wasm does so when it links
                         the model), which runs them on N wasi threads
                         unless $TVM_NUM_THREADS says otherwise at run time;
                         its database is tuning/<pipeline>/<features>+threadsN/,
                         else the single-threaded one's schedules
    TUNE_TRIALS          trials per kernel for TVMTune (default 64)
    TUNE_FOCUS           N: TVMTune tunes only the N kernels that cost the
                         model most by its database so far (default 0: all)
    TUNE_KERNELS         "TEXT,...": TVMTune tunes only the kernels whose
                         names contain one of the texts (default: all)
    TUNE_MEASURE         where TVMTune times candidates: "wasmtime" (default)
                         or "native" (an x86 proxy with 128-bit vectors)
    TUNE_PRUNE           True: TVMTune then drops the records of kernels the
                         model no longer has (default False)
    TUNE_LOGS_DIR        where TVMTune keeps MetaSchedule's logs, one directory
                         a model (default "#build/tune-logs")
    PYTHON               the interpreter that has TVM (default: SCons's own)
    LLVM_AR              found on PATH unless set
    TVMCOM, TVMCOMSTR    the compile command and its log line

TVM and onnx are imported only by the compile command, a separate process.
"""

import os
import re
import sys

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Util

from wasmml import model_json, model_nodes, staging, toolchain, tuning_db
from wasmml.compiler import options as compile_options

_WASMML_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILER = os.path.join(_WASMML_DIR, "compiler", "__main__.py")
TUNER = os.path.join(_WASMML_DIR, "tuner", "__main__.py")


def compiler_sources():
    """The compiler's code: every module of the wasmml.compiler package and
    the plugin modules it imports (model_json, tuning_db). A change to any
    of it recompiles every model."""
    package = os.path.join(_WASMML_DIR, "compiler")
    sources = sorted(os.path.join(root, f) for root, _, files in os.walk(package)
                     for f in files if f.endswith(".py"))
    imported = set()
    for path in sources:
        with open(path) as f:
            imported.update(_plugin_modules_imported(f.read()))
    return sources + sorted(os.path.join(_WASMML_DIR, f"{m}.py") for m in imported)


def _plugin_modules_imported(text):
    """The names of the top-level wasmml modules (files, not packages) that
    `from wasmml import a, b` and `from wasmml.a import ...` lines import."""
    names = set(re.findall(r"^\s*from wasmml\.(\w+) import", text, re.M))
    for listed in re.findall(r"^\s*from wasmml import ([\w, ]+)", text, re.M):
        names.update(n.strip() for n in listed.split(","))
    return {n for n in names if os.path.isfile(os.path.join(_WASMML_DIR, f"{n}.py"))}


COMPILER_SOURCES = compiler_sources()
TUNING_FILES = (tuning_db.WORKLOADS_FILE, tuning_db.RECORDS_FILE)

# What lies between $( and $) stays out of the build signature: where the
# interpreter, llvm-ar or the checkout are does not change the artifacts, so
# two checkouts share a CacheDir. The compiler's code is a source instead.
TVMCOM = (
    "$( $PYTHON $TVM_COMPILER $_TVM_QUIET $) --name $TVM_MODEL_NAME --meta ${SOURCES[0]} "
    "--onnx $TVM_ONNX --archive ${TARGETS[0]} --plan ${TARGETS[1]} --weights ${TARGETS[2]} "
    "--llvm-ar $( $LLVM_AR $) --target-features $TVM_TARGET_FEATURES --pipeline $TVM_PIPELINE "
    "$_TVM_SHAPE_FLAGS $( ${'--tuning-db \"%s\"' % TVM_TUNING_DB if TVM_TUNING_DB else ''} $) "
    "$_TVM_THREADS_FLAGS"
)
TUNECOM = (
    "$PYTHON $TVM_TUNER --name $TVM_MODEL_NAME --meta $TVM_META --onnx $TVM_ONNX "
    "--database \"$TVM_TUNING_DB\" --trials-per-task $TUNE_TRIALS --focus $TUNE_FOCUS $_TVM_SHAPE_FLAGS "
    "${'--kernels \"%s\"' % TUNE_KERNELS if TUNE_KERNELS else ''} "
    "--target-features $TVM_TARGET_FEATURES --pipeline $TVM_PIPELINE --measure $TUNE_MEASURE "
    "${'--prune' if TUNE_PRUNE else ''} $_TVM_THREADS_FLAGS "
    "--logs \"${__env__.Dir(TUNE_LOGS_DIR).abspath}/$TVM_MODEL_NAME\""
)


def read_model_json(node):
    """The metadata of a model.json node, checked against the format
    (wasmml.model_json): an error is a UserError, which scons prints as one
    line and exits non-zero. A file it names (labels) may be a source or
    built by the build."""
    src = node.srcnode()
    path = src.abspath if src.exists() else node.abspath

    def file_exists(name):
        named = node.File(name)
        return (named.has_builder() or named.srcnode().has_builder()
                or os.path.exists(named.abspath) or os.path.exists(named.srcnode().abspath))

    try:
        # named from the top directory, as the compile's command line names it
        return model_json.load(path, shown_as=src.get_path(src.fs.Top), file_exists=file_exists)
    except model_json.ModelJsonError as e:
        raise SCons.Errors.UserError(str(e))


def _emitter(target, source, env):
    """target: the output directory; source: model.json. Lists the real
    outputs and adds the ONNX file and the compiler itself as sources, so a
    change to either recompiles. A missing ONNX file is left to the compile
    step, which names the model in its error and removes stale artifacts."""
    meta_node = source[0]
    name = env["TVM_MODEL_NAME"]
    out = target[0]
    targets = [out.File(f"lib{name}.a"), out.File(f"{name}.plan.json"), out.File(f"{name}.weights")]
    onnx = env.File("$TVM_ONNX")
    sources = [meta_node] + ([onnx] if onnx.rexists() or onnx.has_builder() else [])
    if env["TVM_TUNING_DB"]:  # the tuned schedules are part of what is compiled
        sources += [env.Dir(env["TVM_TUNING_DB"]).File(f) for f in TUNING_FILES]
    return targets, sources + [env.File(f) for f in COMPILER_SOURCES]


def tuning_dir(meta_node, pipeline, features, threads=1):
    """Where a model's tuning database for this pipeline, these target
    features and threads lives: beside its model.json, in
    tuning/<pipeline>/<features>[+threadsN] (tuning/nhwc/simd128)."""
    return meta_node.srcnode().dir.Dir("tuning").Dir(
        tuning_db.tuning_subdir(pipeline, features, threads))


def threads(env, options=None):
    """TVM_THREADS of a builder call, checked: an int >= 1."""
    try:
        return compile_options.thread_count(_option(env, options or {}, "TVM_THREADS"))
    except ValueError as e:
        raise SCons.Errors.UserError(str(e)) from None


def _option(env, options, name):
    """A compile option's value for one model: its override, else the env's."""
    return env.subst(options.get(name, "$" + name))


def _applied_tuning(env, meta_node, options):
    """The tuning database the compile applies, or "" for none."""
    if _option(env, options, "TVM_TUNING") == "off":
        return ""
    return tuning_db.find_tuning_db(meta_node.srcnode().dir.abspath,
                                        _option(env, options, "TVM_PIPELINE"),
                                        _option(env, options, "TVM_TARGET_FEATURES"),
                                        threads(env, options)) or ""


def _shape_flags(shapes):
    return " ".join(f"--input-shape {s}" for s in SCons.Util.flatten(shapes or []))


MODEL_OPTIONS = ("TVM_TARGET_FEATURES", "TVM_PIPELINE", "TVM_INPUT_SHAPES", "TVM_TUNING", "TVM_THREADS")


def command_line_options(name):
    """`scons NAME.OPTION=VALUE` sets one model's compile option (shapes are
    separated by ';'), so a monorepo can change one model from the command
    line without touching the others."""
    from SCons.Script import ARGUMENTS

    options = {}
    for option in MODEL_OPTIONS:
        value = ARGUMENTS.get(f"{name}.{option}")
        if value is not None:
            options[option] = value.split(";") if option == "TVM_INPUT_SHAPES" else value
    return options


def _model_artifacts(env, target_dir, model_json, **overrides):
    """Pseudo-builder: compiles one model and copies its metadata and labels
    beside the artifacts. Returns [archive, plan, weights, meta, labels?].
    Options: the environment's, then `overrides`, then the command line's."""
    meta_node, meta, onnx = _model(env, model_json, overrides)
    name = meta["name"]
    out_dir = env.Dir(target_dir)
    overrides["TVM_THREADS"] = threads(env, overrides)
    compiled = env._TVMCompile(out_dir, meta_node, TVM_MODEL_NAME=name, TVM_ONNX=onnx,
                               TVM_TUNING_DB=_applied_tuning(env, meta_node, overrides), **overrides)
    model_nodes.mark_threads(compiled[0], overrides["TVM_THREADS"])
    nodes = list(compiled)
    nodes += env.Command(out_dir.File(f"{name}.meta.json"), meta_node, _COPY)
    if meta.get("labels"):
        nodes += env.Command(out_dir.File(f"{name}.labels.txt"), meta_node.File(meta["labels"]), _COPY)
    return nodes


def _tune(env, model_json, **overrides):
    """Pseudo-builder: the alias tune-NAME, which tunes the model's kernels
    into its tuning database. Always runs when asked for; never a dependency
    of a build."""
    meta_node, meta, onnx = _model(env, model_json, overrides)
    name = meta["name"]
    db = tuning_dir(meta_node, _option(env, overrides, "TVM_PIPELINE"),
                    _option(env, overrides, "TVM_TARGET_FEATURES"), threads(env, overrides))
    alias = env.Alias(f"tune-{name}", [onnx], SCons.Action.Action("$TUNECOM", "$TUNECOMSTR"),
                      TVM_MODEL_NAME=name, TVM_META=meta_node.srcnode(), TVM_ONNX=onnx,
                      TVM_TUNING_DB=db, **overrides)
    env.AlwaysBuild(alias)
    return alias


def _model(env, model_json, overrides):
    """(model.json node, its metadata, the ONNX file's node) of one model;
    adds the command line's options for it to `overrides`."""
    meta_node = env.File(model_json)
    meta = read_model_json(meta_node)
    overrides.update(command_line_options(meta["name"]))
    return meta_node, meta, _readable(meta_node.File(meta["onnx"]))


def _readable(node):
    """Where a file's bytes are: a built file, or a source file's own path
    when the SConscript uses a variant dir without duplicating sources."""
    if node.has_builder() or os.path.exists(node.abspath):
        return node
    return node.srcnode()


def _copy_file(target, source, env):
    staging.copy_into_place(_readable(source[0]).abspath, target[0].abspath)
    return 0


# Quiet: copying metadata is not worth a log line.
_COPY = SCons.Action.Action(_copy_file, None)


class _CompileAction(SCons.Action.CommandAction):
    """$TVMCOM, and when it fails, also removes the programs built from an
    earlier compile of this model (model_nodes): no artifact of a model
    that does not compile may remain."""

    def execute(self, target, source, env, *args, **kw):
        if env.get("TVM_TOOLCHAIN_ERROR"):
            raise SCons.Errors.UserError(env["TVM_TOOLCHAIN_ERROR"])
        status = super().execute(target, source, env, *args, **kw)
        if status:
            model_nodes.remove_dependents(target)
        return status


def generate(env):
    env.SetDefault(
        PYTHON=sys.executable,
        TVM_COMPILER=COMPILER,
        TVM_TARGET_FEATURES="+simd128",
        TVM_PIPELINE=compile_options.DEFAULT_PIPELINE,
        TVM_INPUT_SHAPES=[],
        TVM_TUNING="on",
        TVM_THREADS=1,
        # empty for 1, so a single-threaded build's command, and signature, stay as they were
        _TVM_THREADS_FLAGS="${'--threads %s' % TVM_THREADS if str(TVM_THREADS) != '1' else ''}",
        TVM_TUNING_DB="",
        TVM_TUNER=TUNER,
        TUNE_TRIALS=64,
        TUNE_FOCUS=0,
        TUNE_KERNELS="",
        TUNE_MEASURE="wasmtime",
        TUNE_PRUNE=False,
        TUNE_LOGS_DIR="#build/tune-logs",
        TUNECOM=TUNECOM,
        TUNECOMSTR="Tuning model $TVM_MODEL_NAME into $TVM_TUNING_DB ($TUNE_TRIALS trials a kernel)",
        _TVM_SHAPE_FLAGS="${_tvm_shape_flags(TVM_INPUT_SHAPES)}",
        _tvm_shape_flags=_shape_flags,
        # scons -s (--silent) also silences the compile's timing line.
        _TVM_QUIET="${'--quiet' if __env__.GetOption('silent') else ''}",
        TVMCOM=TVMCOM,
        TVMCOMSTR="Compiling model $TVM_MODEL_NAME with TVM (wasm32 $TVM_TARGET_FEATURES, $TVM_PIPELINE"
                  "${', tuned' if TVM_TUNING_DB else ''}"
                  "${', %s threads' % TVM_THREADS if str(TVM_THREADS) != '1' else ''})",
    )
    if "LLVM_AR" not in env:
        try:
            env["LLVM_AR"] = toolchain.find_llvm_ar()
        except toolchain.ToolchainError as e:
            env["LLVM_AR"] = "llvm-ar"
            env["TVM_TOOLCHAIN_ERROR"] = str(e)
    env["BUILDERS"]["_TVMCompile"] = SCons.Builder.Builder(
        action=_CompileAction("$TVMCOM", cmdstr="$TVMCOMSTR"),
        emitter=_emitter,
        target_factory=env.Dir,
        source_factory=env.File,
    )
    env.AddMethod(_model_artifacts, "TVMModel")
    env.AddMethod(_tune, "TVMTune")


def exists(env):
    try:
        toolchain.find_llvm_ar()
    except toolchain.ToolchainError:
        return False
    return True
