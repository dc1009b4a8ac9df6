"""URL helpers: normalisation of user input, and redaction of the secrets in URLs and in
messages that quote them.

Standard library only (no SQLAlchemy), so any process can redact what it prints or records.
"""

from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote

__all__ = ["normalize_url", "redact_text", "redact_url"]

#: What a redacted secret reads as (SQLAlchemy's own ``hide_password`` mask).
MASK = "***"

# "scheme://" where scheme is a dialect name, optionally with "+driver".
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.\-]*)(\+[A-Za-z0-9_]+)?://")
# A URL inside free text: a scheme, "://", then everything up to the next whitespace.
_URL_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
# Where a URL's authority (``userinfo@host:port``) ends, looking from its first "@".
_HOST_END_RE = re.compile(r"[/?#,\s]")
_NOT_IN_USERNAME_RE = re.compile(r"[/\s]")
# key=value in a query string, a fragment or a libpq conninfo ("host=db password='a b'"): the
# key starts the text or follows a separator; a quoted value is taken whole.
_PAIR_RE = re.compile(r"""(?<![^\s?&;#,(])(?P<key>[\w.%\-]+)=(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;#]*)""")
#: A query key naming a secret contains one of these (compared in lower case, percent-decoded):
#: password, passwd, sslpassword, pwd, secret, client_secret, token, access_token, api_key,
#: access_key, sslkey, credential, X-Amz-Signature, sig, auth...
SECRET_KEY_PARTS = ("pass", "pwd", "secret", "token", "key", "credential", "sig", "auth")


def normalize_url(url: str) -> str:
    """Turn user input into an SQLAlchemy URL string.

    * ``postgresql://...`` and ``postgres://...`` (no driver given) become
      ``postgresql+psycopg://...``: psycopg 3 is the PostgreSQL driver perftune installs.
      A URL that names a driver (``postgresql+psycopg2://``) is left unchanged.
    * A password with a raw ``@`` in it (``user:p@ss@host``) is percent-encoded
      (``user:p%40ss@host``): SQLAlchemy would take ``p`` for the password and ``ss@host``
      for the host.
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
    url = _quote_password(url)
    scheme, driver = m.group(1), m.group(2)
    if scheme.lower() in ("postgresql", "postgres") and not driver:
        return "postgresql+psycopg://" + url[m.end() :]
    return url


def redact_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***``: the password of its userinfo
    (``scheme://user:***@host``) and the value of every query or fragment key that looks
    secret (``?password=***``, ``sslpassword``, ``token``, ``access_key``...: see
    :data:`SECRET_KEY_PARTS`). The same rule for every scheme (databases, ``http(s)``,
    anything else); the rest of the URL is left exactly as given.

    The password runs from the userinfo's first ``:`` to the *last* ``@`` before the host, so
    one with a raw ``@``, ``:``, ``/``, ``?`` or ``#`` in it is hidden whole (SQLAlchemy's
    ``make_url`` stops at its first ``@``, ``urllib`` at its first ``/``): it hides at least
    what either parser would send as the password. Something that is not a URL (a libpq
    conninfo ``host=db password=...``) has its secret ``key=value`` pairs hidden.

    Idempotent and never raises: safe on any input, in any message.
    """
    try:
        text = str(url)
    except Exception:  # pragma: no cover - pathological __str__
        return "<unprintable url>"
    return _mask_pairs(_mask_password(text))


def redact_text(text: str) -> str:
    """``text`` (an exception's message, a log line) with every URL in it redacted as
    :func:`redact_url` does, and secret ``key=value`` pairs outside URLs hidden too. A URL in
    text ends at the next whitespace. Idempotent and never raises."""
    try:
        text = str(text)
    except Exception:  # pragma: no cover - pathological __str__
        return "<unprintable message>"
    return _mask_pairs(_URL_IN_TEXT_RE.sub(lambda m: _mask_password(m.group()), text))


def _userinfo(url: str) -> tuple[int, int] | None:
    """Where the password of ``url`` (the text after its first ``://``) is: ``(colon, at)``, the
    userinfo's first ``:`` and its ending ``@``; ``None`` without a ``user:password@``. The
    userinfo ends at the last ``@`` of the authority, which ends at the first ``/ ? # ,`` or
    whitespace after the first ``@``; a username has no ``/`` nor whitespace
    (``http://host/a:b@c`` has no userinfo)."""
    sep = url.find("://")
    if sep < 0:
        return None
    start = sep + 3
    first_at = url.find("@", start)
    if first_at < 0:
        return None
    end = _HOST_END_RE.search(url, first_at)
    at = url.rindex("@", start, end.start() if end else len(url))
    colon = url.find(":", start, at)
    if colon < 0 or _NOT_IN_USERNAME_RE.search(url, start, colon):
        return None
    return colon, at


def _mask_password(url: str) -> str:
    found = _userinfo(url)
    if found is None:
        return url
    colon, at = found
    return f"{url[: colon + 1]}{MASK}{url[at:]}"


def _quote_password(url: str) -> str:
    """The password of ``url`` percent-encoded if it has a raw ``@`` (see :func:`normalize_url`)."""
    found = _userinfo(url)
    if found is None or "@" not in url[found[0] + 1 : found[1]]:
        return url
    colon, at = found
    return f"{url[: colon + 1]}{quote(unquote(url[colon + 1 : at]), safe='')}{url[at:]}"


def is_secret_key(key: str) -> bool:
    """Whether a query or conninfo key names a secret (see :data:`SECRET_KEY_PARTS`)."""
    name = unquote(key).lower()
    return any(part in name for part in SECRET_KEY_PARTS)


def _mask_pairs(text: str) -> str:
    return _PAIR_RE.sub(lambda m: f"{m['key']}={MASK}" if is_secret_key(m["key"]) else m.group(), text)
