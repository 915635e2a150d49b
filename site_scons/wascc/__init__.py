"""waSCC actors beside the build, in a package of its own that depends on
no part of the SCons plugin (`wasmml`, whose `wascap_sign` tool signs with it).

    wascc.wascap        signs and verifies actors as wascap does: nkeys, the
                        `jwt` custom section, the token and its claims
    wascc.keys          where the seeds are kept: $WASCC_ACCOUNT_SEED,
                        $WASCC_MODULE_SEED, keys/account.nk, keys/module.nk
    wascc.host          a waSCC host: serves a signed actor over HTTP
                        (`python -m wascc.host ACTOR.wasm`)
    wascc.module_cache  the host's cache of compiled wasm modules
    wascc.leb128        the LEB128 integers of the WebAssembly binary format

Importing it imports nothing.
"""
