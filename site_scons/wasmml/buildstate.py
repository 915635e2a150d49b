"""SCons's record of what it built (.sconsign.dblite), when it cannot be saved.

At the end of a build SCons writes the record to a staging file and renames
it into place, so a full disk keeps the previous record whole; but SCons
reports the failure as a Python traceback, twice. Here it is one line and
exit status 2. The next build then trusts only what the previous record
says, and redoes what this one built.
"""

import os
import sys

_installed = []


def guard_saving():
    """Makes a failure to save the record one line (once per process)."""
    import SCons.SConsign

    if _installed:
        return
    save = SCons.SConsign.write

    def write():
        try:
            save()
        except OSError as e:
            _forget_unsaved(SCons.SConsign.DB_sync_list)
            where = e.filename or _record_file(SCons.SConsign)
            print(f"scons: *** cannot save the build's record {where}: {e.strerror}; "
                  "the next build redoes what this one did", file=sys.stderr, flush=True)
            raise SystemExit(2)

    SCons.SConsign.write = write
    _installed.append(save)


def _record_file(sconsign):
    for db in sconsign.DB_sync_list:
        if getattr(db, "_file_name", None):
            return os.path.abspath(db._file_name)
    return sconsign.DB_Name


def _forget_unsaved(databases):
    """The databases would retry when collected, and fail again with a
    traceback: mark them saved, and remove their staging files."""
    for db in databases:
        if hasattr(db, "_needs_sync"):
            db._needs_sync = False
        tmp = getattr(db, "_tmp_name", None)
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
