"""The format of model.json, written down once, and its checks.

`load(path)` reads and checks a model.json on its own (the SCons tool calls
it on every build, no-op builds included, so it uses nothing beyond the
standard library); `check_against_onnx(meta, model, path)` checks it against
the ONNX file, in the compile's process, before TVM is imported. Every
failure is a `ModelJsonError` whose message is one line naming the file and
the key. docs/model-json.md is the user's reference for the same tables.
"""

import json
import math
import os
import re


class ModelJsonError(Exception):
    """A model.json that does not follow the format: one line, naming the
    file and the key at fault."""


# (key, type, required, meaning). The types are the keys of _KINDS below.
TOP_KEYS = (
    ("name", "identifier", True,
     "the model's name: lib<NAME>.a, NAME.plan.json, the build alias, NAME.OPTION= on the command line"),
    ("onnx", "path", True, "the ONNX file, relative to model.json"),
    ("labels", "existing path", False,
     "class names, one a line (line N names class N), relative to model.json; copied as NAME.labels.txt"),
    ("inputs", "inputs", False, "shape and element type of graph inputs, by input name"),
    ("outputs", "names", False, "the graph's output names, in order: an assertion checked against the ONNX file"),
    ("preprocess", "preprocess", False,
     "how rust/vision turns an image into the input; makes the model an image classifier"),
    ("license", "string", False, "the model's license, for people"),
    ("source", "string", False, "where the model comes from, for people"),
)
INPUT_KEYS = (
    ("shape", "shape", True, "the input's dimensions; a dynamic dimension of the ONNX input takes this value"),
    ("dtype", "dtype", True, "the input's element type, as the ONNX file has it (float32, int64, ...)"),
)
PREPROCESS_KEYS = (
    ("size", "size", True, "[width, height] of the image fed to the model, in pixels"),
    ("crop_fraction", "fraction", True, "the centred crop covers this fraction of the image, before resizing"),
    ("interpolation", "interpolation", True, "resize filter: nearest, bilinear, bicubic or lanczos"),
    ("mean", "numbers per channel", True, "per channel, on pixel values 0..255: (x - mean) / std"),
    ("std", "positive numbers per channel", True, "per channel, the divisor above"),
    ("layout", "layout", True, "NCHW or NHWC: the order of the input's dimensions"),
    ("channels", "channels", False, "3 for RGB (default), 1 for grayscale"),
)

# ONNX's TensorProto.DataType numbers and the names model.json (and the
# plan, numpy) use for them; a table so that load() needs no onnx import.
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
    14: "complex64", 15: "complex128", 16: "bfloat16",
}
DTYPES = tuple(ONNX_DTYPES.values())
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")  # rust/vision's Interpolation
LAYOUTS = ("NCHW", "NHWC")  # rust/vision's Layout, spelt as serde reads it
CHANNELS = (1, 3)
DEFAULT_CHANNELS = 3
# NAME becomes file names, an SCons alias, `NAME.OPTION=` arguments (so no
# '.'), an unquoted argument of the compile's command line and a static
# library name for rustc (so no spaces, quotes or '-').
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
U32_MAX = 2**32 - 1  # rust/vision reads size as [u32; 2]


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _string(v):
    return isinstance(v, str) and v != ""


# kind: (what the error says is expected, check)
_KINDS = {
    "identifier": ("an identifier (letters, digits, '_'; not starting with a digit)",
                   lambda v: isinstance(v, str) and NAME_PATTERN.fullmatch(v) is not None),
    "path": ("a non-empty string (a path)", _string),
    "existing path": ("a non-empty string (a path)", _string),
    "string": ("a string", lambda v: isinstance(v, str)),
    "inputs": ("an object {input name: {shape, dtype}}", lambda v: isinstance(v, dict)),
    "input": ("an object {shape, dtype}", lambda v: isinstance(v, dict)),
    "names": ("a non-empty list of distinct non-empty strings",
              lambda v: isinstance(v, list) and v != [] and all(_string(x) for x in v)
              and len(set(v)) == len(v)),
    "preprocess": ("an object", lambda v: isinstance(v, dict)),
    "shape": ("a list of positive integers",
              lambda v: isinstance(v, list) and all(_is_int(d) and d > 0 for d in v)),
    "dtype": ("one of " + ", ".join(DTYPES), lambda v: v in DTYPES),
    "size": ("[width, height], two positive integers",
             lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(d) and 0 < d <= U32_MAX for d in v)),
    "fraction": ("a number above 0 and at most 1", lambda v: _is_number(v) and 0 < v <= 1),
    "interpolation": ("one of " + ", ".join(INTERPOLATIONS), lambda v: v in INTERPOLATIONS),
    "numbers per channel": ("a list of numbers", lambda v: isinstance(v, list) and all(_is_number(x) for x in v)),
    "positive numbers per channel": ("a list of positive numbers",
                                     lambda v: isinstance(v, list) and all(_is_number(x) and x > 0 for x in v)),
    "layout": ("one of " + ", ".join(LAYOUTS), lambda v: v in LAYOUTS),
    "channels": ("1 or 3", lambda v: _is_int(v) and v in CHANNELS),
}


def _shown(value, limit=60):
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _key(name):
    """A name from the file or the graph, as a message shows it: as is,
    unless it would break the line (then with JSON's escapes)."""
    return name if name.isprintable() else json.dumps(name)[1:-1]


def _quoted(name):
    return f"'{_key(name)}'"


class _Checker:
    def __init__(self, shown_as):
        self.file = shown_as

    def fail(self, where, problem):
        raise ModelJsonError(f"{self.file}: {where + ': ' if where else ''}{problem}")

    def object(self, obj, table, where):
        """Unknown keys first (a misspelt key is more likely than a missing
        one), then required keys, then each value's type."""
        known = [key for key, _, _, _ in table]
        for key in obj:
            if key not in known:
                self.fail(where, f"unknown key {_quoted(key)} (known: {', '.join(known)})")
        for key, kind, required, _ in table:
            if key not in obj:
                if required:
                    self.fail(where, f"missing required key {key!r}")
                continue
            self.value(obj[key], kind, f"{where}.{key}" if where else key)

    def value(self, value, kind, where):
        expected, ok = _KINDS[kind]
        if not ok(value):
            self.fail(where, f"expected {expected}, got {_shown(value)}")


class _Duplicate(ValueError):
    pass


def _reject_duplicates(pairs):
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise _Duplicate(f"duplicate key {_quoted(k)}")
    return dict(pairs)


def _reject_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def read(path, shown_as=None):
    """The parsed JSON of `path`, without checking it against the format."""
    shown_as = shown_as or path
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ModelJsonError(f"{shown_as}: cannot read model metadata ({e.strerror or e})")
    except ValueError as e:  # not UTF-8
        raise ModelJsonError(f"{shown_as}: model metadata is not valid JSON ({e})")
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except _Duplicate as e:
        raise ModelJsonError(f"{shown_as}: {e}")
    except ValueError as e:
        raise ModelJsonError(f"{shown_as}: model metadata is not valid JSON ({e})")


def load(path, shown_as=None, file_exists=None):
    """Reads and checks the model.json at `path`; returns its metadata.

    file_exists(name) says whether a file that model.json names (labels,
    relative to its directory) is there or will be built (default: a file
    of that name beside `path`). Errors name the file as `shown_as`
    (default: `path`). The ONNX file is not looked for: a build may make it.
    """
    shown_as = shown_as or path
    if file_exists is None:
        base = os.path.dirname(os.path.abspath(path))
        file_exists = lambda name: os.path.isfile(os.path.join(base, name))  # noqa: E731
    return check(read(path, shown_as), shown_as, file_exists)


def check(meta, shown_as, file_exists=lambda name: True):
    """Checks parsed metadata against the format (see load); returns it."""
    c = _Checker(shown_as)
    if not isinstance(meta, dict):
        c.fail("", f"expected a JSON object, got {_shown(meta)}")
    c.object(meta, TOP_KEYS, "")
    for name, spec in meta.get("inputs", {}).items():
        if name == "":
            c.fail("inputs", "an input name is empty")
        c.value(spec, "input", f"inputs.{_key(name)}")
        c.object(spec, INPUT_KEYS, f"inputs.{_key(name)}")
    if "labels" in meta and not file_exists(meta["labels"]):
        c.fail("labels", f"file not found: {_key(meta['labels'])} (relative to model.json's directory)")
    if "preprocess" in meta:
        _check_classifier(c, meta)
    return meta


def _check_classifier(c, meta):
    """With `preprocess`, rust/vision reads the model as an image classifier:
    one float32 input, which the preprocessed image fills exactly, outputs
    (the first is the logits) and labels. What it would reject when the
    module runs is rejected here."""
    p = meta["preprocess"]
    c.object(p, PREPROCESS_KEYS, "preprocess")
    channels = p.get("channels", DEFAULT_CHANNELS)
    for key in ("mean", "std"):
        if len(p[key]) != channels:
            c.fail(f"preprocess.{key}", f"expected {channels} values (one per channel), got {len(p[key])}")
    for key in ("inputs", "outputs", "labels"):
        if key not in meta:
            c.fail("", f"missing key {key!r}, which rust/vision needs with 'preprocess'")
    if len(meta["inputs"]) != 1:
        c.fail("inputs", f"expected one input with 'preprocess' (the image), got {len(meta['inputs'])}")
    (name, spec), = meta["inputs"].items()
    name = _key(name)
    if spec["dtype"] != "float32":
        c.fail(f"inputs.{name}.dtype", f"expected float32 with 'preprocess' (the image), got {_shown(spec['dtype'])}")
    width, height = p["size"]
    made = [1, channels, height, width] if p["layout"] == "NCHW" else [1, height, width, channels]
    if spec["shape"] != made:
        c.fail(f"inputs.{name}.shape",
               f"{spec['shape']} is not the image that preprocess makes, {made} "
               f"({p['layout']}, {channels} channels, size [width, height] {p['size']})")


# --- against the ONNX file (in the compile, which has onnx) ----------------------

def onnx_dims(value_info):
    """An ONNX graph input's dimensions: an int for a static dim, its
    dim_param name (or '?') for a dynamic one; None when the rank is unknown."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in t.shape.dim]


def _dims_text(dims):
    return "[" + ", ".join(str(d) for d in dims) + "]"


def shape_conflict(shape, dims):
    """Why `shape` cannot be the shape of an ONNX input with `dims` (see
    onnx_dims), or None: the rank and every static dim must agree; a
    dynamic dim takes any value."""
    if dims is None:
        return None
    if len(shape) != len(dims):
        return (f"{_dims_text(shape)} has rank {len(shape)}, "
                f"and the ONNX input has rank {len(dims)}: {_dims_text(dims)}")
    for axis, (given, fixed) in enumerate(zip(shape, dims)):
        if isinstance(fixed, int) and given != fixed:
            return (f"{_dims_text(shape)} contradicts the ONNX input's {_dims_text(dims)} "
                    f"(dim {axis} is {given}, the ONNX file fixes it at {fixed})")
    return None


def check_against_onnx(meta, model, path):
    """Checks checked metadata against the loaded ONNX ModelProto `model`:
    every name in `inputs` is a graph input that is not an initializer (a
    weight), with the same element type and a shape that agrees with every
    static dim; `outputs`, if given, are the graph's output names in order.
    Errors name `path` and the key."""
    c = _Checker(path)
    onnx_file = _key(meta["onnx"])
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    graph_inputs = {i.name: i for i in graph.input if i.name not in weights}
    for name, spec in meta.get("inputs", {}).items():
        where = f"inputs.{_key(name)}"
        if name in weights:
            c.fail(where, f"{_quoted(name)} is a weight (an initializer) of {onnx_file}, not an input")
        if name not in graph_inputs:
            c.fail(where, f"{onnx_file} has no input {_quoted(name)} "
                          f"(its inputs: {', '.join(map(_key, graph_inputs)) or 'none'})")
        vi = graph_inputs[name]
        if vi.type.WhichOneof("value") != "tensor_type":
            c.fail(where, f"{onnx_file}'s input {_quoted(name)} is not a tensor")
        elem = vi.type.tensor_type.elem_type
        onnx_dtype = ONNX_DTYPES.get(elem, f"ONNX element type {elem}")
        if spec["dtype"] != onnx_dtype:
            c.fail(f"{where}.dtype", f"{_shown(spec['dtype'])}, but {onnx_file}'s input {_quoted(name)} is {onnx_dtype}")
        conflict = shape_conflict(spec["shape"], onnx_dims(vi))
        if conflict:
            c.fail(f"{where}.shape", conflict)
    if "outputs" in meta:
        names = [o.name for o in graph.output]
        if meta["outputs"] != names:
            c.fail("outputs", f"{_shown(meta['outputs'])}, but {onnx_file}'s outputs are {_shown(names)} "
                              "(the same names, in the same order)")
