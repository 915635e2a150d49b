"""`scons tune` tunes a model's kernels with MetaSchedule into a database
beside its model.json, and the next build applies it: the log says
"tuned", and the module still matches onnxruntime. Tuning is resumable and
never part of an ordinary build.

A small convolution with 4 trials per kernel keeps this to about a minute;
tools/bench_inference.py measures what tuning buys on real models."""

import importlib.metadata
import json
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import assert_matches_onnxruntime, save_model, tuning_records

TRIALS = 4


def conv_relu_model(path, in_channels=8):
    """A 3x3 convolution to 16 channels at 16x16, and a ReLU: computed
    directly with 8 input channels, by Winograd's F(4x4, 3x3) with 16."""
    rng = np.random.default_rng(7)
    shape = [1, in_channels, 16, 16]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         helper.make_node("Relu", ["c"], ["y"])], "tiny_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
        [numpy_helper.from_array(rng.standard_normal((16, in_channels, 3, 3), dtype=np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(16, dtype=np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, save_model(path, "tiny_conv", model, shape)


def test_tune_then_build_applies_the_database_and_still_matches(scons, run_wasm, tmp_path):
    model, model_json = conv_relu_model(tmp_path / "model")
    top = tmp_path / "top"
    top.mkdir()
    args = [f"MODELS={model_json}", f"TUNE_TRIALS={TRIALS}"]

    built = scons(*args, cwd=top)  # an ordinary build never tunes
    assert "Tuning" not in built.stdout and ", tuned)" not in built.stdout

    # TUNE_KERNELS tunes only the kernels so named: here the transposes into
    # and out of NHWC, and not the convolution
    named = scons("tune", *args, "TUNE_KERNELS=nothing,transpose", cwd=top)
    assert "1 already tuned or left out, tuning 2 with" in named.stdout, named.stdout
    measured = [line.split()[-1] for line in named.stdout.splitlines() if "GFLOP/s" in line]
    assert sorted(k.startswith("transpose") for k in measured) == [True, True], named.stdout

    tuned = scons("tune", *args, cwd=top)  # then the rest
    assert "Tuning model tiny_conv" in tuned.stdout, tuned.stdout
    assert "2 already tuned, tuning 1 with" in tuned.stdout, tuned.stdout
    db = model_json.parent / "tuning" / "nhwc" / "simd128"
    records = (db / "database_tuning_record.json").read_text().splitlines()
    assert len(records) >= 1, tuned.stdout
    for record in map(json.loads, records):  # every candidate ran in wasmtime, none failed
        trace, run_secs, target, _ = record[1]
        assert target["mtriple"] == "wasm32-unknown-unknown-wasm", target
        assert 0 < max(run_secs) < 1, (run_secs, tuned.stdout)  # failed runs are 1e10

    again = scons("tune", *args, cwd=top)  # resumable: what is tuned stays tuned
    assert "tuning 0 with" in again.stdout, again.stdout
    assert (db / "database_tuning_record.json").read_text().splitlines() == records
    # every run ends with where an inference's time goes: each kernel,
    # costliest first, with its calls, time per call and rate (the
    # transposes into and out of NHWC compute nothing)
    report = [line.split() for line in again.stdout.splitlines() if "GFLOP/s" in line]
    assert sorted(row[-1].startswith("fused_conv2d") for row in report) == [False, False, True], again.stdout
    assert all(float(row[0]) > 0 and row[3] == "1" for row in report), report
    assert [float(row[0]) for row in report] == sorted((float(row[0]) for row in report), reverse=True)
    assert [float(row[-3]) > 0 for row in report] == [row[-1].startswith("fused_conv2d") for row in report]

    # more trials a kernel: a run measures only the ones it lacks, not the
    # whole count again (the transposes have one schedule, already measured)
    workloads_file, records_file = db / "database_workload.json", db / "database_tuning_record.json"
    more = scons("tune", f"MODELS={model_json}", f"TUNE_TRIALS={TRIALS + 2}", cwd=top)
    assert "2 already tuned, tuning 1 with" in more.stdout, more.stdout
    added = len(records_file.read_text().splitlines()) - len(records)
    assert 0 < added <= 2, more.stdout
    records = records_file.read_text().splitlines()

    # a kernel the model no longer has (the compiler changed): TUNE_PRUNE
    # drops its workload and records, and renumbers the others'
    workloads = workloads_file.read_text().splitlines()
    orphan = json.dumps(["12345", json.loads(workloads[0])[1]])
    workloads_file.write_text("\n".join([orphan] + workloads) + "\n")
    moved = [json.dumps([r[0] + 1, r[1]]) for r in map(json.loads, records)]
    records_file.write_text("\n".join(moved + [json.dumps([0, json.loads(records[0])[1]])]) + "\n")
    pruned = scons("tune", *args, "TUNE_PRUNE=yes", cwd=top)
    assert "tuning 0 with" in pruned.stdout, pruned.stdout
    assert f"pruned 1 of {len(workloads) + 1} workloads and 1 of {len(records) + 1} records" in pruned.stdout
    assert list(map(json.loads, records_file.read_text().splitlines())) == list(map(json.loads, records))
    assert list(map(json.loads, workloads_file.read_text().splitlines())) == list(map(json.loads, workloads))

    # a database timed another way (as every one was before measurement.json,
    # with the kernel's arguments in cache, or by another wasmtime release)
    # keeps each kernel's 8 best records, timed again, before a search adds
    # to it; here by wasmtime 50.0.1, and a kernel has 10 more records whose
    # warm times beat every cold one
    marker = json.loads((db / "measurement.json").read_text())
    assert marker["caches"].startswith("all arguments but the first")
    assert marker["engine"] == f"wasmtime {importlib.metadata.version('wasmtime')}", marker
    (db / "measurement.json").write_text(json.dumps(dict(marker, engine="wasmtime 50.0.1")))
    warm = [json.dumps([r[0], [r[1][0], [1e-9]] + r[1][2:]]) for r in map(json.loads, records[:1]) for _ in range(10)]
    records_file.write_text("\n".join(records + warm) + "\n")
    remeasured = scons("tune", *args, cwd=top)
    assert "the database was timed another way: timing" in remeasured.stdout, remeasured.stdout
    kept = list(map(json.loads, records_file.read_text().splitlines()))
    per_kernel = [sum(r[0] == i for r in kept) for i in {r[0] for r in kept}]
    assert max(per_kernel) == 8 and all(min(r[1][1]) > 1e-7 for r in kept), kept
    assert (db / "measurement.json").exists()
    steady = scons("tune", *args, cwd=top)  # once is enough
    assert "timed another way" not in steady.stdout and "tuning 0 with" in steady.stdout, steady.stdout
    records = records_file.read_text().splitlines()

    rebuilt = scons(*args, cwd=top)  # the database is a source of the compile
    assert "Compiling model tiny_conv with TVM (wasm32 +simd128, nhwc, tuned)" in rebuilt.stdout
    # the wasm32 build found a record for each kernel: the convolution, and
    # the transposes into and out of NHWC
    assert "3/3 kernels tuned" in rebuilt.stdout, rebuilt.stdout
    assert not (db / "logs").exists() and not (db.parent / "logs").exists()  # logs go to build/
    elsewhere = tmp_path / "elsewhere"  # a tuned build is reproducible
    elsewhere.mkdir()
    archive = "build/tiny_conv/libtiny_conv.a"
    scons(f"MODELS={model_json}", archive, cwd=elsewhere)
    assert (elsewhere / archive).read_bytes() == (top / archive).read_bytes()

    assert_matches_onnxruntime(run_wasm, top / "build" / "tiny_conv" / "run-model.wasm", model,
                               tmp_path / "io")
    # `run-model --profile` times each step of the plan inside real inferences
    profiled = run_wasm(top / "build" / "tiny_conv" / "run-model.wasm", tmp_path / "io", "--repeat", "3",
                        "--profile").stderr.splitlines()
    plan = json.loads((top / "build" / "tiny_conv" / "tiny_conv.plan.json").read_text())
    steps = [line.split() for line in profiled if line.startswith("step_ms ")]
    assert [(int(s[1]), s[2]) for s in steps] == list(enumerate(s["kernel"] for s in plan["steps"])), profiled
    assert all(float(s[3]) > 0 for s in steps) and sum(line.startswith("run_ms ") for line in profiled) == 3

    untuned = scons(*args, "TVM_TUNING=off", cwd=top)  # the option turns it off again
    assert "Compiling model tiny_conv with TVM (wasm32 +simd128, nhwc)" in untuned.stdout

    # relaxed SIMD's database of its own starts from SIMD128's best
    # schedules, measured again with fused multiply-adds, then searches on
    # (8 trials: the 4 seeded ones count as the kernel's first)
    relaxed_args = [f"MODELS={model_json}", f"TUNE_TRIALS={2 * TRIALS}",
                    "TVM_TARGET_FEATURES=+simd128,+relaxed-simd"]
    relaxed = scons("tune", *relaxed_args, cwd=top)
    assert f"schedules of {db} again" in relaxed.stdout, relaxed.stdout
    relaxed_db = db.parent / "simd128+relaxed-simd"
    relaxed_records = tuning_records(relaxed_db)
    seed_traces = {json.dumps(r[1][0]) for r in map(json.loads, records)}
    seeded = [r for r in relaxed_records if json.dumps(r[1][0]) in seed_traces]
    assert seeded and len(relaxed_records) > len(seeded), relaxed.stdout  # then its own trials
    for record in relaxed_records:
        trace, run_secs, target, _ = record[1]
        assert "+relaxed-simd" in target["mattr"] and 0 < max(run_secs) < 1, record
    relaxed_build = scons(*relaxed_args, cwd=top)
    assert "(wasm32 +simd128,+relaxed-simd, nhwc, tuned)" in relaxed_build.stdout, relaxed_build.stdout
    assert "3/3 kernels tuned" in relaxed_build.stdout, relaxed_build.stdout
    assert_matches_onnxruntime(run_wasm, top / "build" / "tiny_conv" / "run-model.wasm", model,
                               tmp_path / "io-relaxed")


def test_prepack_stores_the_weights_in_the_layout_the_tuned_kernel_reads(scons, run_wasm, tmp_path):
    model, model_json = conv_relu_model(tmp_path / "model")
    top = tmp_path / "top"
    top.mkdir()
    args = [f"MODELS={model_json}", f"TUNE_TRIALS={TRIALS}", "TVM_PIPELINE=prepack"]
    scons("tune", *args, cwd=top)
    built = scons(*args, cwd=top)
    assert "(wasm32 +simd128, prepack, tuned)" in built.stdout and "1/1 kernels tuned" in built.stdout

    out = top / "build" / "tiny_conv"
    plan = json.loads((out / "tiny_conv.plan.json").read_text())
    # the layout rewrite ran at build time: an inference runs one kernel, the
    # convolution on the packed filter, and no step of its own repacks it
    assert [k.endswith("_prepacked") for k in plan["kernels"]] == [True], plan["kernels"]
    assert len(plan["steps"]) == 1, plan["steps"]
    # the filter is stored once, its values in the layout the schedule
    # chose (which 4 random trials may leave as OIHW: seen in CI)
    blob = (out / "tiny_conv.weights").read_bytes()
    filters = [np.frombuffer(blob, np.float32, count=int(np.prod(t["shape"])), offset=t["offset"])
               for t in plan["tensors"] if t["region"] == "weights" and np.prod(t["shape"]) == 16 * 8 * 9]
    oihw = numpy_helper.to_array(model.graph.initializer[0]).ravel()
    assert len(filters) == 1 and np.array_equal(np.sort(filters[0]), np.sort(oihw)), plan["tensors"]

    assert_matches_onnxruntime(run_wasm, top / "build" / "tiny_conv" / "run-model.wasm", model,
                               tmp_path / "io")


def test_a_tuned_winograd_kernel_still_matches(scons, run_wasm, tmp_path):
    """With 16 input channels the convolution is computed by Winograd's
    F(4x4, 3x3), on weights packed at build time in blocks of 16 output
    channels; TUNE_KERNELS=winograd tunes that kernel alone, and the build
    with its schedule still matches onnxruntime."""
    model, model_json = conv_relu_model(tmp_path / "model", in_channels=16)
    top = tmp_path / "top"
    top.mkdir()
    args = [f"MODELS={model_json}", f"TUNE_TRIALS={TRIALS}"]
    tuned = scons("tune", *args, "TUNE_KERNELS=winograd", cwd=top)
    assert "2 already tuned or left out, tuning 1 with" in tuned.stdout, tuned.stdout
    built = scons(*args, cwd=top)
    assert "(wasm32 +simd128, nhwc, tuned)" in built.stdout and "1/3 kernels tuned" in built.stdout, built.stdout

    out = top / "build" / "tiny_conv"
    plan = json.loads((out / "tiny_conv.plan.json").read_text())
    assert [k for k in plan["kernels"] if "conv2d" in k] == ["fused_conv2d_winograd_add_relu"], plan["kernels"]
    packed = [t["shape"] for t in plan["tensors"] if t["region"] == "weights" and len(t["shape"]) == 5]
    assert packed == [[6, 6, 1, 16, 16]], plan["tensors"]  # [alpha, alpha, O / 16, I, 16]
    assert_matches_onnxruntime(run_wasm, out / "run-model.wasm", model, tmp_path / "io")


def test_a_record_cut_off_by_an_interrupted_tuning_run_is_left_out(repo, tmp_path):
    """A tuning run killed while writing leaves a last line without its
    newline: builds read the records before it. Damage anywhere else is
    an error naming the file."""
    sys.path.insert(0, str(repo / "site_scons"))
    from wasmml import tuning_db
    from wasmml.compiler.errors import ModelError

    records = tmp_path / tuning_db.RECORDS_FILE
    records.write_text('[0, [0.5]]\n[1, [0.25]]\n[2, [0.1')
    assert tuning_db.read_json_lines(str(records), "tuning record") == [[0, [0.5]], [1, [0.25]]]
    records.write_text('[0, [0.5]]\n[1, [0.2\n[2, [0.125]]\n')
    with pytest.raises(ModelError, match=f"{records}: not a readable tuning record file"):
        tuning_db.read_json_lines(str(records), "tuning record")
