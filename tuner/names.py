"""Names that become paths: the rules every name entering perftune passes, and the one way a
name becomes a file name.

A workload name (``Workload(name=...)``, and the description a trial worker sends back), a
study name (``--study``) and what is derived from them (MLflow experiment names, log files,
artifact folders) end up in paths. :func:`check_name` rejects, where a name enters, what could
leave the folder it is meant for or not fit in a file name; :func:`safe_filename` is how any
text becomes one file name, whatever it holds.

Standard library only (the trial worker imports it).
"""

from __future__ import annotations

import hashlib
import re

from perftune.errors import UsageError

__all__ = ["MAX_FILENAME", "MAX_NAME", "MAX_STUDY", "check_name", "safe_filename"]

#: The longest workload name perftune accepts, in characters.
MAX_NAME = 100
#: The longest study name: room for the default one, the workload's name and
#: ``-FRAMEWORK-DEVICE-OBJECTIVE`` (``perftune worker --study`` names it).
MAX_STUDY = 160
#: The longest file name :func:`safe_filename` returns (ASCII, so as many bytes): room is left
#: for an extension within the 255 bytes file systems allow in a name.
MAX_FILENAME = 200
_HASH_CHARS = 10
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.@+=-]+")
_LEADING_DOTS_RE = re.compile(r"^\.+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def check_name(field: str, value: object, *, limit: int = MAX_NAME, optional: bool = False) -> None:
    """Raise :class:`UsageError` (one line naming ``field``, e.g. ``--study``) unless ``value``
    is a usable name: a non-empty string of at most ``limit`` characters, without control
    characters, path separators (``/``, ``\\``) or ``..``. ``optional``: ``None`` (not given)
    passes."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{field}: must be a non-empty name")
    if len(value) > limit:
        raise UsageError(f"{field} {value[:40]}...: at most {limit} characters (got {len(value)})")
    if _CONTROL_RE.search(value):
        raise UsageError(f"{field} {value!r}: must not contain control characters")
    if "/" in value or "\\" in value or ".." in value:
        raise UsageError(f"{field} {value}: must not contain '/', '\\' or '..' (it names files and folders)")


def safe_filename(text: str) -> str:
    """One file name (no folder part) for ``text``, whatever it holds. Text that is already a
    safe name (ASCII letters, digits and ``_ . @ + = -``, not starting with a dot, at most
    :data:`MAX_FILENAME` characters) is returned unchanged. Any other text gives its safe head
    (other characters and leading dots become ``_``) and a hash of the whole text
    (``head-0123456789``), at most :data:`MAX_FILENAME` characters: distinct texts keep
    distinct names, and the result is never ``.``, ``..`` nor a path."""
    text = str(text)
    name = _LEADING_DOTS_RE.sub(lambda m: "_" * len(m.group()), _UNSAFE_RE.sub("_", text))
    if name == text and 0 < len(name) <= MAX_FILENAME:
        return name
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{name[: MAX_FILENAME - _HASH_CHARS - 1]}-{digest}"
