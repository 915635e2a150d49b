"""The tuning databases on disk, with no TVM import, for the SCons tools,
the compiler and the tuner alike: where a model's database for a pipeline,
wasm features and thread count lives (tuning/nhwc/simd128+threads2), which
one a build applies, and reading its JSON-lines files.
"""

import json
import os

from wasmml.compiler.errors import ModelError, first_line
from wasmml.compiler.options import RELAXED_SIMD, feature_list


# a MetaSchedule JSON database: a directory holding these two files
WORKLOADS_FILE, RECORDS_FILE = "database_workload.json", "database_tuning_record.json"


def tuning_slug(features):
    """The directory name of a tuning database for these wasm features:
    "+simd128" -> simd128, "+simd128,+relaxed-simd" -> simd128+relaxed-simd."""
    return "+".join(f.lstrip("+") for f in feature_list(features)) or "mvp"


def tuning_subdir(pipeline, features, threads=1):
    """Where, under a model's tuning/, its database for this pipeline, these
    features and this thread count lives (nhwc/simd128, nhwc/simd128+threads2):
    each pipeline makes other kernels, so each has databases of its own, and
    a threaded build's schedules have parallel loops sized for its threads."""
    return os.path.join(pipeline, tuning_slug(features) + (f"+threads{threads}" if threads > 1 else ""))


def find_tuning_db(model_dir, pipeline, features, threads=1):
    """The database a build of the model in `model_dir` applies, or None:
    its own, else, for relaxed SIMD, the plain SIMD128 one (the same
    kernels, and schedules valid on both: only the multiply-adds compile
    differently); a threaded build without a database of its threads takes
    the single-threaded one's (parallelize() then splits their outer loops)."""
    fallback = fallback_features(features)
    candidates = [features] + ([fallback] if fallback else [])
    for n in [threads] + ([1] if threads > 1 else []):
        for candidate in candidates:
            db = os.path.join(model_dir, "tuning", tuning_subdir(pipeline, candidate, n))
            if os.path.isfile(os.path.join(db, RECORDS_FILE)):
                return db
    return None


def fallback_features(features):
    """The features whose database a build with `features` applies when it
    has none of its own ("+simd128" for "+simd128,+relaxed-simd"), or None."""
    features = feature_list(features)
    if RELAXED_SIMD not in features:
        return None
    return ",".join(f for f in features if f != RELAXED_SIMD)


def read_json_lines(path, what):
    """The JSON values of a file with one per line. A last line without its
    newline is a record that an interrupted tuning run was writing: it is
    left out (the next `scons tune` rewrites the file without it)."""
    try:
        with open(path) as f:
            text = f.read()
        lines = [line for line in text.splitlines() if line.strip()]
        if lines and not text.endswith("\n") and not _is_json(lines[-1]):
            lines.pop()
        return [json.loads(line) for line in lines]
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable {what} file ({first_line(e)})")


def _is_json(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def mean_run_seconds(record):
    """Mean measured time of a record, None for a failed measurement."""
    run_secs = record[1] if len(record) > 1 else None
    if not run_secs:
        return None
    seconds = [float(s) for s in run_secs]
    mean = sum(seconds) / len(seconds)
    return mean if mean < 1e9 else None  # MetaSchedule writes 1e10 for a failed run
