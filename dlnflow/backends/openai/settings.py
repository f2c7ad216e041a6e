"""Settings of the ``openai`` backend: parsed from a spec's ``models.<name>`` mapping, checked, defaulted.

The API key itself never appears here: only the *name* of the environment variable that holds it.

>>> s = OpenAISettings.parse({"backend": "openai", "model": "m", "base_url": "HTTP://127.0.0.1:8000/v1/"})
>>> s.endpoint, s.official
('http://127.0.0.1:8000/v1', False)
>>> OpenAISettings.parse({"backend": "openai", "model": "gpt-4o-mini"}).endpoint
'https://api.openai.com/v1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dlnflow.core.errors import ConfigError

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
OFFICIAL_HOST = "api.openai.com"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_base_url(url: str) -> str:
    """One spelling per endpoint: lower-case scheme and host, no default port, no trailing slash.

    Credentials written into the URL are dropped from the normalised form (it is shown and cached).

    >>> normalise_base_url("https://API.openai.com:443/v1/")
    'https://api.openai.com/v1'
    >>> normalise_base_url("http://user:pw@127.0.0.1:8080/v1")
    'http://127.0.0.1:8080/v1'
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(
            f"base_url {url!r} is not an http(s) URL; write it like http://127.0.0.1:8000/v1"
        )
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"base_url {url!r} has an invalid port") from None
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def _setting(settings: dict[str, Any], key: str, kinds: tuple[type, ...], default: Any) -> Any:
    value = settings.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"models.<name>.{key} must be {kinds[0].__name__}, not a boolean")
    if not isinstance(value, kinds):
        raise ConfigError(f"models.<name>.{key} must be {kinds[0].__name__}, got {value!r}")
    return value


def _at_least(key: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"models.<name>.{key} must be at least {low}, got {value}")


@dataclass(frozen=True)
class OpenAISettings:
    """Everything the backend needs to reach one model on one endpoint.

    Beyond the schema's keys, three are meant for tests and special servers:
    ``extra_body`` (a mapping merged into every request, e.g. ``{"repeat_penalty": 1.0}`` for a
    llama.cpp server, whose default sampling otherwise penalises repeats), ``top_logprobs``
    (how many next-token alternatives to ask for; default 5 on the official API, 20 elsewhere),
    and ``backoff_base``/``backoff_max`` (seconds) for the retry waits.
    """

    model: str
    base_url: str = OFFICIAL_BASE_URL
    api_key_env: str = DEFAULT_KEY_ENV
    chat: bool = False
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 5
    n_ctx: int = 4096
    top_logprobs: int = 0
    generate_logprobs: bool = False
    extra_body: dict[str, Any] = field(default_factory=dict)
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    @property
    def endpoint(self) -> str:
        """The normalised base URL (what identities and messages show)."""
        return normalise_base_url(self.base_url)

    @property
    def official(self) -> bool:
        return urlsplit(self.endpoint).hostname == OFFICIAL_HOST

    @property
    def n_top(self) -> int:
        if self.top_logprobs > 0:
            return self.top_logprobs
        return 5 if self.official else 20

    @classmethod
    def parse(cls, settings: dict[str, Any]) -> OpenAISettings:
        """Check types and ranges of a ``models.<name>`` mapping; raise :class:`ConfigError` if wrong."""
        model = settings.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(
                "models.<name>.model is required for backend 'openai': the model name the server knows "
                "(e.g. gpt-4o-mini, or the name a local server was started with)"
            )
        parsed = cls(
            model=model,
            base_url=_setting(settings, "base_url", (str,), OFFICIAL_BASE_URL),
            api_key_env=_setting(settings, "api_key_env", (str,), DEFAULT_KEY_ENV),
            chat=_setting(settings, "chat", (bool,), False),
            concurrency=_setting(settings, "concurrency", (int,), 8),
            timeout=float(_setting(settings, "timeout", (int, float), 60.0)),
            max_retries=_setting(settings, "max_retries", (int,), 5),
            n_ctx=_setting(settings, "n_ctx", (int,), 4096),
            top_logprobs=_setting(settings, "top_logprobs", (int,), 0),
            generate_logprobs=_setting(settings, "generate_logprobs", (bool,), False),
            extra_body=dict(_setting(settings, "extra_body", (dict,), {})),
            backoff_base=float(_setting(settings, "backoff_base", (int, float), 0.5)),
            backoff_max=float(_setting(settings, "backoff_max", (int, float), 30.0)),
        )
        _at_least("concurrency", parsed.concurrency, 1)
        _at_least("max_retries", parsed.max_retries, 0)
        _at_least("n_ctx", parsed.n_ctx, 16)
        _at_least("top_logprobs", parsed.top_logprobs, 0)
        _at_least("backoff_base", parsed.backoff_base, 0.0)
        _at_least("backoff_max", parsed.backoff_max, 0.0)
        if parsed.timeout <= 0:
            raise ConfigError(f"models.<name>.timeout must be a positive number of seconds, got {parsed.timeout}")
        if not parsed.api_key_env.strip():
            raise ConfigError("models.<name>.api_key_env must name an environment variable")
        parsed.endpoint  # noqa: B018 - validates the URL now rather than at the first call
        return parsed
