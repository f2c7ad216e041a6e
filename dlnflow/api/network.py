"""Networks from the Python API: a spec bound to its models and cache, and its lock file's state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlnflow.lockfile.lock import drift, read_lock
from dlnflow.runtime.location import default_cache_dir
from dlnflow.spec.compiler import compile_spec
from dlnflow.training.network import Network


def open_network(spec: str | Path, cache_dir: str | Path | None = None, cache_mode: str = "use",
                 cache_remote: str | None = None) -> Network:
    """Compile ``spec`` and bind it to the cache in ``cache_dir`` (default: ``cache/`` at the project root)
    and the shared tier ``cache_remote`` (default: ``$DLNFLOW_CACHE_REMOTE``; ``""`` for none).

    Models are loaded on first use; close the network (or use it as a context manager) when done.
    """
    path = Path(spec)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(path.parent)
    return Network(compile_spec(path), cache_dir=folder, cache_mode=cache_mode,  # type: ignore[arg-type]
                   cache_remote=cache_remote)


def lock_status(net: Network) -> dict[str, Any]:
    """Whether ``net``'s lock file exists and matches its spec: ``exists``, ``drift`` (lines naming what
    changed), ``clean``, and the lock's ``metrics`` and learned ``layers``."""
    path = net.pipeline.lock_path
    data = read_lock(path)
    if data is None:
        return {"lock": str(path), "exists": False, "drift": [], "clean": False}
    drifted = drift(net.pipeline, data, net.identities(), net.dataset.digest, net.dataset.train)
    return {"lock": str(path), "exists": True, "drift": drifted, "clean": not drifted,
            "metrics": data.get("metrics", {}), "layers": data.get("layers", {})}
