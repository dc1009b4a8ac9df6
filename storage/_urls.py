"""Database URL helpers: normalisation of user input and password redaction."""

from __future__ import annotations

import os
import re

__all__ = ["normalize_url", "redact_url"]

# "scheme://" where scheme is a dialect name, optionally with "+driver".
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.\-]*)(\+[A-Za-z0-9_]+)?://")
# user:password@  inside the netloc, used when SQLAlchemy cannot parse the URL.
_USERINFO_RE = re.compile(r"(://[^/?#@:]*:)[^@/?#]*@")
# password=... in a query string or key/value conninfo.
_QUERY_PW_RE = re.compile(r"((?:^|[?&;\s])password=)[^&;\s]*", re.IGNORECASE)


def normalize_url(url: str) -> str:
    """Turn user input into an SQLAlchemy URL string.

    * ``postgresql://...`` and ``postgres://...`` (no driver given) become
      ``postgresql+psycopg://...``: psycopg 3 is the PostgreSQL driver perftune installs.
      A URL that names a driver (``postgresql+psycopg2://``) is left unchanged.
    * A bare filesystem path (no ``scheme://``) becomes ``sqlite:///<absolute path>``;
      ``~`` is expanded.
    * Anything else is returned unchanged (surrounding whitespace stripped).

    Pure string manipulation: never touches the filesystem or the network.
    """
    url = url.strip()
    if not url:
        raise ValueError("empty database URL")
    m = _SCHEME_RE.match(url)
    if m is None:
        if url.startswith("sqlite:"):
            return url
        path = os.path.abspath(os.path.expanduser(url))
        return f"sqlite:///{path}"
    scheme, driver = m.group(1), m.group(2)
    if scheme.lower() in ("postgresql", "postgres") and not driver:
        return "postgresql+psycopg://" + url[m.end() :]
    return url


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``. Never raises.

    Uses SQLAlchemy's own rendering when the URL parses, otherwise a regex fallback, so it
    is safe to call on arbitrary user input in error messages and logs.
    """
    try:
        text = str(url)
    except Exception:  # pragma: no cover - pathological __str__
        return "<unprintable url>"
    try:
        from sqlalchemy.engine import make_url

        rendered = make_url(text).render_as_string(hide_password=True)
    except Exception:
        rendered = _USERINFO_RE.sub(r"\1***@", text)
    return _QUERY_PW_RE.sub(r"\1***", rendered)
