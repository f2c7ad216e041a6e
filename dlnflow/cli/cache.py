"""``dlnflow cache``: where the call cache lives, what is in it, check it, empty it.

The folder is the global ``--cache-dir`` if given, else ``$DLNFLOW_CACHE_DIR``, else
``cache/`` at the project root above the current folder. Reading commands never create it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from dlnflow.cli.context import AppContext, app
from dlnflow.core.errors import ConfigError, RuntimeFault
from dlnflow.runtime.cache import DB_NAME, CallCache
from dlnflow.runtime.remote import open_store, pull, push, remote_stats


@click.group("cache")
def cache() -> None:
    """Inspect and manage the cache of LLM calls.

    Every model call is stored under the hash of its full content (model identity,
    prompt, decoding settings, seed and sample index), so re-running a pipeline costs
    nothing and a training run that stops can resume where it was. The folder is the
    global --cache-dir, else $DLNFLOW_CACHE_DIR, else cache/ at the project root.

    \b
    Examples:
      dlnflow cache path
      dlnflow cache stats
      dlnflow --json cache stats
      dlnflow --cache-dir ../team-cache cache stats
      dlnflow cache verify
      dlnflow cache clear --yes
      dlnflow --cache-remote redis://127.0.0.1:6379/0 cache stats
      dlnflow cache push file:///mnt/team/dlnflow-cache
      dlnflow cache pull file:///mnt/team/dlnflow-cache
    """


@cache.command("path")
@click.pass_context
def path_cmd(ctx: click.Context) -> None:
    """Print the cache folder (it may not exist yet).

    \b
    Examples:
      dlnflow cache path
      du -sh "$(dlnflow cache path)"
    """
    a = app(ctx)
    folder = _folder(a)
    a.emit({"path": str(folder), "exists": _has_cache(folder)}, str(folder))


@cache.command("stats")
@click.pass_context
def stats_cmd(ctx: click.Context) -> None:
    """Show entries, size on disk and entries per model; with --cache-remote, the remote tier too.

    \b
    Examples:
      dlnflow cache stats
      dlnflow --json cache stats          # machine-readable
    """
    a = app(ctx)
    folder = _folder(a)
    if not _has_cache(folder):
        payload: dict[str, Any] = {"path": str(folder), "exists": False, "entries": 0, "bytes": 0,
                                   "models": {}}
        text = f"cache: {folder}\nno cache there yet (it is created by the first model call)"
    else:
        with _open(folder) as store:
            payload = {**store.stats(), "exists": True}
        text = _stats_text(payload)
    if a.cache_remote:
        payload["remote"] = _remote_stats(a.cache_remote)
        text += "\n" + _remote_text(payload["remote"])
    a.emit(payload, text)


@cache.command("push")
@click.argument("remote", required=False, metavar="[REMOTE]")
@click.pass_context
def push_cmd(ctx: click.Context, remote: str | None) -> None:
    """Upload the local entries a shared cache lacks (REMOTE: file:///path or redis://host:port/db;
    default: the global --cache-remote / $DLNFLOW_CACHE_REMOTE).

    Only missing objects are sent; existing ones are never changed. Use it after a run that went
    on without the remote (it was down), or to seed a team cache from your own.

    \b
    Examples:
      dlnflow cache push file:///mnt/team/dlnflow-cache
      dlnflow --json cache push redis://cache.internal:6379/0
    """
    a = app(ctx)
    store = _remote_store(a, remote)
    folder = _folder(a)
    if not _has_cache(folder):
        counts = {"local_entries": 0, "already_on_remote": 0, "uploaded": 0}
    else:
        with _open(folder) as local:
            counts = push(local, store)
    store.close()
    payload = {"path": str(folder), "remote": store.url, **counts}
    a.emit(payload, f"pushed {counts['uploaded']:,} of {counts['local_entries']:,} local entries to {store.url} "
                    f"({counts['already_on_remote']:,} were there already)")


@cache.command("pull")
@click.argument("remote", required=False, metavar="[REMOTE]")
@click.pass_context
def pull_cmd(ctx: click.Context, remote: str | None) -> None:
    """Download the objects of a shared cache that the local cache lacks (REMOTE as for push).

    Objects that are not valid dlnflow cache objects are counted and skipped.

    \b
    Examples:
      dlnflow cache pull file:///mnt/team/dlnflow-cache
      dlnflow --json cache pull redis://cache.internal:6379/0
    """
    a = app(ctx)
    store = _remote_store(a, remote)
    folder = _folder(a)
    with _open(folder) as local:
        counts = pull(local, store)
    store.close()
    payload = {"path": str(folder), "remote": store.url, **counts}
    extra = f", {counts['invalid']:,} invalid object(s) skipped" if counts["invalid"] else ""
    a.emit(payload, f"pulled {counts['downloaded']:,} of {counts['remote_entries']:,} remote entries from "
                    f"{store.url} ({counts['already_local']:,} were here already{extra})")


@cache.command("verify")
@click.pass_context
def verify_cmd(ctx: click.Context) -> None:
    """Check the cache's integrity; exit 1 when something is wrong.

    Checks the database, that every entry decodes, and that the folder and its files are
    readable by their owner only.

    \b
    Examples:
      dlnflow cache verify
      dlnflow --json cache verify
    """
    a = app(ctx)
    folder = _folder(a)
    try:
        present = _has_cache(folder)
    except RuntimeFault as exc:
        _report(a, {"path": str(folder), "exists": True, "ok": False, "entries": 0, "problems": [str(exc)]})
        ctx.exit(1)
    if not present:
        a.emit({"path": str(folder), "exists": False, "ok": True, "problems": []},
               f"{folder}: no cache there yet; nothing to check")
        return
    try:
        with _open(folder) as store:
            problems = store.verify()
            entries = len(store)
    except RuntimeFault as exc:
        problems, entries = [str(exc)], 0
    payload = {"path": str(folder), "exists": True, "ok": not problems, "entries": entries,
               "problems": problems}
    if not problems:
        a.emit(payload, f"{folder}: {entries:,} entries, no problems found")
        return
    _report(a, payload)
    ctx.exit(1)


def _report(a: AppContext, payload: dict[str, Any]) -> None:
    """The problems ``verify`` found, as JSON or one line each on stderr."""
    if a.as_json:
        a.emit(payload)
        return
    for problem in payload["problems"]:
        click.echo(f"problem: {problem}", err=True)
    click.echo(f"{payload['path']}: {len(payload['problems'])} problem(s) found", err=True)


@cache.command("clear")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (required when input is not a terminal).")
@click.pass_context
def clear_cmd(ctx: click.Context, yes: bool) -> None:
    """Delete every cached call.

    Asks for confirmation on a terminal. When standard input is not a terminal (scripts,
    CI) nothing is deleted unless --yes is given.

    \b
    Examples:
      dlnflow cache clear
      dlnflow cache clear --yes
      dlnflow --cache-dir ../team-cache cache clear -y
    """
    a = app(ctx)
    folder = _folder(a)
    if not _has_cache(folder):
        a.emit({"path": str(folder), "removed": 0}, f"{folder}: no cache there; nothing to clear")
        return
    if not yes:
        if not stdin_is_terminal():
            raise click.UsageError("input is not a terminal, so there is no one to confirm; "
                                   "add --yes to clear the cache: dlnflow cache clear --yes")
        click.confirm(f"Delete every cached call in {folder}?", abort=True, err=True)
    with _open(folder) as store:
        removed = store.clear()
    a.emit({"path": str(folder), "removed": removed}, f"removed {removed:,} entries from {folder}")


# -- helpers -------------------------------------------------------------------------------
def _remote_store(a: AppContext, remote: str | None) -> Any:
    url = remote or a.cache_remote
    if not url:
        raise click.UsageError("name the shared cache: dlnflow cache push REMOTE (file:///path or "
                               "redis://host:port/db), or set --cache-remote / $DLNFLOW_CACHE_REMOTE")
    return open_store(url)


def _remote_stats(url: str) -> dict[str, Any]:
    store = open_store(url)
    try:
        return remote_stats(store)
    finally:
        store.close()


def _remote_text(stats: dict[str, Any]) -> str:
    return (f"remote: {stats['url']}\n"
            f"entries: {stats['entries']:,}   size: {_human_bytes(int(stats['bytes']))}")


def _folder(a: AppContext) -> Path:
    folder = a.resolve_cache_dir()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"cache folder {folder} is a file, not a folder; point --cache-dir "
                          "(or $DLNFLOW_CACHE_DIR) at a folder")
    return folder


def stdin_is_terminal() -> bool:
    """Whether someone can answer a question on standard input."""
    return sys.stdin is not None and sys.stdin.isatty()


def _has_cache(folder: Path) -> bool:
    """Whether a cache database is there; something else at its place is a clear fault (exit 1)."""
    db = folder / DB_NAME
    if db.exists() and not db.is_file():
        raise RuntimeFault(f"{db} is a folder (or another kind of file), not a cache database; move it away "
                           "(the cache only saves time: nothing else is lost)")
    return db.is_file()


def _open(folder: Path) -> CallCache:
    """Open the store (an unreadable database is a clear runtime fault, raised by CallCache)."""
    return CallCache(folder)


def _stats_text(stats: dict[str, Any]) -> str:
    lines = [f"cache: {stats['path']}",
             f"entries: {stats['entries']:,}   size: {_human_bytes(int(stats['bytes']))}"]
    models = stats.get("models") or {}
    if models:
        width = max(len(m or "(unlabelled)") for m in models)
        lines.append("per model:")
        lines += [f"  {(m or '(unlabelled)').ljust(width)}  {n:>9,}" for m, n in models.items()]
    return "\n".join(lines)


def _human_bytes(n: int) -> str:
    """Sizes for people.

    >>> _human_bytes(512), _human_bytes(2048), _human_bytes(5 * 1024**3)
    ('512 B', '2.0 KiB', '5.0 GiB')
    """
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
