"""Taking secrets out of text before anyone sees it.

One function for everything shown or written: error messages, warnings, ``--json`` payloads
and run logs pass through :func:`redact`, which removes

- the password (and user) written into a URL: ``http://me:pw@host/v1`` -> ``http://***@host/v1``;
- the values of secret-looking URL query parameters (``?api_key=...``, ``token``, ``sig``...);
- ``Authorization``-style header values and ``Bearer`` tokens;
- anything shaped like an OpenAI key (``sk-...``);
- any ``secrets`` the caller knows (such as the API key in use).

:func:`redact_url` and :func:`redact_headers` do the same for one URL and one header mapping;
:func:`redact_data` for every text inside JSON-like data.

>>> redact("POST http://user:hunter2@127.0.0.1:9/v1?api_key=abc&x=1 failed")
'POST http://***@127.0.0.1:9/v1?api_key=***&x=1 failed'
>>> redact("Authorization: Bearer sk-live-123456")
'Authorization: [redacted]'
>>> redact_headers({"Authorization": "Bearer k", "Accept": "json"})
{'Authorization': '[redacted]', 'Accept': 'json'}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "[redacted]"
SECRET_NAMES = ("api_key", "apikey", "api-key", "key", "secret", "password", "passwd", "token", "access_token",
                "auth", "authorization", "sig", "signature", "x-api-key", "cookie", "session")
"""Header and query-parameter names whose values are never shown."""
DATA_SECRET_NAMES = ("api_key", "apikey", "api-key", "secret", "password", "passwd", "token", "access_token",
                     "authorization", "x-api-key", "cookie")
"""Keys of JSON-like data whose values are never shown."""

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^\s/@?#]*@)")
_QUERY = re.compile(r"(?P<sep>[?&;])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&#\s'\"]*)")
_HEADER = re.compile(r"\b(?P<name>authorization|proxy-authorization|x-api-key|api-key|cookie|set-cookie)"
                     r"(?P<sep>\s*[:=]\s*)(?P<value>[^\r\n,;'\"]+)", re.IGNORECASE)
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}|\bBearer\s+[^\s'\",;]+", re.IGNORECASE)


def _query(match: re.Match[str]) -> str:
    name = match.group("name")
    if name.lower() in SECRET_NAMES and match.group("value"):
        return f"{match.group('sep')}{name}=***"
    return match.group(0)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials in URLs, auth headers, key-shaped words and ``secrets`` masked.

    >>> redact("key sk-abcdef and my-own-secret", secrets=["my-own-secret"])
    'key [redacted] and [redacted]'
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}***@", text)
    text = _QUERY.sub(_query, text)
    text = _HEADER.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    return _KEY_LIKE.sub(MASK, text)


def redact_url(url: str) -> str:
    """One URL without its user, password and secret query values.

    >>> redact_url("https://u:p@example.org/v1?token=t&model=m")
    'https://***@example.org/v1?token=***&model=m'
    """
    return redact(url)


def redact_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``headers`` with the values of secret headers masked (others redacted as text)."""
    out: dict[str, Any] = {}
    for name, value in headers.items():
        secret = str(name).lower() in SECRET_NAMES or str(name).lower().endswith(("-key", "-token"))
        out[name] = MASK if secret else (redact(value) if isinstance(value, str) else value)
    return out


def redact_data(value: Any, secrets: Iterable[str] = ()) -> Any:
    """``value`` (JSON-like) with every text redacted, and the values of secret-named keys masked.

    >>> redact_data({"url": "http://a:b@h/v1", "api_key": "x", "n": [1, "Bearer t"]})
    {'url': 'http://***@h/v1', 'api_key': '[redacted]', 'n': [1, '[redacted]']}
    """
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: MASK if isinstance(k, str) and k.lower() in DATA_SECRET_NAMES and v not in (None, "")
                else redact_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(v, secrets) for v in value]
    return value
