"""The lock file: learned prompts stored next to the spec, so they live in version control.

``pipelines/x.yaml`` -> ``pipelines/x.lock.yaml``. The lock records, per layer, the learned
prompt and the sha256 of the initial prompt and of the template it was learned with; the
identity of every model (never a secret); the data digest, source and split; the training
hyperparameters and seed; the metrics; and the dlnflow version. From these :func:`drift`
tells what changed since the prompts were learned.

The file is YAML with sorted keys in block style; multi-line prompts are literal blocks
(``|``), so a diff of the lock in git reads like a changelog of prompts. Equal inputs give
byte-identical files (nothing time-dependent is written), and writing is atomic: a temporary
file in the same folder is written, flushed to disk, then renamed over the old lock.

>>> text = dump_lock({"schema": 1, "layers": {"answer": {"prompt": "Line one.\\nLine two."}}})
>>> print(text.split("\\n", 1)[1], end="")
layers:
  answer:
    prompt: |-
      Line one.
      Line two.
schema: 1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from dlnflow._util.files import atomic_writer
from dlnflow._util.plain import plain
from dlnflow._version import __version__
from dlnflow.core.bounded import SPEC_BYTES, BoundsError, compose_yaml, load_yaml, read_regular
from dlnflow.core.errors import InputError, LockError, Problem, WriteError
from dlnflow.core.example import Example
from dlnflow.graph.demos import demos_text, parse_demos
from dlnflow.lockfile.demos import demos_drift, demos_k_drift, lock_demos
from dlnflow.lockfile.allowlist import refused_line, split_overrides
from dlnflow.spec.loader import conflict_problems
from dlnflow.spec.overrides import apply_overrides
from dlnflow.spec.pipeline import Pipeline, lock_path_for  # noqa: F401  (part of this module's API)

SCHEMA = 1
HEADER = "# dlnflow lock file: learned prompts and what they were learned with. Commit it with the spec.\n"
_SECRET_KEYS = ("api_key", "apikey", "secret", "password", "authorization", "token", "access_token")


# -- plain values ------------------------------------------------------------------------------
def public_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """A model identity without anything that looks like a secret.

    >>> public_identity({"backend": "openai", "api_key": "sk-1", "model": "m"})
    {'backend': 'openai', 'model': 'm'}
    """
    return {k: plain(v) for k, v in identity.items() if k.lower() not in _SECRET_KEYS}


# -- building ----------------------------------------------------------------------------------
def _learned_prompt(learned: dict[str, str], name: str, default: str) -> str:
    return learned.get(f"{name}.prompt", learned.get(name, default))


def _data_entry(pipeline: Pipeline, digest: str, source: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"sha256": digest, "source": source, "split": plain(pipeline.data.split)}
    if pipeline.data.labels:
        entry["labels"] = dict(pipeline.data.labels)
    return entry


def build_lock(
    pipeline: Pipeline, model_identities: dict[str, dict[str, Any]], data_digest: str, data_source: str,
    learned: dict[str, str], metrics: dict[str, Any], run: dict[str, Any],
    calibration: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The lock as plain data. ``learned`` maps ``"<layer>.prompt"`` (or ``"<layer>"``) to prompts;
    layers it does not name keep their current prompt. ``calibration`` maps a layer name to its
    ``{method, prior}`` (see :func:`dlnflow.graph.calibration.lock_entry`)."""
    names = {layer.name for layer in pipeline.graph}
    unknown = sorted(k for k in learned if k.removesuffix(".prompt").removesuffix(".demos") not in names)
    if unknown:
        raise ValueError(f"learned prompts for layers that do not exist: {', '.join(unknown)}")
    layers: dict[str, Any] = {}
    for layer in pipeline.graph:
        entry: dict[str, Any] = {
            "prompt": _learned_prompt(learned, layer.name, layer.prompt),
            "initial_prompt_sha256": layer.prompt_digest(),
            "template_sha256": layer.template.digest,
            "model": layer.model,
        }
        if layer.classes:
            entry["classes"] = list(layer.classes)
        if calibration and calibration.get(layer.name):
            entry["calibration"] = plain(calibration[layer.name])
        if layer.learns_demos:
            entry["demos"] = lock_demos(learned.get(f"{layer.name}.demos"), layer.demos)
        layers[layer.name] = entry
    return {
        "schema": SCHEMA,
        "dlnflow": __version__,
        "spec": pipeline.spec_path.name,
        "layers": layers,
        "models": {name: public_identity(identity) for name, identity in model_identities.items()},
        "data": _data_entry(pipeline, data_digest, data_source),
        "loss": pipeline.loss,
        "train": plain(pipeline.train.hyperparameters()),
        "seed": pipeline.train.seed,
        "metrics": plain(metrics),
        "run": plain(run),
    }


# -- writing -----------------------------------------------------------------------------------
class _LockDumper(yaml.SafeDumper):
    """Block style; multi-line strings as literal blocks; never anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LockDumper.add_representer(str, _represent_str)


def dump_lock(lock: dict[str, Any]) -> str:
    """The lock's text: a header comment, then sorted block YAML."""
    body = yaml.dump(plain(lock), Dumper=_LockDumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=1_000_000, indent=2)
    return HEADER + body


def _write_all(handle: BinaryIO, data: bytes) -> None:
    handle.write(data)


def write_lock(path: Path, lock: dict[str, Any]) -> None:
    """Write ``lock`` to ``path`` atomically: the old file stays whole if anything fails."""
    path = Path(path)
    data = dump_lock(lock).encode("utf-8")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        with atomic_writer(path, mode) as handle:
            _write_all(handle, data)
    except OSError as exc:
        raise WriteError.from_os(path, exc) from None


# -- reading -----------------------------------------------------------------------------------
def _locate(text: str, pointer: list[str]) -> tuple[int, int]:
    """1-based (line, col) of the node at ``pointer`` (or of its nearest existing parent)."""
    try:
        node = compose_yaml(text)
    except (yaml.YAMLError, BoundsError):
        return 1, 1
    mark = node.start_mark if node is not None else None
    for key in pointer:
        if not isinstance(node, yaml.MappingNode):
            break
        found = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]
        if not found:
            break
        node = found[0]
        mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _lock_error(
    path: Path, text: str, pointer: list[str], message: str, hint: str | None = None,
    at: tuple[int, int] | None = None,
) -> LockError:
    line, col = at or _locate(text, pointer)
    problem = Problem(str(path), line, col, "/" + "/".join(pointer) if pointer else "", message, hint=hint)
    where = f"{path}:{line}:{col}" if line else str(path)
    exc = LockError(f"{where}: {message}" + (f" ({hint})" if hint else ""))
    exc.problems = [problem]  # type: ignore[attr-defined]
    return exc


def _expect(path: Path, text: str, value: Any, pointer: list[str], kind: type, what: str) -> None:
    if not isinstance(value, kind):
        found = "nothing" if value is None else type(value).__name__
        raise _lock_error(path, text, pointer, f"expected {what}, found {found}",
                          "delete the lock and train again to rewrite it")


def _validate(path: Path, text: str, lock: Any) -> dict[str, Any]:
    _expect(path, text, lock, [], dict, "a mapping")
    _validate_demos(path, text, lock)
    if lock.get("schema") != SCHEMA:
        raise _lock_error(path, text, ["schema"], f"lock schema {lock.get('schema')!r} is not supported "
                          f"(this dlnflow reads schema {SCHEMA})", "train again to rewrite the lock")
    for key in ("layers", "models", "data", "train"):
        _expect(path, text, lock.get(key), [key], dict, f'a "{key}" mapping')
    for name, entry in lock["layers"].items():
        _expect(path, text, entry, ["layers", str(name)], dict, f'a mapping for layer "{name}"')
        _expect(path, text, entry.get("prompt"), ["layers", str(name), "prompt"], str, "a prompt string")
        if "calibration" in entry:
            where = ["layers", str(name), "calibration"]
            _expect(path, text, entry["calibration"], where, dict, "a calibration mapping (method, prior)")
            _expect(path, text, entry["calibration"].get("method"), [*where, "method"], str, "a method name")
            _expect(path, text, entry["calibration"].get("prior"), [*where, "prior"], list,
                    "a list of class probabilities")
    for name, entry in lock["models"].items():
        _expect(path, text, entry, ["models", str(name)], dict, f'a mapping for model "{name}"')
    if "split" in lock["data"]:
        _expect(path, text, lock["data"]["split"], ["data", "split"], dict, 'a "split" mapping')
    _validate_sweep(path, text, lock)
    return lock


def _validate_demos(path: Path, text: str, lock: dict[str, Any]) -> None:
    layers = lock.get("layers")
    for name, entry in (layers.items() if isinstance(layers, dict) else []):
        if isinstance(entry, dict) and "demos" in entry:
            try:
                parse_demos(entry["demos"])
            except LockError as exc:
                raise _lock_error(path, text, ["layers", str(name), "demos"], str(exc),
                                  "delete the lock and train again to rewrite it") from None


def _validate_sweep(path: Path, text: str, lock: dict[str, Any]) -> None:
    if "sweep" not in lock:
        return
    sweep = lock["sweep"]
    _expect(path, text, sweep, ["sweep"], dict, 'a "sweep" mapping')
    if "best" in sweep:
        _expect(path, text, sweep["best"], ["sweep", "best"], dict, 'a "best" mapping')
        if "overrides" in sweep["best"]:
            _expect(path, text, sweep["best"]["overrides"], ["sweep", "best", "overrides"], dict,
                    'an "overrides" mapping')


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock at ``path``; ``None`` when there is none; :class:`LockError` (located) when corrupt."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return None
    try:
        text = read_regular(path, SPEC_BYTES).decode("utf-8")
    except BoundsError as exc:
        raise _lock_error(path, "", [], f"cannot read the lock file: {exc.reason}", exc.hint, at=(0, 0)) from None
    except UnicodeDecodeError as exc:
        raise _lock_error(path, "", [], f"lock file is not UTF-8 (byte offset {exc.start})") from None
    if not text.strip():
        raise _lock_error(path, text, [], "lock file is empty", "delete it or train again to rewrite it")
    _check_conflicts(path, text)
    try:
        lock = load_yaml(text)
    except BoundsError as exc:
        raise _lock_error(path, "", [], f"lock file refused: {exc.reason}",
                          exc.hint or "restore it from version control or train again",
                          at=(exc.line or 1, exc.col or 1)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        reason = getattr(exc, "problem", None) or str(exc)
        raise _lock_error(path, "", [], f"lock file is not valid YAML: {reason}",
                          "restore it from version control or train again", at=(line, col)) from None
    return _validate(path, text, lock)


def _check_conflicts(path: Path, text: str) -> None:
    """Refuse a lock that still holds git merge-conflict markers, naming the first conflict."""
    conflicts = conflict_problems(text, str(path))
    if conflicts:
        first = conflicts[0]
        raise _lock_error(path, text, [], f"lock file has an {first.message}",
                          "keep one side (or delete the lock and train again), then remove the "
                          "<<<<<<<, ======= and >>>>>>> lines", at=(first.line, first.col))


def learned_state(lock: dict[str, Any]) -> dict[str, str]:
    """The lock's prompts as ``{"<layer>.prompt": prompt}`` (and ``{"<layer>.demos": JSON text}`` for
    layers that learned demonstrations) for :meth:`Graph.load_state`."""
    out = {}
    for name, entry in lock.get("layers", {}).items():
        out[f"{name}.prompt"] = entry["prompt"]
        if "demos" in entry:
            out[f"{name}.demos"] = demos_text(parse_demos(entry["demos"]))
    return out


def calibration_entries(lock: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The lock's calibration records by layer name (``{method, prior}``; layers without one left out)."""
    return {name: entry["calibration"] for name, entry in lock.get("layers", {}).items()
            if isinstance(entry, dict) and isinstance(entry.get("calibration"), dict)}


# -- drift -------------------------------------------------------------------------------------
def _short(value: Any) -> str:
    text = repr(value)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        text = repr(value[:12] + "...")
    return text


def _changes(prefix: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    missing = object()
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            shown_a = "(absent)" if a is missing else _short(a)
            shown_b = "(absent)" if b is missing else _short(b)
            lines.append(f"{prefix}{key}: {shown_a} -> {shown_b}")
    return lines


def _layer_drift(pipeline: Pipeline, locked: dict[str, Any]) -> list[str]:
    lines = []
    current = {layer.name: layer for layer in pipeline.graph}
    for name in sorted(set(locked) - set(current)):
        lines.append(f"layer {name!r} was removed since the lock was written")
    for name in [n for n in current if n not in locked]:
        lines.append(f"layer {name!r} was added since the lock was written")
    for name, layer in current.items():
        entry = locked.get(name)
        if entry is None:
            continue
        if entry.get("template_sha256") != layer.template.digest:
            lines.append(f"template of layer {name!r} changed")
        if entry.get("initial_prompt_sha256") != layer.prompt_digest():
            lines.append(f"initial prompt of layer {name!r} changed")
        if entry.get("model") != layer.model:
            lines.append(f"model of layer {name!r}: {entry.get('model')!r} -> {layer.model!r}")
        classes = list(layer.classes) if layer.classes else None
        if entry.get("classes") != classes:
            lines.append(f"output classes of layer {name!r}: {entry.get('classes')} -> {classes}")
        locked_method = (entry.get("calibration") or {}).get("method", "none")
        if classes and locked_method != layer.calibration:
            lines.append(f"calibration of layer {name!r}: {locked_method!r} -> {layer.calibration!r}"
                         + (" (the locked prior is not used)" if locked_method != "none" else ""))
        lines += demos_k_drift(name, entry, layer.demo_k)
    return lines


def _model_drift(pipeline: Pipeline, locked: dict[str, Any], identities: dict[str, dict[str, Any]]) -> list[str]:
    used = {layer.model for layer in pipeline.graph} | {pipeline.backward_model}
    lines = []
    for name in sorted(used):
        if name not in identities:
            continue
        if name not in locked:
            lines.append(f"model {name!r} is not in the lock")
            continue
        old, new = plain(locked[name]), public_identity(identities[name])
        lines += [f"model {name!r} identity changed: {line}" for line in _changes("", old, new)]
    return lines


def sweep_section(lock: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``sweep`` block a sweep writes into its lock (``None`` for other locks)."""
    sweep = lock.get("sweep") if isinstance(lock, Mapping) else None
    return dict(sweep) if isinstance(sweep, Mapping) else None


def best_run_of(lock: Mapping[str, Any] | None) -> tuple[str, int | None, dict[str, Any]] | None:
    """``(run folder name, seed, overrides)`` of a sweep lock's best run; ``None`` for other locks."""
    sweep = sweep_section(lock)
    best = sweep.get("best") if isinstance(sweep, Mapping) else None
    if not isinstance(best, Mapping):
        return None
    overrides = best.get("overrides")
    seed = best.get("seed")
    return (str(best.get("run", "?")), seed if isinstance(seed, int) else None,
            dict(overrides) if isinstance(overrides, Mapping) else {})


def _sweep_view(pipeline: Pipeline, lock: dict[str, Any]) -> tuple[Pipeline, list[str]]:
    """``pipeline`` with the allowed settings of a sweep's best run applied (unchanged for other locks),
    and lines naming what could not be applied (settings a lock may not set, or that no longer fit)."""
    found = best_run_of(lock)
    overrides = found[2] if found is not None else None
    if not overrides:
        return pipeline, []
    applied, training, refused = split_overrides(overrides, pipeline.spec)
    lines = [refused_line(refused)] if refused else []
    try:
        return apply_overrides(pipeline, {**applied, **training}), lines
    except InputError as exc:
        return pipeline, [*lines, f"the settings of the sweep's best run no longer fit the spec: {exc}"]


def drift(
    pipeline: Pipeline, lock: dict[str, Any], model_identities: dict[str, dict[str, Any]], data_digest: str,
    train: Sequence[Example] | None = None,
) -> list[str]:
    """Human lines naming what changed since ``lock`` was written (empty: the lock matches).

    Models missing from ``model_identities`` are not compared (the caller may not want to
    load them); everything else is: layers, templates, initial prompts, models, data, loss
    and every hyperparameter. With the ``train`` split given, every locked demonstration must still
    be one of its examples, by id and text (:func:`dlnflow.lockfile.demos.demos_drift`). A lock
    written by a sweep is compared with the spec as its best run saw it (the run's seed and grid
    settings applied).
    """
    pipeline, problems = _sweep_view(pipeline, lock)
    if any("no longer fit" in p for p in problems):
        return problems
    lines = problems + _layer_drift(pipeline, lock.get("layers", {}))
    lines += _model_drift(pipeline, lock.get("models", {}), model_identities)
    data = lock.get("data", {})
    if data.get("sha256") != data_digest:
        lines.append(f"data changed: sha256 {_short(data.get('sha256'))} -> {_short(data_digest)}")
    lines += _changes("data split ", data.get("split", {}), plain(pipeline.data.split))
    if data.get("labels") != (dict(pipeline.data.labels) if pipeline.data.labels else None):
        lines.append("data labels mapping changed")
    if lock.get("loss") != pipeline.loss:
        lines.append(f"loss: {lock.get('loss')!r} -> {pipeline.loss!r}")
    lines += _changes("hyperparameter ", lock.get("train", {}), plain(pipeline.train.hyperparameters()))
    if train is not None:
        lines += demos_drift(lock.get("layers", {}), train)
    return lines
