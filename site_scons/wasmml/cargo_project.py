"""What cargo reads and where it takes crates from, for the `cargo_wasm`
tool and `python -m wasmml.lockfile`; no SCons import.

A user crate depends on the plugin's own crates by version
(`model-runtime = "0.1"`, `model-embed = "0.1"`); cargo is told where they
are with `[patch.crates-io]` entries on its command line, so no manifest
holds a path into the plugin's installation.
"""

import functools
import hashlib
import json
import os
import socket
import tomllib

import wasmml
from wasmml import staging, toolchain

# The plugin's crates: name -> directory under wasmml.crates_dir()
PLUGIN_CRATES = {"model-runtime": "runtime", "model-embed": "embed"}
REGISTRIES = ("auto", "debian", "default")
DEPENDENCY_TABLES = ("dependencies", "build-dependencies", "dev-dependencies")
CRATES_IO_INDEX = ("index.crates.io", 443)


class CrateError(Exception):
    """A crate that cargo could not build as given; the message names the file."""


def read_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise CrateError(f"{path}: cannot read ({e.strerror})")
    except tomllib.TOMLDecodeError as e:
        raise CrateError(f"{path}: invalid TOML ({e})")


def workspace_root(crate_dir):
    """The nearest directory at or above the crate whose Cargo.toml has
    [workspace], or None."""
    d = os.path.abspath(crate_dir)
    while True:
        manifest = os.path.join(d, "Cargo.toml")
        if os.path.isfile(manifest) and "workspace" in read_toml(manifest):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def _dependency_specs(data):
    """(name, spec) of every dependency a manifest declares, in any table,
    target-specific ones included."""
    tables = [data] + list(data.get("target", {}).values())
    for table in tables:
        for kind in DEPENDENCY_TABLES:
            for name, spec in table.get(kind, {}).items():
                yield spec.get("package", name) if isinstance(spec, dict) else name, spec


def _path_dependencies(manifest, data, workspace_deps):
    crate_dir = os.path.dirname(manifest)
    for name, spec in _dependency_specs(data):
        if not isinstance(spec, dict):
            continue
        base = crate_dir
        if spec.get("workspace"):
            spec = workspace_deps.get(name, {})
            base = spec.get("_root")
        if "path" in spec:
            yield os.path.normpath(os.path.join(base, spec["path"]))


def _registry_uses(data, workspace_deps):
    """Names of the plugin's crates that a manifest takes by version."""
    for name, spec in _dependency_specs(data):
        if isinstance(spec, dict) and spec.get("workspace"):
            spec = workspace_deps.get(name, {})
        if name in PLUGIN_CRATES and not (isinstance(spec, dict) and ("path" in spec or "git" in spec)):
            yield name


def _crate_files(crate_dir):
    files = [os.path.join(crate_dir, "Cargo.toml")]
    build_rs = os.path.join(crate_dir, "build.rs")
    if os.path.isfile(build_rs):
        files.append(build_rs)
    for root, dirs, names in os.walk(os.path.join(crate_dir, "src")):
        dirs.sort()
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith((".rs", ".s"))]
    return files


class Crate:
    """A crate as cargo sees it: every file it reads (`inputs`: manifests,
    Cargo.lock, build scripts and sources of the crate, of its path
    dependencies, of the workspace root and of the plugin crates it takes),
    and which plugin crates need a patch (`patched`)."""

    def __init__(self, crate_dir):
        self.dir = os.path.abspath(crate_dir)
        self.root = workspace_root(self.dir)
        # the workspace's Cargo.lock, or the crate's own
        self.lock = os.path.join(self.root or self.dir, "Cargo.lock")
        self.patched = set()
        self.manifests = {}  # crate directory -> its parsed Cargo.toml
        self.inputs = self._scan()
        self.default_bin = self._default_bin(self.manifests[self.dir])

    def _default_bin(self, data):
        """The binary cargo builds when there is one: the only [[bin]], else
        the package's name (cargo's own default)."""
        bins = [b.get("name") for b in data.get("bin", []) if isinstance(b, dict)]
        if len(bins) == 1 and bins[0]:
            return bins[0]
        return data.get("package", {}).get("name") or os.path.basename(self.dir)

    def _scan(self):
        workspace_deps, files = {}, []
        if self.root:
            root_manifest = os.path.join(self.root, "Cargo.toml")
            files.append(root_manifest)
            workspace = read_toml(root_manifest)["workspace"]
            for name, spec in workspace.get("dependencies", {}).items():
                workspace_deps[name] = dict(spec, _root=self.root) if isinstance(spec, dict) else {}
        if os.path.isfile(self.lock):
            files.append(self.lock)
        pending, seen = [self.dir], set()
        while pending:
            d = pending.pop()
            if d in seen:
                continue
            seen.add(d)
            manifest = os.path.join(d, "Cargo.toml")
            if not os.path.isfile(manifest):
                raise CrateError(f"{manifest}: crate manifest not found")
            data = self.manifests[d] = read_toml(manifest)
            files += _crate_files(d)
            pending += _path_dependencies(manifest, data, workspace_deps)
            for name in _registry_uses(data, workspace_deps):
                if name not in self.patched:
                    self.patched.add(name)
                    pending.append(plugin_crate_dir(name))
        return sorted(set(files))


def plugin_crate_dir(name):
    return os.path.join(wasmml.crates_dir(), PLUGIN_CRATES[name])


# --- registries ------------------------------------------------------------------

def _registry_configured():
    """Whether the user's cargo configuration replaces crates.io (a mirror
    or vendored sources): then that is the registry they normally use."""
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    for name in ("config.toml", "config"):
        try:
            with open(os.path.join(home, name), "rb") as f:
                if tomllib.load(f).get("source", {}).get("crates-io", {}).get("replace-with"):
                    return True
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return False


def _crates_io_reachable():
    try:
        socket.create_connection(CRATES_IO_INDEX, timeout=3).close()
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def choose_registry(setting):
    """(registry, why) for CARGO_REGISTRY=setting: "debian" (Debian's
    offline crate sources) or "default" (what the user's cargo uses).
    "auto" takes Debian's only when it is installed and crates.io cannot be
    reached: a user's crates then still resolve, offline."""
    if setting not in REGISTRIES:
        raise CrateError(f"CARGO_REGISTRY={setting!r}: expected one of {', '.join(REGISTRIES)}")
    debian = toolchain.offline_registry()
    if setting == "debian":
        if not debian:
            raise CrateError(f"CARGO_REGISTRY=debian: {toolchain.DEBIAN_REGISTRY} is not installed "
                             "(Debian's librust-*-dev packages put crates there)")
        return "debian", f"Debian's crate sources in {debian}, as asked"
    if setting == "default":
        return "default", "cargo's own configuration, as asked"
    if debian and not _registry_configured() and not _crates_io_reachable():
        return "debian", f"Debian's crate sources in {debian} (crates.io unreachable)"
    return "default", "cargo's own configuration"


def lock_hint(crate_dir, registry_setting="auto"):
    """The one command that creates a missing Cargo.lock for the crate."""
    return (f"python3 -m wasmml.lockfile {os.path.relpath(crate_dir)}"
            + (f" --registry {registry_setting}" if registry_setting != "auto" else ""))


def config_file(crate, registry, directory):
    """Writes the cargo configuration that builds `crate` from `registry`
    (the plugin crates' patches, Debian's source replacement) into
    directory, named by its content, and returns its path; None if cargo
    needs none. A file, not --config KEY=VALUE flags: paths then need no
    shell quoting."""
    lines = []
    if crate.patched:
        lines.append("[patch.crates-io]")
        lines += [f"{name} = {{ path = {json.dumps(plugin_crate_dir(name))} }}"
                  for name in sorted(crate.patched)]
    if registry == "debian":
        with open(toolchain.OFFLINE_CONFIG) as f:
            lines.append(f.read())
    if not lines:
        return None
    text = "\n".join(lines) + "\n"
    path = os.path.join(directory, f"cargo-{hashlib.sha256(text.encode()).hexdigest()[:12]}.toml")
    if not os.path.isfile(path):
        os.makedirs(directory, exist_ok=True)
        staging.write_into_place(path, text.encode())
    return path
