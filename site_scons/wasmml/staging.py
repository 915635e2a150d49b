"""Artifacts are written beside their final name and renamed into place.

A build killed, or stopped by a full disk, while it writes then leaves no
half-written file under an artifact's name, so nothing partial is ever
taken as up to date; and it leaves no staging file either.
"""

import contextlib
import os
import shutil


def copy_into_place(source, final):
    """Copies the file `source` to `final`."""
    _into_place(final, lambda tmp: shutil.copyfile(source, tmp))


def write_into_place(final, data):
    """Writes the bytes `data` to `final`."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
    _into_place(final, write)


@contextlib.contextmanager
def all_into_place(*finals):
    """For artifacts that go into place together: yields their staging
    paths for the block to write; when it ends, renames them all into
    place. If it fails, none of the artifacts remains, staged or final."""
    staged = [final + ".tmp" for final in finals]
    try:
        for tmp in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        yield staged
        for tmp, final in zip(staged, finals):
            os.replace(tmp, final)
    except BaseException:
        for path in staged + list(finals):
            if os.path.exists(path):
                os.remove(path)
        raise


def _into_place(final, write):
    tmp = final + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, final)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        # name the artifact, not the staging file or the copy's source
        raise OSError(e.errno, e.strerror, final) from None
