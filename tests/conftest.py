"""Shared fixtures. The stand-in model lives in ``standin.py``; the llama.cpp server fixture in ``server.py``;
``helpers.py`` (spec writers, the ``standin`` and ``project`` fixtures) is a plugin, so its fixtures
reach every test folder without imports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from paths import SHARED_DATA  # noqa: E402  (found through the line above)

pytest_plugins = ["server", "helpers", "quickstart_run", "real_runs", "redis_server", "ray_cluster"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data sets beside the project (read-only); tests needing them skip if absent."""
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not beside the project")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The embedded default model file (assembled once from its PyPI package)."""
    from dlnflow.backends.llamacpp.backend import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def llama(gguf_path: Path):  # type: ignore[no-untyped-def]
    """One real embedded backend shared by the whole session (loading costs a second or two)."""
    from dlnflow.backends.llamacpp.backend import LlamaCppBackend

    backend = LlamaCppBackend.from_settings({"backend": "llamacpp"}, None)
    yield backend
    backend.close()
