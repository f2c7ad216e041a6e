"""From a spec file to a runnable :class:`~dlnflow.spec.pipeline.Pipeline`.

:func:`compile_spec` loads the file (:mod:`dlnflow.spec.loader`), validates it against the JSON
Schema, then checks what a schema cannot see: that layers are wired to names that exist,
form no cycle, use templates that exist and parse and only use variables the layer
receives, refer to models that exist, and that data files are where the spec says. Every
problem is collected and raised together as one :class:`~dlnflow.core.errors.SpecError`,
each located at the offending text.

The checks run even when the schema found problems, so one run reports everything; they
skip whatever the schema already rejected (a ``template`` that is not a text, say).
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from dlnflow.core.bounded import BoundsError, read_regular
from dlnflow._util.pointers import escape
from dlnflow._util.suggest import did_you_mean
from dlnflow.core.errors import Problem, SpecError, TemplateError
from dlnflow.graph.calibration import DEFAULT as CALIBRATION_DEFAULT
from dlnflow.graph.layers import INPUT, Decoding, Graph, Layer
from dlnflow.graph.templates import FORWARD_VARIABLES, Template
from dlnflow.spec.document import Document, sort_problems
from dlnflow.spec.loader import load_document, schema, schema_problems, text_problems, validator
from dlnflow.spec.messages import problems_from_errors
from dlnflow.spec.pipeline import Pipeline
from dlnflow.spec.settings import (
    BudgetSettings,
    DataSettings,
    ExperimentSettings,
    SplitSettings,
    TrainSettings,
)
from dlnflow.spec.wiring import Wiring

IMPLICIT_MODELS: dict[str, dict[str, Any]] = {"local": {"backend": "llamacpp"}}
ORDERED_PROMPT_FILES = ("train.jsonl", "dev_subsample.jsonl", "test.jsonl")
_TEMPLATE_LINE = re.compile(r"on template line (\d+)")

__all__ = ["IMPLICIT_MODELS", "build_pipeline", "check_document", "compile_spec", "load_document"]


def compile_spec(path: str | Path, file: str | None = None) -> Pipeline:
    """Load, validate and check the spec at ``path``; build its :class:`Pipeline`.

    ``file`` is how messages name the file (default: ``path`` as given). Raises
    :class:`SpecError` with every problem found.
    """
    doc = load_document(path, file)
    problems = sort_problems([*doc.problems, *text_problems(doc), *schema_problems(doc), *check_document(doc)])
    if problems:
        raise SpecError(problems)
    return build_pipeline(doc)


# -- helpers over possibly invalid data ------------------------------------------------------
def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def model_names(data: dict[str, Any]) -> list[str]:
    """The spec's model names (the implicit ``local`` one when ``models`` is absent)."""
    if "models" not in data:
        return list(IMPLICIT_MODELS)
    return list(_dict(data["models"]))


def default_template(layer: dict[str, Any], is_last: bool) -> str:
    """The built-in template a layer gets when it names none."""
    if "output" in layer:
        return "classify_forward"
    return "forward" if is_last else "hidden_forward"


# -- semantic checks ---------------------------------------------------------------------------
class _Checker:
    """Collects the problems a schema cannot express."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.problems: list[Problem] = []
        self.wiring = Wiring.from_spec(self.data.get("layers"))

    def add(self, ptr: str, message: str, key: bool = False, hint: str | None = None) -> None:
        self.problems.append(self.doc.problem(ptr, message, key=key, hint=hint))

    def run(self) -> list[Problem]:
        self.problems.extend(self.wiring.problems(self.doc))
        self.check_templates()
        self.check_models()
        self.check_data()
        self.check_train()
        self.check_grid()
        return self.problems

    # templates ---------------------------------------------------------------------------
    def check_templates(self) -> None:
        for i, layer in self.wiring.layers:
            value = layer.get("template")
            if value is None or not isinstance(value, str):
                continue
            ptr = f"/layers/{i}/template"
            try:
                template = Template.from_spec(value)
            except TemplateError as exc:
                self.template_error(ptr, str(exc))
                continue
            inputs = self.wiring.inputs_of(layer)
            allowed = sorted(FORWARD_VARIABLES | set(inputs))
            name = layer.get("name", f"#{i}")
            unknown = sorted(template.variables - set(allowed))
            for var in unknown:
                self.add(ptr, f"the template uses {{{{ {var} }}}}, which layer {name!r} does not receive"
                         + did_you_mean(var, allowed), hint="it receives: " + ", ".join(allowed))
            if template.name is None and not unknown and not template.variables & ({"inputs"} | set(inputs)):
                self.add(ptr, f"the template never shows layer {name!r} its inputs",
                         hint="use {{ inputs }} or the input names, e.g. {{ " + (inputs or ["x"])[0] + " }}")
            if not unknown:
                self.trial_render(ptr, template, inputs)
            trains = layer.get("trainable", True) is not False
            if template.name is None and "prompt" not in template.variables and trains:
                self.add(ptr, "the template never uses {{ prompt }}, so training cannot change layer "
                         f"{name!r}", hint="add {{ prompt }} or set trainable: false")

    def trial_render(self, ptr: str, template: Template, inputs: list[str]) -> None:
        """Render once with stand-in texts, so errors that only show at run time surface now."""
        sample = {name: f"<{name}>" for name in inputs}
        try:
            template.render(prompt="<prompt>", inputs=list(sample.items()), **sample)
        except TemplateError as exc:
            self.add(ptr, f"the template fails when rendered: {exc}")

    def template_error(self, ptr: str, message: str) -> None:
        m = _TEMPLATE_LINE.search(message)
        line, _ = self.doc.locate(ptr)
        if m and self.doc.styles.get(ptr) == "|":
            at = line + int(m.group(1))
            source = self.doc.source_line(at) or ""
            col = len(source) - len(source.lstrip()) + 1
            self.problems.append(Problem(self.doc.file, at, col, ptr, message, source))
            return
        self.add(ptr, message)

    # models ------------------------------------------------------------------------------
    def check_models(self) -> None:
        names = model_names(self.data)
        for i, layer in self.wiring.layers:
            ref = layer.get("model")
            if isinstance(ref, str) and names and ref not in names:
                self.add(f"/layers/{i}/model", f"no model named {ref!r}" + did_you_mean(ref, names),
                         hint="models in this spec: " + ", ".join(names))
            elif ref is None and len(names) > 1:
                message = (f"layer {layer.get('name')!r} does not say which model to use, and the spec "
                           f"defines {len(names)}")
                self.add(f"/layers/{i}", message, key=True, hint=f"add 'model: {names[0]}' to the layer")
        backward = _dict(self.data.get("train")).get("backward_model")
        if isinstance(backward, str) and names and backward not in names:
            self.add("/train/backward_model", f"no model named {backward!r}" + did_you_mean(backward, names),
                     hint="models in this spec: " + ", ".join(names))
        for name, model in _dict(self.data.get("models")).items():
            path = _dict(model).get("path")
            if isinstance(path, str) and _dict(model).get("backend", "llamacpp") == "llamacpp":
                resolved = self.doc.base_dir / path
                if not resolved.is_file():
                    self.add(f"/models/{escape(name)}/path", f"model file not found: {path}",
                             hint=f"looked for {resolved}; paths are relative to the spec file")

    # data --------------------------------------------------------------------------------
    def check_data(self) -> None:
        data = _dict(self.data.get("data"))
        self.check_labels(data)
        fmt, path = data.get("format"), data.get("path")
        if not isinstance(path, str) or not path or fmt == "task":
            return
        resolved = self.doc.base_dir / path
        where = f"looked for {resolved}; paths are relative to the spec file"
        if fmt == "ordered_prompt":
            if not resolved.is_dir():
                self.add("/data/path", f"data folder not found: {path}", hint=where)
                return
            missing = [f for f in ORDERED_PROMPT_FILES if not (resolved / f).is_file()]
            if missing:
                self.add("/data/path", f"the data folder has no {', '.join(missing)}",
                         hint="format ordered_prompt needs " + ", ".join(ORDERED_PROMPT_FILES))
        elif resolved.is_dir():
            self.add("/data/path", f"{path} is a folder; format {fmt!r} reads one file")
        elif not resolved.is_file():
            message, hint = _missing_file(resolved, path, where)
            self.add("/data/path", message, hint=hint)

    def check_labels(self, data: dict[str, Any]) -> None:
        classes = self.wiring.output_classes()
        labels = data.get("labels")
        if not classes or not isinstance(labels, dict):
            return
        for raw, word in labels.items():
            if isinstance(word, str) and word not in classes:
                message = f"label {raw!r} maps to {word!r}, which is not an output class"
                self.add(f"/data/labels/{escape(str(raw))}", message + did_you_mean(word, classes),
                         hint="output classes: " + ", ".join(classes))

    # train -------------------------------------------------------------------------------
    def check_train(self) -> None:
        train = _dict(self.data.get("train"))
        method = train.get("method", "dln1")
        n = len(self.wiring.layers)
        if method == "vi" and 0 < n < 2:
            self.add("/train/method", f"method 'vi' trains hidden layers, but this spec has {n} layer",
                     hint="add a hidden layer before the output layer, or use method: dln1")
        last = self.wiring.last
        if method in ("dln1", "ape") and last is not None and last[1].get("trainable") is False:
            self.add(f"/layers/{last[0]}/trainable", f"method {method!r} trains the output layer "
                     f"{last[1].get('name')!r}, which is marked trainable: false",
                     hint="remove 'trainable: false' or use method: none")
        frozen = all(layer.get("trainable") is False for _, layer in self.wiring.layers)
        if method == "vi" and n >= 2 and frozen:
            self.add("/train/method", "method 'vi' has nothing to train: every layer is trainable: false")

    def check_grid(self) -> None:
        grid = _dict(_dict(self.data.get("experiments")).get("grid"))
        if not grid:
            return
        settings = setting_schemas(self.data)

        for key, values in grid.items():
            ptr = f"/experiments/grid/{escape(key)}"
            if key not in settings:
                self.add(ptr, f"{key!r} names no setting" + did_you_mean(key, settings), key=True,
                         hint="use a dotted setting name such as train.iterations or layers.<name>.prompt")
                continue
            check = validator().evolve(schema=settings[key])
            for j, value in enumerate(values if isinstance(values, list) else []):
                errors = list(check.iter_errors(value))
                self.problems.extend(problems_from_errors(self.doc, errors, schema(), f"{ptr}/{j}"))


def setting_schemas(data: dict[str, Any]) -> dict[str, Any]:
    """Every dotted setting a grid may vary, mapped to its schema.

    >>> keys = setting_schemas({"layers": [{"name": "a"}]})
    >>> [k for k in keys if k.startswith("layers.a.generate")]  # doctest: +NORMALIZE_WHITESPACE
    ['layers.a.generate.max_tokens', 'layers.a.generate.temperature', 'layers.a.generate.top_p',
     'layers.a.generate.stop']
    """
    root = schema()
    defs = root["$defs"]
    out: dict[str, Any] = {"loss": root["properties"]["loss"]}
    _leaves("data", defs["data"], out)
    _leaves("train", defs["train"], out)
    layers = data.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and isinstance(layer.get("name"), str):
            _leaves(f"layers.{layer['name']}", defs["layer"], out, skip=frozenset({"name"}))
    for name in model_names(data):
        _leaves(f"models.{name}", defs["model"], out)
    return out


def _leaves(prefix: str, node: dict[str, Any], out: dict[str, Any], skip: frozenset[str] = frozenset()
            ) -> None:
    for key, sub in node.get("properties", {}).items():
        if key in skip or not isinstance(sub, dict):
            continue
        if sub.get("type") == "object" and "properties" in sub:
            _leaves(f"{prefix}.{key}", sub, out)
        else:
            out[f"{prefix}.{key}"] = sub


def check_document(doc: Document) -> list[Problem]:
    """The problems of ``doc`` that the JSON Schema cannot see."""
    if not isinstance(doc.data, dict):
        return []
    return _Checker(doc).run()


# -- building ----------------------------------------------------------------------------------
def _model_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """A model's settings with the schema defaults of its backend filled in."""
    model_schema = schema()["$defs"]["model"]
    backend = settings.get("backend", "llamacpp")
    branch = model_schema["allOf"][0]["then" if backend == "openai" else "else"]
    out = dict(settings)
    for key, sub in model_schema["properties"].items():
        if "default" in sub and branch["properties"].get(key) is not False:
            out.setdefault(key, sub["default"])
    return out


def _layer(spec: dict[str, Any], is_last: bool, models: list[str]) -> Layer:
    generate = dict(_dict(spec.get("generate")))
    if "stop" in generate:
        generate["stop"] = tuple(generate["stop"])
    output = _dict(spec.get("output"))
    classes = output.get("classes")
    demos = _dict(spec.get("demos"))
    return Layer(
        name=spec["name"],
        inputs=tuple(spec.get("inputs", [INPUT])),
        template=Template.from_spec(spec.get("template") or default_template(spec, is_last)),
        prompt=spec.get("prompt", ""),
        model=spec.get("model") or models[0],
        trainable=spec.get("trainable", True),
        decoding=Decoding(**generate),
        classes=tuple(classes) if classes else None,
        calibration=output.get("calibration", CALIBRATION_DEFAULT),
        demo_k=int(demos.get("k", 0)),
        demo_seed=demos.get("seed"),
    )


def _data(spec: dict[str, Any], base_dir: Path) -> DataSettings:
    task = spec.get("task")
    if task is not None:
        task = {"size": 300, "seed": 0, **task}
    return DataSettings(
        format=spec["format"],
        path=(base_dir / spec["path"]).resolve() if spec.get("path") else None,
        input=spec.get("input", "input"),
        target=spec.get("target", "target"),
        labels=dict(spec["labels"]) if spec.get("labels") else None,
        task=task,
        split=SplitSettings(**_dict(spec.get("split"))),
    )


def _train(spec: dict[str, Any]) -> TrainSettings:
    known = {f.name for f in fields(TrainSettings)}
    given = {k: v for k, v in spec.items() if k in known and k != "budget"}
    return TrainSettings(**given, budget=BudgetSettings(**_dict(spec.get("budget"))))


def build_pipeline(doc: Document) -> Pipeline:
    """The :class:`Pipeline` of a document that passed every check."""
    data: dict[str, Any] = doc.data
    models_spec = data.get("models", IMPLICIT_MODELS)
    names = list(models_spec)
    specs = data["layers"]
    by_name = {s["name"]: _layer(s, i == len(specs) - 1, names) for i, s in enumerate(specs)}
    order = Wiring.from_spec(specs).order()
    experiments = _dict(data.get("experiments"))
    return Pipeline(
        name=data["name"],
        spec_path=doc.path.resolve(),
        graph=Graph([by_name[n] for n in order], name=data["name"]),
        models={name: _model_defaults(_dict(m)) for name, m in models_spec.items()},
        data=_data(data["data"], doc.base_dir),
        loss=data.get("loss", "exact_match"),
        train=_train(_dict(data.get("train"))),
        experiments=ExperimentSettings(
            seeds=tuple(experiments.get("seeds", ())),
            grid={k: list(v) for k, v in _dict(experiments.get("grid")).items()},
            executor=str(experiments.get("executor", "local")),
            jobs=int(experiments.get("jobs", 1)),
            address=experiments.get("address"),
        ),
        spec=data,
    )


def _missing_file(resolved: Path, path: str, where: str) -> tuple[str, str]:
    """``(message, hint)`` for a data path that is not a regular file: missing, a device, a FIFO, a link loop."""
    try:
        read_regular(resolved, 0)
    except BoundsError as exc:
        if exc.reason != "file not found":
            return f"data path {path}: {exc.reason}", exc.hint or where
    return f"data file not found: {path}", where
