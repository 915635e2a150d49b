"""TVM_THREADS: kernels with parallel loops on model-runtime's pool of wasi
threads, run by the wasmtime CLI with threads on. The outputs match
onnxruntime at 1, 2 and 4 threads, as the single-threaded build's do; the
option is in the build signature; the default build does not change. The
TIR rewrite that makes parallel loops keeps each kernel's result exact."""

import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import REPO, assert_matches_onnxruntime, save_model, wasmtime_cli

sys.path.insert(0, str(REPO / "site_scons"))
from wasmml.compiler.kernels import pointwise  # noqa: E402
from wasmml.compiler.parallel import parallelize  # noqa: E402
from wasmml.compiler.target import tir_pipeline, wasm_target  # noqa: E402

THREADED_RUN = ["-W", "threads=y,shared-memory=y", "-S", "threads=y"]


def run_cli(threads):
    """run_wasm(wasm, io, *args) for assert_matches_onnxruntime: run-model
    under the wasmtime CLI with wasi-threads, on `threads` threads."""
    def run(wasm, io, *args):
        env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
        proc = subprocess.run([wasmtime_cli(), "run", *THREADED_RUN, "--env", f"TVM_NUM_THREADS={threads}",
                               "--dir", str(io), str(wasm), str(io), *args],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, f"{wasm} exited {proc.returncode}: {proc.stderr}"
        return proc
    return run


def conv_model():
    """A small conv net: conv, relu, depthwise conv, global pool, gemm."""
    rng = np.random.default_rng(5)

    def weight(name, shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  rng.standard_normal(shape).astype(np.float32).ravel() * 0.2)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [weight("w1", [16, 3, 3, 3]), weight("b1", [16]), weight("w2", [16, 1, 3, 3]),
         weight("w3", [10, 16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def mlp_model():
    rng = np.random.default_rng(6)
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 32], rng.standard_normal([64, 32]).astype(np.float32).ravel())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                              "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture(scope="module")
def project(tmp_path_factory, scons):
    top = tmp_path_factory.mktemp("threads")
    models = {"convnet": conv_model(), "mlp": mlp_model()}
    shapes = {"convnet": [1, 3, 32, 32], "mlp": [4, 64]}
    jsons = ",".join(str(save_model(top / name, name, m, shapes[name])) for name, m in models.items())

    def build(*args, check=True):
        return scons("-Q", f"MODELS={jsons}", *args, cwd=top, check=check)

    return {"top": top, "models": models, "build": build}


@pytest.mark.parametrize("name", ["mlp", "convnet"])
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_threaded_build_matches_onnxruntime_under_the_cli(project, name, threads, tmp_path):
    project["build"]("TVM_THREADS=2")
    wasm = project["top"] / "build" / name / "run-model.wasm"
    assert b"thread-spawn" in wasm.read_bytes()
    assert_matches_onnxruntime(run_cli(threads), wasm, project["models"][name], tmp_path / "io")


def test_thread_count_is_in_the_build_signature_and_default_is_unchanged(project):
    wasm = project["top"] / "build" / "mlp" / "run-model.wasm"
    out = project["build"]()
    single = wasm.read_bytes()
    assert b"thread-spawn" not in single
    assert project["build"]("TVM_THREADS=1").stdout.count("Compiling") == 0
    out = project["build"]("TVM_THREADS=2")
    assert sorted(re.findall(r"Compiling model (\w+)", out.stdout)) == ["convnet", "mlp"]
    assert out.stdout.count("Building run-model.wasm") == 2
    # what would rebuild (-n: a dry run, which prints the same steps)
    out = project["build"]("-n", "TVM_THREADS=3")  # the compile's num-cores and the pool's default
    assert out.stdout.count("Building run-model.wasm") == 2
    out = project["build"]()
    assert wasm.read_bytes() == single
    out = project["build"]("-n", "mlp.TVM_THREADS=2")
    assert re.findall(r"Compiling model (\w+)", out.stdout) == ["mlp"]


def test_bad_thread_count_is_one_line(project):
    out = project["build"]("TVM_THREADS=auto", check=False)
    assert out.returncode != 0
    assert "TVM_THREADS='auto': expected a number of threads, 1 or more" in out.stderr


def launches(func):
    """For each parallel loop of `func`, how many times a call launches it:
    the product of the loops' extents around it."""
    import tvm

    found = []

    def walk(node, times):
        if isinstance(node, tvm.tirx.For):
            if node.kind == tvm.tirx.ForKind.PARALLEL:
                found.append(times)
            walk(node.body, times * node.extent.value)
        elif isinstance(node, tvm.tirx.SeqStmt):
            for child in node.seq:
                walk(child, times)
        elif isinstance(node, tvm.s_tir.SBlockRealize):
            walk(node.block.body, times)
        elif isinstance(node, tvm.tirx.IfThenElse):
            walk(node.then_case, times)
    walk(func.body, 1)
    return found


@pytest.mark.parametrize("threads", [2, 3])
def test_pixels_inside_the_channel_loop_are_split_outside_it_and_sum_the_same(threads):
    """The hand-written 1x1 convolutions loop over input channels outside
    pixels (ResNet50's 14x14 layers: 256 steps around 98 pixel pairs): the
    pixels are split among the threads outside that loop, one launch a call,
    and every sum adds in the same order (the same bits as one thread)."""
    import tvm

    conv, args = one_by_one_convolution(32, 64)

    def run(mod):
        out = tvm.runtime.tensor(np.zeros((1, 14, 14, 64), np.float32))
        tvm.compile(mod, target="llvm")["main"](*map(tvm.runtime.tensor, args), out)
        return out.numpy()

    schedules = pointwise.candidates(conv)
    assert schedules
    for sch in schedules[:4]:
        serial = run(sch.mod)
        mod, count = parallelize(sch.mod, threads)
        # the outputs' zeroing, the sums (hoisted) and the ReLU, or one around all three
        assert count in (1, 3), sch.trace
        assert launches(mod["main"]) in ([1], [1, 1, 1]), (launches(mod["main"]), mod["main"].script())
        np.testing.assert_array_equal(run(mod), serial)


def one_by_one_convolution(channels_in, channels_out, size=14):
    """A 1x1 convolution and ReLU (NHWC) as a PrimFunc, and random inputs."""
    import tvm
    from tvm import te, topi

    x = te.placeholder((1, size, size, channels_in), name="x")
    w = te.placeholder((1, 1, channels_in, channels_out), name="w")
    y = topi.nn.relu(topi.nn.conv2d_nhwc(x, w, 1, 0, 1))
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((1, size, size, channels_in), dtype=np.float32),
            rng.standard_normal((1, 1, channels_in, channels_out), dtype=np.float32)]
    return tvm.IRModule({"main": te.create_prim_func([x, w, y])}), args


def test_parallel_bodies_keep_noalias_so_inputs_are_loaded_once_as_in_the_serial_kernel():
    """In a parallel loop's lambda LLVM cannot tell that storing a sum leaves
    the input alone, and reloads the input floats after the stores
    (docs/threads-noalias.md); the threaded pipeline outlines each body into
    a noalias function, and the kernel loads them as often as the serial one."""
    import tvm

    mod, _ = one_by_one_convolution(256, 64)
    serial_target = wasm_target("+simd128")
    threaded = wasm_target("+simd128", 2)
    assert tir_pipeline(serial_target) == "default"

    def scalar_loads(mod, target, pipeline):
        return tvm.tirx.build(mod, target=target, pipeline=pipeline).inspect_source("ll").count("load float")

    reloads_without = 0
    for sch in pointwise.candidates(mod)[:4]:
        serial = scalar_loads(sch.mod, serial_target, "default")
        parallel, _ = parallelize(sch.mod, 2)
        reloads_without += scalar_loads(parallel, threaded, "default") - serial
        assert scalar_loads(parallel, threaded, tir_pipeline(threaded)) == serial, sch.trace
    assert reloads_without > 0, "TVM's own lambdas no longer reload: the outlining may be unneeded"


@pytest.mark.parametrize("threads", [2, 3])
def test_outlined_parallel_bodies_compute_the_same_bits_on_real_threads(threads):
    """The threaded pipeline's kernels, built natively and run on TVM's own
    thread pool, give the serial kernel's bits."""
    import tvm

    mod, args = one_by_one_convolution(64, 32)

    def run(mod, target, pipeline):
        out = tvm.runtime.tensor(np.zeros((1, 14, 14, 32), np.float32))
        built = tvm.tirx.build(mod, target=target, pipeline=pipeline)
        # the outlined bodies, inlined back, leave their noalias as alias scopes
        assert ("!alias.scope" in built.inspect_source("ll")) == (pipeline != "default")
        built["main"](*map(tvm.runtime.tensor, args), out)
        return out.numpy()

    native = tvm.target.Target({"kind": "llvm", "num-cores": threads})
    assert tir_pipeline(native) != "default"
    for sch in pointwise.candidates(mod)[:4]:
        serial = run(sch.mod, "llvm", "default")
        parallel, count = parallelize(sch.mod, threads)
        assert count
        np.testing.assert_array_equal(run(parallel, native, tir_pipeline(native)), serial)


@pytest.fixture(scope="module")
def pool_stress(tmp_path_factory, scons):
    """tests/programs/pool-stress linked for 4 threads by default."""
    top = tmp_path_factory.mktemp("pool-stress")
    scons(f"CRATES={REPO / 'tests' / 'programs' / 'pool-stress'}", "TVM_THREADS=4", cwd=top)
    return top / "build" / "pool-stress.wasm"


@pytest.mark.parametrize("threads", [1, 2, 4, 7, None])
def test_pool_survives_many_launches_with_barriers(pool_stress, threads):
    """model-runtime's threads::stress: 3000 launches, each task counting its
    runs and checking every other task's between two barriers; 7 threads on
    fewer cores, so workers are preempted mid-launch. None: the build's 4."""
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    count = ["--env", f"TVM_NUM_THREADS={threads}"] if threads else []
    proc = subprocess.run([wasmtime_cli(), "run", *THREADED_RUN, *count, str(pool_stress), "3000"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["threads", str(threads or 4), "launches", "3000"]


def test_tuning_for_threads_finds_parallel_schedules_and_the_threaded_build_applies_them(scons, tmp_path):
    """`scons tune TVM_THREADS=2 TUNE_MEASURE=native`: a database of its own
    (tuning/nhwc/simd128+threads2) whose schedules have parallel loops,
    which the threaded build applies; its module still matches onnxruntime
    on 2 threads. The single-threaded build does not take it."""
    from test_tuning import TRIALS, conv_relu_model

    model, model_json = conv_relu_model(tmp_path / "model")
    top = tmp_path / "top"
    top.mkdir()
    args = [f"MODELS={model_json}", f"TUNE_TRIALS={TRIALS}", "TVM_THREADS=2"]
    tuned = scons("tune", *args, "TUNE_MEASURE=native", cwd=top)
    assert "Tuning model tiny_conv" in tuned.stdout, tuned.stdout
    db = model_json.parent / "tuning" / "nhwc" / "simd128+threads2"
    records = (db / "database_tuning_record.json").read_text()
    assert "meta_schedule.parallel" in records, tuned.stdout
    assert not (model_json.parent / "tuning" / "nhwc" / "simd128").exists()

    built = scons(*args, cwd=top)
    assert "(wasm32 +simd128, nhwc, tuned, 2 threads)" in built.stdout, built.stdout
    wasm = top / "build" / "tiny_conv" / "run-model.wasm"
    assert_matches_onnxruntime(run_cli(2), wasm, model, tmp_path / "io")
    single = scons("-n", f"MODELS={model_json}", cwd=top)  # what it would compile, without doing so
    assert "Compiling model tiny_conv with TVM (wasm32 +simd128, nhwc)" in single.stdout, single.stdout
