"""SCons tool `wascap_sign`: signs a waSCC actor, as `wascap sign` does.

Builder `WascapSign(target_wasm, unsigned_wasm, ACTOR_NAME=..., ACTOR_CAPS=[...])`
writes the module with a `jwt` custom section: a token that the account key
issued for the module key, with the module's hash and the actor's claims
(the package wascc beside the plugin signs: see wascc/wascap.py).

Keys are nkey seeds, secrets that never enter the build tree, the build
cache or the log:
  - from $WASCC_ACCOUNT_SEED and $WASCC_MODULE_SEED when both are set;
  - else from $WASCC_KEYS_DIR/{account,module}.nk (default #keys, which git
    ignores), generated there on first use. The key files are targets that
    are never cleaned and never cached.
The signature depends on the keys (the files' contents, or a hash of the
seeds), so new keys re-sign; the seeds themselves are never in a signature.

Construction variables:
    ACTOR_NAME, ACTOR_CAPS, ACTOR_REV, ACTOR_VER, ACTOR_TAGS   the claims
    WASCC_KEYS_DIR     where generated keys live (default #keys)
    WASCAPCOMSTR       what the build prints

The signing libraries (cryptography, PyJWT) are imported only when an
actor is signed, never on a no-op build.
"""
import hashlib
import os

import SCons.Action
import SCons.Builder

from wascc import keys  # the key files' names; standard library only
from wasmml import staging


def _seeds_from_environment():
    """{variable: seed} when the environment gives both seeds, else None."""
    seeds = {name: os.environ.get(name, "") for name in keys.SEED_ENV.values()}
    return seeds if all(seeds.values()) else None


def _sign(target, source, env):
    from wascc import wascap  # heavy: only when something is signed

    try:
        account, module = wascap.load_keys(env.Dir("$WASCC_KEYS_DIR").abspath,
                                           _seeds_from_environment() or {})
        with open(source[0].abspath, "rb") as f:
            signed = wascap.sign_actor(
                f.read(), account, module, name=env.subst("$ACTOR_NAME"),
                caps=env["ACTOR_CAPS"], rev=env["ACTOR_REV"], ver=env.subst("$ACTOR_VER"),
                tags=env["ACTOR_TAGS"])
    except wascap.WascapError as e:
        print(f"error: signing {target[0]}: {e}", flush=True)
        return 1
    staging.write_into_place(target[0].abspath, signed)  # never a half-written actor
    if not env.GetOption("silent"):
        print(f"  {target[0].name}: issuer {account.public_key[:12]}..., module {module.public_key[:12]}...",
              flush=True)
    return 0


def _make_keys(target, source, env):
    from wascc import wascap

    try:
        wascap.load_keys(target[0].dir.abspath, environ={})  # creates what is missing
    except wascap.WascapError as e:  # the other key file is there but unreadable
        print(f"error: signing keys in {target[0].dir}: {e}", flush=True)
        return 1
    return 0


def _key_sources(env):
    """What the signature depends on: the key files (built if missing), or a
    digest of the seeds given in the environment."""
    seeds = _seeds_from_environment()
    if seeds:  # account's, then module's
        digest = hashlib.sha256("\n".join(seeds.values()).encode()).hexdigest()
        return [env.Value(f"keys from environment, sha256 {digest}")]
    keys_dir = env.Dir("$WASCC_KEYS_DIR").abspath
    files = env._WascapKeys([env.File(keys.key_file(keys_dir, kind)) for kind in keys.KINDS], [])
    env.NoCache(files)    # secrets never go into a shared CacheDir
    env.NoClean(files)    # `scons -c` must not forget who signed
    env.Precious(files)
    return files


def _wascap_sign(env, target, source, **overrides):
    """Pseudo-builder: see the module docstring."""
    return env._WascapSign(target, env.arg2nodes(source) + _key_sources(env), **overrides)


def generate(env):
    env.SetDefault(
        ACTOR_NAME="actor",
        ACTOR_CAPS=["wascc:http_server"],
        ACTOR_REV=0,
        ACTOR_VER="0.1.0",
        ACTOR_TAGS=[],
        WASCC_KEYS_DIR="#keys",
        WASCAPCOMSTR="Signing ${TARGET.file} (waSCC actor ${ACTOR_NAME}, caps ${', '.join(ACTOR_CAPS)})",
        WASCAPKEYSCOMSTR="Generating signing keys in ${TARGET.dir}",
    )
    env["BUILDERS"]["_WascapSign"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_sign, "$WASCAPCOMSTR",
                                   varlist=["ACTOR_NAME", "ACTOR_CAPS", "ACTOR_REV", "ACTOR_VER", "ACTOR_TAGS"]),
        single_source=False)
    env["BUILDERS"]["_WascapKeys"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_make_keys, "$WASCAPKEYSCOMSTR"))
    env.AddMethod(_wascap_sign, "WascapSign")


def exists(env):
    return True
