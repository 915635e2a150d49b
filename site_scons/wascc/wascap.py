"""waSCC actor signing (wascap): nkeys, the `jwt` custom section, verification.

What a waSCC 0.6/0.7 host accepts (see docs/design.md, "The waSCC actor"):
  - a JWT, `{"typ":"jwt","alg":"Ed25519"}`, in a custom section named `jwt`
    at the end of the module, signed by the account (issuer) key;
  - claims `iss` (account, "A..."), `sub` (module, "M..."), `iat`, `jti`,
    optional `exp`/`nbf`, and `wascap`: hash, name, caps, tags, rev, ver, prov;
  - `hash`: upper-case hex SHA-256 of the module without its `jwt` section.

Keys are nkeys: base32 (no padding) of prefix + 32-byte Ed25519 key + CRC-16
(XMODEM, little-endian). The libraries: `cryptography` for Ed25519, PyJWT for
the token, the standard library for base32 and the CRC.
"""
import base64
import binascii
import hashlib
import json
import os
import time

import jwt
import jwt.algorithms
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from wascc.keys import KINDS, SEED_ENV, key_file
from wascc.leb128 import read_uleb, uleb

SECTION = "jwt"
# wasmCloud's later tools write this name; hosts still read `jwt`. Both are
# dropped before hashing so a module never carries two tokens.
SECTIONS_IGNORED_BY_HASH = {"jwt", "wasmcloud_jwt"}

_SEED_PREFIX = 18 << 3
_KINDS = {"account": 0, "module": 12 << 3}  # base32 "A...", "M..."
_PREFIX_KIND = {v: k for k, v in _KINDS.items()}


class WascapError(Exception):
    """A key, token or module that is not what wascap expects (one line)."""


# ---------------------------------------------------------------- nkeys

def _crc16(data):
    return binascii.crc_hqx(data, 0).to_bytes(2, "little")  # CRC-16/XMODEM


def _encode(raw):
    return base64.b32encode(raw + _crc16(raw)).decode().rstrip("=")


def _decode(text, what):
    try:
        text = text.strip()
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError, AttributeError):
        raise WascapError(f"{what} is not a base32 nkey") from None
    body, crc = raw[:-2], raw[-2:]
    if len(raw) < 3 or _crc16(body) != crc:
        raise WascapError(f"{what} has a bad checksum")
    return body


def decode_public_key(text, kind):
    """The Ed25519 public key of an "A..." (account) or "M..." (module) nkey."""
    body = _decode(text, f"{kind} key {text[:8]}...")
    if len(body) != 33 or _PREFIX_KIND.get(body[0]) != kind:
        raise WascapError(f"{text[:8]}... is not {_article(kind)} {kind} public key")
    return Ed25519PublicKey.from_public_bytes(body[1:])


class KeyPair:
    """An account or module nkey pair. `seed` is secret: never print it."""

    def __init__(self, kind, private_key):
        self.kind = kind
        self._private = private_key

    @classmethod
    def generate(cls, kind):
        _check_kind(kind)
        return cls(kind, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed):
        body = _decode(seed, "seed")
        if len(body) != 34 or body[0] & 0xF8 != _SEED_PREFIX:
            raise WascapError("not an nkey seed (S...)")
        prefix = ((body[0] & 7) << 5) | (body[1] >> 3)
        if prefix not in _PREFIX_KIND:
            raise WascapError("seed is neither an account (SA...) nor a module (SM...) seed")
        return cls(_PREFIX_KIND[prefix], Ed25519PrivateKey.from_private_bytes(body[2:]))

    @property
    def public_key(self):
        raw = self._private.public_key().public_bytes_raw()
        return _encode(bytes([_KINDS[self.kind]]) + raw)

    @property
    def seed(self):
        prefix = _KINDS[self.kind]
        head = bytes([_SEED_PREFIX | prefix >> 5, (prefix & 31) << 3])
        return _encode(head + self._private.private_bytes_raw())

    def __repr__(self):  # no seed in tracebacks or logs
        return f"KeyPair({self.kind}, {self.public_key})"


def _article(kind):
    return "an" if kind == "account" else "a"


def _check_kind(kind):
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}")


def load_keys(keys_dir, environ=os.environ):
    """(account, module) key pairs, each as load_key loads it: key files
    missing from keys_dir are created."""
    return tuple(load_key(kind, keys_dir, environ) for kind in KINDS)


def load_key(kind, keys_dir, environ=os.environ, *, create=True):
    """The key pair of `kind` ("account" or "module"): from its variable
    ($WASCC_ACCOUNT_SEED, $WASCC_MODULE_SEED) when set, else from its key
    file in keys_dir (wascc.keys.key_file). A missing key file is created
    when `create` (mode 0600, in a directory only the user can read), else
    FileNotFoundError. A malformed seed, or one of the other kind, is a
    WascapError that says where it came from. The one loader of seeds, for
    the build that signs (load_keys) and the host that checks."""
    name = SEED_ENV[kind]
    if environ.get(name):
        where = f"${name}"
        pair = _from_seed(environ[name], where)
    else:
        where = key_file(keys_dir, kind)
        pair = _read_or_create_seed(kind, where) if create else _read_seed(where)
    if pair.kind != kind:
        raise WascapError(f"{where} holds {_article(pair.kind)} {pair.kind} seed, not "
                          f"{_article(kind)} {kind} seed")
    return pair


def _from_seed(seed, where):
    try:
        return KeyPair.from_seed(seed)
    except WascapError as e:
        raise WascapError(f"{where}: {e}") from None


def _read_seed(path):
    with open(path) as f:
        return _from_seed(f.read(), path)


def _read_or_create_seed(kind, path):
    try:
        return _read_seed(path)
    except FileNotFoundError:
        pass
    pair = KeyPair.generate(kind)
    keys_dir = os.path.dirname(path) or "."
    os.makedirs(keys_dir, mode=0o700, exist_ok=True)
    key_files = {os.path.basename(key_file(keys_dir, k)) for k in KINDS}
    if set(os.listdir(keys_dir)) <= key_files:  # a directory of keys only
        os.chmod(keys_dir, 0o700)  # SCons made it 0755 before the action ran
    # O_EXCL: two builds creating keys at once must not overwrite each other
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_or_create_seed(kind, path)
    with os.fdopen(fd, "w") as f:
        f.write(pair.seed + "\n")
    return pair


# ------------------------------------------------------ module sections

def _read_leb128(data, pos):
    try:
        return read_uleb(data, pos)
    except ValueError:
        raise WascapError("malformed section header") from None


def _sections(wasm):
    """(id, custom name or None, start, end) of each section, in order."""
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise WascapError("not a WebAssembly module")
    pos = 8
    while pos < len(wasm):
        start, kind = pos, wasm[pos]
        size, body = _read_leb128(wasm, pos + 1)
        end = body + size
        if end > len(wasm):
            raise WascapError("truncated module")
        name = None
        if kind == 0:
            length, name_at = _read_leb128(wasm, body)
            name = wasm[name_at:name_at + length].decode("utf-8", "replace")
        yield kind, name, start, end, body
        pos = end


def strip_token(wasm):
    """The module without its token sections: what `hash` is computed over."""
    return b"".join([wasm[:8]] + [wasm[start:end] for _, name, start, end, _ in _sections(wasm)
                                  if name not in SECTIONS_IGNORED_BY_HASH])


def module_hash(wasm):
    return hashlib.sha256(strip_token(wasm)).hexdigest().upper()


def read_token(wasm):
    """The JWT of the last `jwt` section, or None if the module is unsigned."""
    token = None
    for _, name, _, end, body in _sections(wasm):
        if name == SECTION:
            length, name_at = _read_leb128(wasm, body)
            token = wasm[name_at + length:end].decode("ascii", "replace")
    return token


def custom_section(name, payload):
    name = name.encode()
    content = uleb(len(name)) + name + payload
    return b"\0" + uleb(len(content)) + content


# --------------------------------------------------------------- tokens

class _Ed25519(jwt.algorithms.OKPAlgorithm):
    """PyJWT's EdDSA, under the name wascap writes in the header."""


_JWS = jwt.PyJWS(algorithms=[])
_JWS.register_algorithm("Ed25519", _Ed25519())


def sign_actor(wasm, account, module, *, name, caps, rev=0, ver="0.1.0", tags=(),
               iat=None, expires=None, not_before=None):
    """`wasm` (any earlier token removed) with a token appended that
    `account` issued for `module`. Times are Unix seconds; `iat` defaults to
    $SOURCE_DATE_EPOCH, else now, so a build can be made reproducible."""
    if account.kind != "account" or module.kind != "module":
        raise WascapError("sign_actor needs an account key and a module key")
    if isinstance(caps, str):  # list() would make each letter a capability
        raise WascapError(f"caps must be a list of capability ids, not the string {caps!r}")
    stripped = strip_token(wasm)
    digest = hashlib.sha256(stripped).hexdigest().upper()
    if iat is None:
        iat = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    claims = {
        # deterministic: the same module, key and time give the same token
        "jti": hashlib.sha256(f"{digest}:{module.public_key}:{iat}".encode()).hexdigest()[:22],
        "iat": int(iat),
        "iss": account.public_key,
        "sub": module.public_key,
        "wascap": {"hash": digest, "name": name, "tags": list(tags), "caps": list(caps),
                   "rev": int(rev), "ver": str(ver), "prov": False},
    }
    if expires is not None:
        claims["exp"] = int(expires)
    if not_before is not None:
        claims["nbf"] = int(not_before)
    payload = json.dumps(claims, separators=(",", ":")).encode()
    token = _JWS.encode(payload, account._private, algorithm="Ed25519", headers={"typ": "jwt"})
    return stripped + custom_section(SECTION, token.encode())


def verify_actor(wasm, *, trusted_issuers=None, required_caps=(), now=None):
    """The claims of a signed actor, after checking everything a host must:
    token present, signature by `iss`, `iss` trusted (if a list is given),
    `sub` a module key, module hash, `nbf`/`exp`, and required caps."""
    token = read_token(wasm)
    if token is None:
        raise WascapError("the actor is not signed (no `jwt` section)")
    claims = _unverified_claims(token)
    issuer = claims.get("iss", "")
    try:
        _JWS.decode(token, decode_public_key(issuer, "account"), algorithms=["Ed25519"])
    except jwt.InvalidSignatureError:
        raise WascapError(f"the token's signature does not verify with its issuer {issuer}") from None
    except jwt.PyJWTError as e:
        raise WascapError(f"malformed token: {e}") from None
    if trusted_issuers is not None and issuer not in trusted_issuers:
        raise WascapError(f"issuer {issuer} is not a trusted account")
    decode_public_key(claims.get("sub", ""), "module")
    _check_times(claims, time.time() if now is None else now)
    meta = claims.get("wascap")
    if not isinstance(meta, dict):
        raise WascapError("the token has no `wascap` claims")
    if meta.get("hash") != module_hash(wasm):
        raise WascapError("the module's hash does not match its token: the module was changed after signing")
    caps = meta.get("caps", [])
    if not (isinstance(caps, list) and all(isinstance(c, str) for c in caps)):
        raise WascapError(f"the token's `caps` claim is not a list of strings: {caps!r}")
    missing = [c for c in required_caps if c not in caps]
    if missing:
        raise WascapError(f"the actor is not signed for capability {', '.join(missing)}")
    return claims


def _unverified_claims(token):
    try:
        claims = json.loads(_JWS.decode_complete(token, options={"verify_signature": False})["payload"])
    except (jwt.PyJWTError, ValueError) as e:
        raise WascapError(f"malformed token: {e}") from None
    if not isinstance(claims, dict):
        raise WascapError("malformed token: claims are not an object")
    return claims


def _check_times(claims, now):
    for field in ("iat", "exp", "nbf"):
        if field in claims and not isinstance(claims[field], int):
            raise WascapError(f"malformed token: `{field}` is not a number")
    if "exp" in claims and now >= claims["exp"]:
        raise WascapError(f"the token expired at {_utc(claims['exp'])}")
    if "nbf" in claims and now < claims["nbf"]:
        raise WascapError(f"the token is not valid before {_utc(claims['nbf'])}")


def _utc(seconds):
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))
