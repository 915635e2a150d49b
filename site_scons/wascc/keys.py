"""Where the seeds that sign waSCC actors are kept, for the build that signs
and the host that checks alike: the environment variables that give them,
and the key files of a keys directory.

Standard library only, so that the SCons tool names the key files without
loading the signing libraries; the seeds are read by wascc.wascap.load_key.
"""
import os

# the seed of each kind of key ("SA...", "SM..."), when the environment gives it
SEED_ENV = {"account": "WASCC_ACCOUNT_SEED", "module": "WASCC_MODULE_SEED"}
KINDS = tuple(SEED_ENV)  # ("account", "module")


def key_file(keys_dir, kind):
    """The file of keys_dir that holds the seed of `kind`: account.nk or module.nk."""
    if kind not in SEED_ENV:
        raise ValueError(f"kind must be one of {list(KINDS)}")
    return os.path.join(keys_dir, f"{kind}.nk")
