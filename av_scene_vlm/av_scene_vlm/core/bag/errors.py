"""The exceptions of the bag code, and how a library error becomes a short reason in its message."""

from __future__ import annotations


class BagError(Exception):
    """The bag cannot be processed or searched; the message says which file and why."""


class OutputError(BagError):
    """The output cannot be written (disk full, read-only or unwritable directory): not the input's
    or the command line's fault, so the CLI exits 1 rather than 2. Nothing partial is left."""


class InputError(BagError):
    """The input bag does not exist or cannot be read (missing, not a bag, corrupt): an I/O failure,
    exit code 1 like a missing model, not a usage error (2)."""


def reason(exc: BaseException) -> str:
    """First line of an exception's text (at most 300 characters), or its type's name."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def check_positive(name: str, value: object) -> int:
    """`value` when it is a positive int (not a bool), else BagError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BagError(f"{name} must be a positive integer, got {value!r}")
    return value
