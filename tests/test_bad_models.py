"""A model that cannot be compiled stops the build with one line naming the
model and the cause (`error: model 'NAME': CAUSE`, beside scons's own
`scons: *** [...] Error 1`), no traceback, a non-zero status, and nothing of
that model left in build/: no archive, plan, weights or .wasm. Errors are
per model: with -k the other models are still built.
"""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

F32 = TensorProto.FLOAT
ARTIFACT = re.compile(r".*(\.a|\.plan\.json|\.weights|\.wasm|\.tmp)$")


def _model(inputs, outputs, nodes, weights=None):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, F32, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F32, s) for n, s in outputs],
        [numpy_helper.from_array(a, n) for n, a in (weights or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def good_model():
    r = np.random.default_rng(7)
    return _model([("x", [1, 2, 6, 6])], [("y", [1, 4, 6, 6])], [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["y"]),
    ], {"w": r.standard_normal((4, 2, 3, 3), dtype=np.float32),
        "b": r.standard_normal(4, dtype=np.float32)})


def write_model(root, name, onnx_bytes, inputs=True):
    """root/name/model.json naming name.onnx, which holds onnx_bytes (None: no file)."""
    d = root / name
    d.mkdir(parents=True)
    meta = {"name": name, "onnx": f"{name}.onnx", "outputs": ["y"]}
    if inputs:
        meta["inputs"] = {"x": {"shape": [1, 2, 6, 6], "dtype": "float32"}}
    (d / "model.json").write_text(json.dumps(meta))
    if onnx_bytes is not None:
        (d / f"{name}.onnx").write_bytes(onnx_bytes)
    return d / "model.json"


def leftovers(top, name):
    """Artifacts of model `name` anywhere in build/."""
    build = top / "build"
    return sorted(str(p.relative_to(build)) for p in build.rglob("*")
                  if p.is_file() and ARTIFACT.fullmatch(p.name)
                  and (name in p.name or name in p.parent.name)) if build.exists() else []


def assert_one_error_line(proc, name, cause):
    """Exactly one line of ours for `name`, matching cause; the rest of stderr
    is scons's own `scons: *** ` lines; no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith(f"error: model '{name}': ")]
    assert len(ours) == 1, proc.stderr
    assert re.search(cause, ours[0]), ours[0]
    assert all(ln.startswith("scons: *** [") for ln in lines if not ln.startswith("error: model '")), \
        proc.stderr


def assert_matches_good_model(run_wasm, wasm, io_dir, seed=1):
    """The module built from good_model() gives onnxruntime's output on a
    seeded input: right, not merely present."""
    io_dir.mkdir(exist_ok=True)
    x = np.random.default_rng(seed).standard_normal((1, 2, 6, 6), dtype=np.float32)
    x.tofile(io_dir / "input_0.bin")
    run_wasm(wasm, io_dir)
    got = np.fromfile(io_dir / "output_0.bin", dtype=np.float32).reshape(1, 4, 6, 6)
    expected = ort.InferenceSession(good_model().SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


# --- one bad model per build ---------------------------------------------------

def truncated(repo):
    data = good_model().SerializeToString()
    return data[:len(data) // 2]


def unsupported_op(repo):
    # Det is a standard ONNX op (opset 11) that TVM 0.27's relax frontend lacks.
    return _model([("x", [1, 2, 6, 6])], [("y", [1, 2])],
                  [helper.make_node("Det", ["x"], ["y"], name="the_det")]).SerializeToString()


UNSUPPORTED_DET = (r"node 'the_det' \(operator Det\) is not supported by TVM's ONNX importer "
                   r"\(1 such node\); export the model without it")


def symbolic_dim(repo):
    return _model([("x", ["N", 2, 6, 6])], [("y", ["N", 2, 6, 6])],
                  [helper.make_node("Relu", ["x"], ["y"])]).SerializeToString()


def data_dependent_shape(repo):
    # NonZero's output length depends on the values: no static plan holds it
    return _model([("x", [1, 2, 6, 6])], [("y", [4, None])], [
        helper.make_node("NonZero", ["x"], ["nz"], name="the_nonzero"),
        helper.make_node("Cast", ["nz"], ["y"], to=F32),
    ]).SerializeToString()


def over_4_gib(repo):
    # 2^25 copies of a 72-element image: 9.6 GB, beyond wasm32's address space
    return _model([("x", [1, 2, 6, 6])], [("y", [1 << 25, 2, 6, 6])], [
        helper.make_node("Expand", ["x", "shape"], ["y"], name="the_expand"),
    ], {"shape": np.array([1 << 25, 2, 6, 6], dtype=np.int64)}).SerializeToString()


def integer_pow(repo):
    # imports, but TVM's lowering has Pow for floats only; the error names the node
    return _model([("x", [1, 2, 6, 6])], [("y", [1, 2, 6, 6])], [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Cast", ["r"], ["i"], to=TensorProto.INT64),
        helper.make_node("Pow", ["i", "two"], ["p"], name="the_pow"),
        helper.make_node("Cast", ["p"], ["y"], to=F32),
    ], {"two": np.array(2, dtype=np.int64)}).SerializeToString()


CASES = [
    # (id, onnx bytes from repo or None, shape in model.json?, cause), marks
    pytest.param(lambda repo: None, True, r"bad_missing\.onnx: file not found", id="missing"),
    pytest.param(truncated, True, r"bad_truncated\.onnx: not (a readable ONNX file|an ONNX model)",
                 id="truncated"),
    pytest.param(lambda repo: (repo / "models" / "images" / "chelsea.png").read_bytes(), True,
                 r"bad_png\.onnx: not (a readable ONNX file|an ONNX model)", id="png"),
    pytest.param(lambda repo: b"name: model\nthis is not an ONNX file\n", True,
                 r"bad_text\.onnx: not (a readable ONNX file|an ONNX model)", id="text"),
    pytest.param(unsupported_op, True, UNSUPPORTED_DET, id="unsupported_op"),
    pytest.param(data_dependent_shape, True,
                 r"node 'the_nonzero' \(operator NonZero\) makes a tensor whose shape depends on "
                 r"the data \(\[4, \?\]\); a wasm plan needs every shape fixed at build time",
                 id="data_dependent_shape"),
    pytest.param(over_4_gib, True,
                 r"needs 9\.0 GiB for its tensors and weights, and a wasm32 module can address 4 GiB; "
                 r"the largest tensor is \[33554432, 2, 6, 6\] float32 \(9\.0 GiB\), made by node "
                 r"'the_expand' \(operator Expand\)", id="over_4_gib"),
    pytest.param(integer_pow, True,
                 r"TVM cannot lower node 'the_pow' \(operator Pow\): .*power only applies to float; "
                 r"change that node in the model", id="integer_pow"),
    pytest.param(symbolic_dim, False, r"input 'x' has unknown dimension 'N' and no shape is given",
                 id="symbolic_dim"),
]


@pytest.mark.parametrize("make,shape_given,cause", CASES)
def test_bad_model(make, shape_given, cause, request, repo, scons, tmp_path):
    name = "bad_" + request.node.callspec.id
    model_json = write_model(tmp_path / "models", name, make(repo), inputs=shape_given)
    top = tmp_path / "top"
    top.mkdir()
    proc = scons(f"MODELS={model_json}", cwd=top, check=False)
    assert_one_error_line(proc, name, cause)
    assert f"[build/{name}/lib{name}.a]" in proc.stderr  # scons's line: the failed target
    assert leftovers(top, name) == []


# --- errors are per model; a model that turns bad leaves nothing stale ---------

@pytest.fixture(scope="module")
def keep_going(repo, scons, tmp_path_factory):
    """One project with a bad model and two good ones: built with -k; then one
    good model's ONNX is overwritten with garbage, the other's is deleted,
    and it is rebuilt with -k."""
    root = tmp_path_factory.mktemp("keep-going")
    top = root / "top"
    top.mkdir()
    good = good_model().SerializeToString()
    paths = {"bad_op": write_model(root / "models", "bad_op", unsupported_op(repo)),
             "good_a": write_model(root / "models", "good_a", good),
             "good_b": write_model(root / "models", "good_b", good)}
    first = scons("-k", "-j2", "MODELS=" + ",".join(map(str, paths.values())), cwd=top, check=False)
    # keep what the first build made, before it is broken
    built = {n: sorted(p.name for p in (top / "build" / n).iterdir()) for n in ("good_a", "good_b")}
    saved_wasm = root / "good_a.wasm"
    if (top / "build" / "good_a" / "run-model.wasm").exists():
        shutil.copy(top / "build" / "good_a" / "run-model.wasm", saved_wasm)

    (paths["good_a"].parent / "good_a.onnx").write_bytes(b"\x08\x07garbage, not a model")
    (paths["good_b"].parent / "good_b.onnx").unlink()
    second = scons("-k", "-j2", "MODELS=" + ",".join(map(str, paths.values())), cwd=top, check=False)
    return {"top": top, "first": first, "built": built, "saved_wasm": saved_wasm, "second": second}


def test_other_models_are_built_with_keep_going(keep_going, run_wasm, tmp_path):
    first = keep_going["first"]
    assert_one_error_line(first, "bad_op", UNSUPPORTED_DET)
    for name in ("good_a", "good_b"):
        assert keep_going["built"][name] == sorted(
            [f"lib{name}.a", f"{name}.meta.json", f"{name}.plan.json", f"{name}.weights",
             "run-model.wasm"]), first.stderr
    assert_matches_good_model(run_wasm, keep_going["saved_wasm"], tmp_path)


@pytest.mark.parametrize("name,cause", [
    pytest.param("good_a", r"good_a\.onnx: not (a readable ONNX file|an ONNX model)", id="garbage"),
    pytest.param("good_b", r"good_b\.onnx: file not found", id="deleted"),
])
def test_broken_model_leaves_nothing(keep_going, name, cause):
    assert "run-model.wasm" in keep_going["built"][name]  # it was built before
    assert_one_error_line(keep_going["second"], name, cause)
    assert leftovers(keep_going["top"], name) == []


# --- a build directory that cannot be written -----------------------------------

def test_unwritable_build_directory_is_one_line(repo, tmp_path):
    """The compiler (as $TVMCOM runs it) told to write where it cannot, here
    under a file where a directory should be, as a read-only or full disk
    would refuse: one line naming what it could not write, exit 1, no
    traceback. (Tests run as root, for whom a read-only mode is no barrier.)"""
    sys.path.insert(0, str(repo / "site_scons"))
    from wasmml import toolchain

    meta = write_model(tmp_path / "models", "good", good_model().SerializeToString())
    blocked = tmp_path / "build"
    blocked.write_text("a file where the build directory should be\n")
    out = blocked / "good"
    proc = subprocess.run(
        [sys.executable, str(repo / "site_scons" / "wasmml" / "compiler" / "__main__.py"),
         "--name", "good", "--meta", str(meta), "--onnx", str(meta.parent / "good.onnx"),
         "--archive", str(out / "libgood.a"), "--plan", str(out / "good.plan.json"),
         "--weights", str(out / "good.weights"), "--llvm-ar", toolchain.find_llvm_ar()],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: model 'good': ")]
    assert len(ours) == 1 and f"cannot write {out / 'libgood.a'}" in ours[0], proc.stderr
    assert blocked.read_text().startswith("a file where")


# --- two builds at once in one tree ---------------------------------------------

def test_two_builds_started_at_once_in_one_tree_both_succeed(scons_command, tmp_path):
    """The second waits for the first (saying so), then finds its work done:
    no step runs twice, nothing is half-written, and the module is whole."""
    meta = write_model(tmp_path / "models", "good", good_model().SerializeToString())
    top = tmp_path / "top"
    top.mkdir()
    cmd = scons_command("MODELS=" + str(meta), cwd=top)
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:
            if line.startswith("Compiling model good"):
                break
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        first_out, first_err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second.stderr
    assert "another build is running" in second.stderr and "waiting" in second.stderr
    assert "Compiling model" not in second.stdout and "with cargo" not in second.stdout, second.stdout
    assert "`good' is up to date" in second.stdout
    assert "Building run-model.wasm" in first_out
    json.loads((top / "build" / "good" / "good.plan.json").read_text())
    assert not list((top / "build").rglob("*.tmp"))
    wasm = (top / "build" / "good" / "run-model.wasm").read_bytes()
    assert wasm[:4] == b"\0asm"


# --- paths with spaces and non-ASCII characters ---------------------------------

def test_paths_with_spaces_and_non_ascii_characters(scons, run_wasm, tmp_path):
    """A model, its tuning database and the build tree in directories named
    with spaces and accents: every path reaches TVM, cargo and the tuner's
    command lines whole, and the module matches onnxruntime."""
    meta = write_model(tmp_path / "my models" / "modèle ñ", "good", good_model().SerializeToString())
    database = meta.parent / "tuning" / "nhwc" / "simd128"
    database.mkdir(parents=True)
    for name in ("database_workload.json", "database_tuning_record.json"):
        (database / name).write_text("")  # applied, though it tunes nothing
    top = tmp_path / "build tree é"
    top.mkdir()
    proc = scons("MODELS=" + str(meta), cwd=top)
    assert "Compiling model good with TVM (wasm32 +simd128, nhwc, tuned)" in proc.stdout, proc.stdout
    assert_matches_good_model(run_wasm, top / "build" / "good" / "run-model.wasm", tmp_path / "i o")


# --- a build directory on a full disk -------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk (mounting needs root, as CI runs)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk, leave):
    """Fills the disk, leaving `leave` bytes free; returns the filler file."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        f.write(bytes(max(free - leave, 0)))
    return filler


@pytest.mark.parametrize("leave,failed,cause", [
    # no room for the archive: the compile fails, and SCons cannot save its record either
    pytest.param(0, "libgood.a",
                 r"error: model 'good': cannot write build/good/libgood\.a \(llvm-ar: .*No space left",
                 id="full"),
    # room for the model's artifacts, not for the module
    pytest.param(120 * 1024, "run-model.wasm",  # the archive is about 30 kB, the module 200
                 r"scons: \*\*\* \[build/good/run-model\.wasm\] .*/build/good/run-model\.wasm: "
                 r"No space left on device", id="no_room_for_the_module"),
])
def test_full_disk_is_one_line_and_the_next_build_is_right(
        leave, failed, cause, small_disk, scons, run_wasm, tmp_path):
    """Whichever write the full disk stops: one line naming the file, no
    traceback, no staging file left, and once there is room again the next
    build finishes what is missing and the module matches onnxruntime."""
    meta = write_model(tmp_path / "models", "good", good_model().SerializeToString())
    top = small_disk / "top"
    top.mkdir()
    filler = _fill(small_disk, leave)
    proc = scons(f"MODELS={meta}", cwd=top, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert re.search(cause, proc.stderr), proc.stderr
    assert f"[build/good/{failed}]" in proc.stderr
    assert not list(top.rglob("*.tmp")), sorted(map(str, top.rglob("*")))
    assert not (top / "build" / "good" / failed).exists()
    for line in proc.stderr.splitlines():
        assert line.startswith(("error: model 'good': ", "scons: *** ")), proc.stderr

    filler.unlink()
    again = scons(f"MODELS={meta}", cwd=top)
    assert "Building run-model.wasm" in again.stdout
    assert_matches_good_model(run_wasm, top / "build" / "good" / "run-model.wasm", tmp_path / "io", seed=3)
