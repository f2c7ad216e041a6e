"""``--json``, ``-q`` and ``-v`` after the command as well as before it.

``dlnflow --json cache stats`` and ``dlnflow cache stats --json`` mean the same, as with gh or
kubectl. The group parses these flags once, before the command; this module adds the same flags
to every command (and to each command of a subgroup such as ``cache``), where they update the
:class:`~dlnflow.cli.context.AppContext` the group made. A command that has an option of the
same name already (``export --json``) keeps its own.
"""

from __future__ import annotations

import click

from dlnflow.cli.context import AppContext

_MARK = "_dlnflow_global_flags"


def _context(ctx: click.Context) -> AppContext:
    obj = ctx.find_object(AppContext)
    if obj is None:  # a command used on its own, without the group (tests, embedding)
        obj = ctx.ensure_object(AppContext)
    return obj


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _context(ctx).as_json = True


def _add_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    obj = _context(ctx)
    if value and obj.verbosity >= 0:
        obj.verbosity += value


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _context(ctx).verbosity = -1


def _flags() -> list[click.Option]:
    # is_eager: applied before the command's other options are converted, so an error in
    # those (exit 2) is already rendered the way --json asks
    return [
        click.Option(["--json"], is_flag=True, expose_value=False, is_eager=True, callback=_set_json,
                     help="Print machine-readable JSON instead of text (also before the command)."),
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_add_verbose,
                     help="More detail (repeat for more; also before the command)."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True, callback=_set_quiet,
                     help="Only errors and final results (also before the command)."),
    ]


def _taken(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def with_global_flags(command: click.Command) -> click.Command:
    """Add ``--json``/``-v``/``-q`` to ``command`` (and the commands of a group) once; return it."""
    if getattr(command, _MARK, False):
        return command
    taken = _taken(command)
    command.params.extend(f for f in _flags() if not taken.intersection(f.opts))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_global_flags(sub)
    setattr(command, _MARK, True)
    return command

