"""The ``dlnflow`` command line.

Each command lives in its own small module and is loaded lazily, so ``dlnflow --help``
stays fast. Errors raised anywhere below are rendered here (and only here): a
:class:`~dlnflow.core.errors.DlnflowError` becomes a message and its exit code (2 for bad
input, 1 for a failed job), never a traceback.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any

import click

from dlnflow._version import __version__
from dlnflow.cli.context import AppContext
from dlnflow.cli.flags import with_global_flags
from dlnflow.cli.render import Interrupted, render_error, route_warnings, run_guarded
from dlnflow.core.errors import DlnflowError

COMMANDS: dict[str, str] = {
    "validate": "dlnflow.cli.validate:validate",
    "graph": "dlnflow.cli.graph:graph",
    "cache": "dlnflow.cli.cache:cache",
    "train": "dlnflow.cli.train:train",
    "eval": "dlnflow.cli.evaluate:evaluate",
    "run": "dlnflow.cli.run:run",
    "status": "dlnflow.cli.status:status",
    "report": "dlnflow.cli.report:report",
    "init": "dlnflow.cli.init:init",
    "results": "dlnflow.cli.results:results",
    "export": "dlnflow.cli.export:export",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return with_global_flags(command)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted from None
        except DlnflowError as exc:
            obj = ctx.find_object(AppContext)
            render_error(exc, as_json=bool(obj and obj.as_json), color=bool(obj and obj.color))
            if obj is not None and obj.verbosity >= 2:
                traceback.print_exc()
            ctx.exit(exc.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlnflow")
@click.option("--cache-dir", type=click.Path(file_okay=False), envvar="DLNFLOW_CACHE_DIR",
              help="Where LLM calls are cached [default: cache/ at the project root; env DLNFLOW_CACHE_DIR].")
@click.option("--cache-remote", metavar="URL", envvar="DLNFLOW_CACHE_REMOTE",
              help="A shared cache tier behind the local one: file:///path or redis://[user:pass@]host:port/db "
                   "[env DLNFLOW_CACHE_REMOTE].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the call cache.")
@click.option("--refresh", is_flag=True, help="Do not read the cache, but write fresh results to it.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
@click.option("-v", "--verbose", count=True, help="More detail (repeat for more).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and final results.")
@click.pass_context
def cli(ctx: click.Context, cache_dir: str | None, cache_remote: str | None, no_cache: bool, refresh: bool,
        as_json: bool, verbose: int, quiet: bool) -> None:
    """dlnflow: Deep Language Networks as declarative pipelines.

    Write a pipeline spec (YAML or JSON), then validate it, train its prompts on a model
    and keep the learned prompts in a lock file beside the spec.

    \b
    Examples:
      dlnflow validate pipelines/*.yaml
      dlnflow train pipelines/quickstart.yaml
      dlnflow eval pipelines/quickstart.yaml --split test
      dlnflow run pipelines/quickstart.yaml --input "sparrow"
    """
    if no_cache and refresh:
        raise click.UsageError("--no-cache and --refresh exclude each other")
    mode = "off" if no_cache else "refresh" if refresh else "use"
    ctx.obj = AppContext(cache_dir=cache_dir, cache_mode=mode, as_json=as_json,
                         verbosity=-1 if quiet else verbose, cache_remote=cache_remote or None)
    route_warnings()


def main(argv: list[str] | None = None) -> Any:
    """Console entry point: run the CLI and map errors to exit codes."""
    return run_guarded(cli, argv)

