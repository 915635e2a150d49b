"""What a compile's user-caused failures are (ModelError), and the one
line an exception is shown as.
"""

class ModelError(Exception):
    """A problem with the model or its options, reported as one line."""


def first_line(exc):
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # TVM puts the useful sentence last, after a traceback.
    for ln in reversed(lines):
        if "Error" in ln or "not supported" in ln.lower():
            return ln[:300]
    return lines[-1][:300]
