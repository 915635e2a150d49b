"""One build at a time in a tree.

Two scons processes in the same top directory would share .sconsign.dblite
and the plugin's staging files (`<artifact>.tmp`): one could rename away or
delete what the other is writing. The first build to start holds an
exclusive lock on `.scons.lock` beside the SConstruct until it exits; a
second one says it is waiting, waits, and then finds up to date whatever
the first built. A crashed or killed build's lock goes with its process.
"""

import fcntl
import os
import sys

LOCK_FILE = ".scons.lock"
_held = {}  # top directory -> open lock file


def hold(top_dir):
    """Takes the lock of `top_dir`, waiting for another build to finish."""
    if top_dir in _held:
        return
    lock = open(os.path.join(top_dir, LOCK_FILE), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"scons: another build is running in {top_dir}; waiting for it to finish",
              file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    _held[top_dir] = lock


def release(target=None, source=None, env=None):
    """Lets other builds start: for an action that runs on after the build
    (`scons serve`). Takes an SCons action's arguments, returns success."""
    for top_dir in list(_held):
        _held.pop(top_dir).close()
    return 0
