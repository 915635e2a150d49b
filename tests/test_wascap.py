"""The build signs the actor as wascap does, checked here with code of its
own (section walking, base32, CRC-16, JWT parsing), not wascc.wascap's:
an Ed25519 signature by the account over the token, the module's hash, the
claims, and keys that stay secret."""

import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from conftest import REPO


def leb128(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def sections(wasm):
    """[(name or None, raw section bytes, payload)] in order."""
    assert wasm[:8] == b"\0asm\x01\0\0\0"
    out, pos = [], 8
    while pos < len(wasm):
        size, body = leb128(wasm, pos + 1)
        name, payload = None, None
        if wasm[pos] == 0:
            length, at = leb128(wasm, body)
            name, payload = wasm[at:at + length].decode(), wasm[at + length:body + size]
        out.append((name, wasm[pos:body + size], payload))
        pos = body + size
    return out


def crc16_xmodem(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def nkey_bytes(text):
    raw = base64.b32decode(text + "=" * (-len(text) % 8))
    assert int.from_bytes(raw[-2:], "little") == crc16_xmodem(raw[:-2]), f"bad CRC in {text[:4]}..."
    return raw[:-2]


def public_key(text, first_letter):
    assert text[0] == first_letter and len(text) == 56
    raw = nkey_bytes(text)
    return Ed25519PublicKey.from_public_bytes(raw[1:])


def seed_to_public_bytes(seed):
    raw = nkey_bytes(seed)
    return Ed25519PrivateKey.from_private_bytes(raw[2:]).public_key().public_bytes_raw()


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_of(wasm):
    jwts = [(i, payload) for i, (name, _, payload) in enumerate(sections(wasm)) if name == "jwt"]
    assert len(jwts) == 1, "exactly one jwt section"
    index, payload = jwts[0]
    assert index == len(sections(wasm)) - 1, "the jwt section comes last"
    return payload.decode()


def test_signature_verifies_with_the_account_key(actor, actor_keys):
    token = token_of(actor.read_bytes())
    header, claims, signature = token.split(".")
    assert json.loads(b64url(header)) == {"typ": "jwt", "alg": "Ed25519"}
    claims_json = json.loads(b64url(claims))
    issuer = public_key(claims_json["iss"], "A")
    issuer.verify(b64url(signature), f"{header}.{claims}".encode())  # raises if wrong
    assert issuer.public_bytes_raw() == seed_to_public_bytes(actor_keys["WASCC_ACCOUNT_SEED"])
    assert public_key(claims_json["sub"], "M").public_bytes_raw() == \
        seed_to_public_bytes(actor_keys["WASCC_MODULE_SEED"])
    with pytest.raises(InvalidSignature):
        issuer.verify(b64url(signature), f"{header}.{claims}x".encode())


def test_hash_is_the_module_without_its_jwt_section(actor):
    wasm = actor.read_bytes()
    claims = json.loads(b64url(token_of(wasm).split(".")[1]))
    unsigned = wasm[:8] + b"".join(raw for name, raw, _ in sections(wasm) if name != "jwt")
    assert claims["wascap"]["hash"] == hashlib.sha256(unsigned).hexdigest().upper()
    # ... which is the module cargo built, byte for byte
    assert unsigned == (actor.parent / "classify_actor.unsigned.wasm").read_bytes()


def test_claims(actor):
    claims = json.loads(b64url(token_of(actor.read_bytes()).split(".")[1]))
    assert claims["wascap"]["caps"] == ["wascc:http_server"]
    assert claims["wascap"]["name"] == "classify"
    assert claims["wascap"]["rev"] == 1 and claims["wascap"]["ver"] == "0.1.0"
    assert claims["wascap"]["prov"] is False
    assert isinstance(claims["iat"], int) and claims["jti"]
    assert "exp" not in claims  # a build does not expire


def test_keys_are_generated_once_outside_the_build_tree_and_never_shown(tmp_path, checkout,
                                                                      cargo_target_dir):
    """Without seeds in the environment, the build generates keys in the
    keys dir (mode 0600, in a directory only the user can enter), reuses
    them, and never prints or stores a seed."""
    keys = tmp_path / "keys"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASCC_")}
    cmd = [sys.executable, "-m", "SCons", "wascc", f"WASCC_KEYS_DIR={keys}",
           f"CARGO_TARGET_DIR={cargo_target_dir}"]
    first = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=True)
    seeds = {n: (keys / n).read_text().strip() for n in ("account.nk", "module.nk")}
    assert seeds["account.nk"].startswith("SA") and seeds["module.nk"].startswith("SM")
    assert all((keys / n).stat().st_mode & 0o077 == 0 for n in seeds)
    assert keys.stat().st_mode & 0o777 == 0o700, oct(keys.stat().st_mode)
    actor = checkout / "build" / "wascc" / "classify_actor.wasm"
    claims = json.loads(b64url(token_of(actor.read_bytes()).split(".")[1]))
    assert public_key(claims["iss"], "A").public_bytes_raw() == seed_to_public_bytes(seeds["account.nk"])

    again = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=True)
    assert "Signing" not in again.stdout, "same keys, same module: nothing to sign"
    assert {n: (keys / n).read_text().strip() for n in seeds} == seeds

    # -n: what `scons -c` would remove, without removing the shared builds
    cleaned = subprocess.run(cmd + ["-c", "-n"], cwd=checkout, env=env, capture_output=True, text=True,
                             check=True)
    assert "classify_actor.wasm" in cleaned.stdout and str(keys) not in cleaned.stdout, "-c keeps the keys"
    stored = [*(checkout / "build" / "wascc").iterdir(), *checkout.glob(".sconsign*")]
    for seed in seeds.values():
        for out in (first, again, cleaned):
            assert seed not in out.stdout + out.stderr
        for path in stored:
            assert seed.encode() not in path.read_bytes(), f"{path} holds a seed"
    ignored = subprocess.run(["git", "check-ignore", "-q", "keys/account.nk"], cwd=REPO)
    assert ignored.returncode == 0, "the default keys dir is ignored by git"


def test_a_malformed_key_file_beside_a_missing_one_is_one_line(tmp_path, checkout, cargo_target_dir):
    """The build makes the missing key and must read the other: a damaged
    one stops it with a line naming the keys dir, not a traceback, and no
    actor is signed."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    (keys / "account.nk").write_text("not a seed\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WASCC_")}
    out = subprocess.run([sys.executable, "-m", "SCons", "wascc", f"WASCC_KEYS_DIR={keys}",
                          f"CARGO_TARGET_DIR={cargo_target_dir}"],
                         cwd=checkout, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert f"error: signing keys in {keys}" in out.stdout, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert "Signing" not in out.stdout
