"""Export a compiled pipeline and its learned prompts as a DSPy program.

``dlnflow export SPEC --to dspy OUT`` writes ``OUT/program.py`` (a module that needs only
``dspy`` and the standard library), ``OUT/program.json`` (the instructions as plain data, so
a diff shows prompt changes) and ``OUT/README.md`` (how to run it, and what the mapping
leaves out). This module decides *what* is exported (:func:`plan_export`) and writes the
files (:func:`export_dspy`); :mod:`dlnflow.export.program` turns the plan into Python.

Each layer becomes one ``dspy.Signature`` whose instruction is the learned prompt (from the
lock file beside the spec when there is one, else the spec's prompt), with one input field
per layer input and one output field named after the layer; the ``dspy.Module`` chains the
predictors in the graph's order. A layer's learned demonstrations are written into its instruction,
after the learned prompt, as dlnflow renders them (:meth:`Layer.instruction_text`). The program
carries its own adapter, which renders every prompt exactly as dlnflow's forward template does.
To make sure of that, the exporter turns each template into a list of parts (literal text, the
prompt, an input, the labelled inputs block) and renders both ways on sample inputs before
writing (:func:`check_rendering`); a template that cannot be expressed that way (filters,
conditions, loops of its own) is an error located at its ``/layers/<i>/template`` (:mod:`dlnflow.export.templates`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import keyword
import os
from pathlib import Path
from typing import Any

from dlnflow._util.files import write_atomic
from dlnflow._version import __version__
from dlnflow.backends.openai.settings import OpenAISettings
from dlnflow.core.backend import shares_prefix
from dlnflow.core.errors import InputError, LockError, SpecError, WriteError
from dlnflow.export.plan import ExportPlan, ExportResult, LayerPlan
from dlnflow.export.program import render_program
from dlnflow.export.readme import render_readme
from dlnflow.export.runtime import RENDERING
from dlnflow.export.templates import Unmappable, template_parts
from dlnflow.graph.calibration import load_fixed_priors
from dlnflow.graph.layers import INPUT, Layer
from dlnflow.lockfile import lock as lockmod
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.loader import load_document
from dlnflow.spec.pipeline import Pipeline

FILES = ("program.py", "program.json", "README.md")
EMBEDDED_MODEL_NAME = "gemma-3-270m"
DEFAULT_TOP_LOGPROBS = 20
_NO_COUNTERPART = ("n_ctx", "concurrency", "n_threads", "n_batch", "price")
# Names a DSPy field (and the predictor attribute and local variable of the same name) cannot
# take: Python keywords, the names the generated forward() uses, and attributes of DSPy's
# Signature, Module, Predict and Prediction classes and of pydantic models (DSPy 3.4).
_DSPY_NAMES = """
    self dspy adapter acall aforward append append_instructions batch callbacks completions config construct
    copy deepcopy delete demos dict dump_state equals fields forward from_completions from_orm get get_config
    get_criteria get_lm get_lm_usage history input_fields inputs insert inspect_history instructions items
    json keys labels lm load load_state map_named_predictors named_parameters named_predictors
    named_sub_modules output_fields parameters parse_file parse_obj parse_raw predictors prepend reset
    reset_copy save schema schema_json set_criteria set_lm set_lm_usage signature stage traces train
    update_config update_forward_refs validate values with_inputs with_instructions with_updated_fields
    without"""
RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(_DSPY_NAMES.split())


# -- planning ----------------------------------------------------------------------------------
def field_names(names: list[str]) -> dict[str, str]:
    """DSPy field name per layer: the layer's name unless DSPy or Python reserve it.

    >>> field_names(["think", "schema", "model_a"])
    {'think': 'think', 'schema': 'layer_schema', 'model_a': 'layer_model_a'}
    """
    out: dict[str, str] = {INPUT: INPUT}
    for name in names:
        candidate = name
        while candidate in RESERVED or candidate.startswith("model_") or candidate in out.values():
            candidate = "layer_" + candidate
        out[name] = candidate
    del out[INPUT]
    return out


def _decoding(layer: Layer, read: str) -> dict[str, Any]:
    if read == "score":  # what dlnflow's openai backend asks for: one token, greedy
        return {"max_tokens": 1, "temperature": 0.0}
    if read == "label":  # a token never has fewer than one character, so this covers the longest class
        longest = max(len(c) for c in layer.classes or ("",))
        return {"max_tokens": longest + 2, "temperature": 0.0, "stop": sorted({*layer.decoding.stop, "\n"})}
    d = layer.decoding
    return {"max_tokens": d.max_tokens, "temperature": float(d.temperature), "top_p": float(d.top_p),
            "stop": list(d.stop)}


def _model_data(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The model as the program needs it; no key, only the name of its variable."""
    if settings.get("backend", "llamacpp") == "openai":
        s = OpenAISettings.parse(settings)
        return {"backend": "openai", "model": s.model, "base_url": s.endpoint, "api_key_env": s.api_key_env,
                "chat": s.chat, "extra_body": dict(s.extra_body), "timeout": s.timeout, "max_retries": s.max_retries,
                "top_logprobs": s.n_top}
    path = settings.get("path")
    model = Path(path).stem if isinstance(path, str) else EMBEDDED_MODEL_NAME
    return {"backend": "llamacpp", "model": model, "base_url": None, "api_key_env": None, "chat": False,
            "extra_body": {}, "timeout": 60.0, "max_retries": 5, "top_logprobs": DEFAULT_TOP_LOGPROBS}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_instructions(pipeline: Pipeline) -> tuple[str | None, str | None, list[str]]:
    """Put the lock's prompts into the graph; return (lock file name, its sha256, drift lines)."""
    path = pipeline.lock_path
    data = lockmod.read_lock(path)
    if data is None:
        return None, None, []
    try:
        pipeline.graph.load_state(lockmod.learned_state(data), strict=True)
    except LockError as exc:
        raise LockError(f"{_shown(path)}: {exc}; train again to rewrite the lock") from None
    load_fixed_priors(pipeline.graph, lockmod.calibration_entries(data))
    digest = str((data.get("data") or {}).get("sha256", ""))
    drifted = lockmod.drift(pipeline, data, {}, digest)  # models and data are not compared here
    return path.name, _sha256(path), [f"{path.name} drifted from the spec: {line}" for line in drifted]


def _spec_index(pipeline: Pipeline, name: str) -> int:
    layers = pipeline.spec.get("layers") or []
    return next((i for i, s in enumerate(layers) if isinstance(s, dict) and s.get("name") == name), 0)


def _layer_plan(pipeline: Pipeline, layer: Layer, fields: dict[str, str], file: str | None) -> LayerPlan:
    index = _spec_index(pipeline, layer.name)
    try:
        parts = template_parts(layer.template, layer.inputs)
    except Unmappable as exc:
        raise _located(pipeline, file, f"/layers/{index}/template", f"layer {layer.name!r}: the template cannot be "
                       f"exported to DSPy: {exc}", "use a built-in template (forward, hidden_forward, "
                       "classify_forward) or plain {{ prompt }} and {{ <input> }} substitutions") from None
    read = "text"
    if layer.classes:
        read = "label" if shares_prefix(layer.verbalizers) else "score"
    return LayerPlan(
        name=layer.name, index=index, field=fields[layer.name],
        fields={n: INPUT if n == INPUT else fields[n] for n in layer.inputs},
        template=layer.template.name or "inline", parts=parts, instruction=layer.instruction_text(), read=read,
        classes=tuple(layer.classes) if layer.classes else None, model=layer.model,
        decoding=_decoding(layer, read), trainable=layer.trainable,
    )


def _located(pipeline: Pipeline, file: str | None, ptr: str, message: str, hint: str) -> SpecError:

    doc = load_document(pipeline.spec_path, file or _shown(pipeline.spec_path))
    return SpecError([doc.problem(ptr, message, hint=hint)])


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _warnings(pipeline: Pipeline, layers: list[LayerPlan], models: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    raw = pipeline.spec.get("models") or {}
    for name in sorted(models):
        given = [k for k in _NO_COUNTERPART if k in (raw.get(name) or {})]
        if given:
            out.append(f"model {name!r}: {', '.join(given)} have no DSPy counterpart and are not exported "
                       "(set threads, batch and context size on the server; prompts are never shortened)")
    used = sorted({plan.model for plan in layers})
    if len(used) > 1:
        out.append(f"layers use {len(used)} models ({', '.join(used)}); the program runs every layer on the "
                   "configured LM unless you give a predictor its own: program.<layer>.lm = make_lm(..., "
                   "spec_model=...)")
    out += calibration_warnings(pipeline)
    for layer in pipeline.graph:
        if layer.learns_demos and not layer.demos:
            out.append(f"layer {layer.name!r} learns demonstrations, but no lock holds them yet: the program is "
                       "exported without them (train first)")
        if layer.demos:
            out.append(f"layer {layer.name!r}: its {len(layer.demos)} learned demonstrations are written into its "
                       "instruction, after the learned prompt, exactly as dlnflow renders them (plain text, not "
                       "DSPy demos: DSPy optimizers that replace demos will not see them as demos)")
    for plan in layers:
        if plan.read == "label":
            out.append(f"layer {plan.name!r}: its classes share their first characters, so they are read from "
                       "the start of a short greedy completion; dlnflow scores each whole class instead, and "
                       "the two can disagree")
        if plan.read == "text" and plan.decoding["temperature"] > 0:
            out.append(f"layer {plan.name!r} samples at temperature {plan.decoding['temperature']:g}: dlnflow "
                       "seeds every sample from the run seed; DSPy sends no seed and caches one answer per prompt")
    return out


def calibration_warnings(pipeline: Pipeline) -> list[str]:
    """A warning for each calibrated classifier: the exported program cannot calibrate."""
    out = []
    for layer in pipeline.graph:
        if not layer.classes or layer.calibration == "none":
            continue
        if layer.prior is not None:
            prior = ", ".join(f"{c}={p:.4g}" for c, p in zip(layer.classes, layer.prior, strict=True))
            held = f"the lock's prior ({prior}) is not applied"
        else:
            held = "no prior is applied"
        out.append(f"layer {layer.name!r} uses calibration {layer.calibration!r} in dlnflow, but the exported "
                   f"program cannot calibrate: it picks the class the model rates most probable, and {held}, so "
                   "its answers can differ from 'dlnflow run'")
    return out


def plan_export(pipeline: Pipeline, file: str | None = None) -> ExportPlan:
    """What to export for ``pipeline``, with the lock's prompts loaded into its graph when present.

    ``file`` is how located messages name the spec (default: its path relative to the working
    folder). Raises :class:`SpecError` (located) for a template the program cannot reproduce and
    :class:`~dlnflow.core.errors.LockError` for a lock that does not fit the graph.
    """
    lock_file, lock_sha, drift_lines = _load_instructions(pipeline)
    fields = field_names([layer.name for layer in pipeline.graph])
    layers = [_layer_plan(pipeline, layer, fields, file) for layer in pipeline.graph]
    used = sorted({layer.model for layer in pipeline.graph})
    models = {name: _model_data(name, pipeline.models[name]) for name in used}
    plan = ExportPlan(pipeline.name, pipeline.spec_path.name, _sha256(pipeline.spec_path), lock_file, lock_sha,
                      layers, models)
    plan.warnings = drift_lines + _warnings(pipeline, layers, models)
    check_rendering(plan, pipeline, file)
    return plan


# -- the rendering check -------------------------------------------------------------------------
SAMPLES = (
    "sparrow",
    "two lines\nof input text",
    "  spaced out  ",
    "{{ braces }} and {% percent %} and a trailing newline\n",
)


def exported_renderer(plan: ExportPlan) -> Any:
    """The ``render_prompt`` function the program ships, bound to this plan's layers."""

    scope: dict[str, Any] = {"Any": Any, "Sequence": list, "LAYERS": {p.name: p.data() for p in plan.layers}}
    exec(compile(RENDERING, "<exported rendering>", "exec"), scope)  # our own fixed source, not user input
    return scope["render_prompt"]


def check_rendering(plan: ExportPlan, pipeline: Pipeline, file: str | None = None) -> None:
    """Render every layer with dlnflow's template and with the exported code; they must agree."""
    render = exported_renderer(plan)
    for plan_layer in plan.layers:
        layer = pipeline.graph.layer(plan_layer.name)
        for k, sample in enumerate(SAMPLES):
            values = {name: f"{sample} ({name})" for name in layer.inputs}
            prompt = layer.prompt if k % 2 == 0 else SAMPLES[-1 - k]
            if render(layer.name, values, layer.instruction_text(prompt)) != layer.render(values, prompt=prompt):
                raise _located(pipeline, file, f"/layers/{plan_layer.index}/template",
                               f"layer {layer.name!r}: the exported program would not render this template "
                               "exactly as dlnflow does", "use a built-in template or plain substitutions")


# -- writing -------------------------------------------------------------------------------------
def program_json(plan: ExportPlan) -> dict[str, Any]:
    """The instructions and how they were made, as plain data."""
    return {
        "format": 1,
        "dlnflow": __version__,
        "name": plan.name,
        "spec": {"file": plan.spec_file, "sha256": plan.spec_sha256},
        "lock": {"file": plan.lock_file, "sha256": plan.lock_sha256} if plan.lock_file else None,
        "instructions_from": plan.instructions_from,
        "output": plan.output.name,
        "layers": [{"name": p.name, "parameter": f"{p.name}.prompt", "instruction": p.instruction,
                    "inputs": list(p.fields), "field": p.field, "template": p.template, "read": p.read,
                    "classes": list(p.classes) if p.classes else None, "model": p.model, "trainable": p.trainable}
                   for p in plan.layers],
        "models": plan.models,
        "warnings": plan.warnings,
    }


def render_files(plan: ExportPlan) -> dict[str, str]:
    """File name -> text of every exported file (the same plan always gives the same bytes)."""


    return {
        "program.py": render_program(plan),
        "program.json": json.dumps(program_json(plan), indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        "README.md": render_readme(plan),
    }


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose a folder for the exported program")
    if out.is_dir() and any(out.iterdir()) and not force:
        entries = sorted(p.name for p in out.iterdir())
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise InputError(f"{out} is not empty ({shown}); choose an empty folder, or pass --force to "
                         f"overwrite {', '.join(FILES)} there")


def export_dspy(spec: str | Path, out: str | Path, force: bool = False) -> ExportResult:
    """Compile ``spec``, plan the export and write :data:`FILES` into the folder ``out``.

    Nothing is written when the spec, the lock or a template is refused, nor when ``out``
    is a non-empty folder and ``force`` is false (:class:`~dlnflow.core.errors.InputError`, exit 2).
    """

    pipeline = compile_spec(spec)
    plan = plan_export(pipeline, str(spec))
    texts = render_files(plan)
    folder = Path(out)
    _check_out(folder, force)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            write_atomic(folder / name, texts[name], mode=0o644)
    except OSError as exc:
        raise WriteError.from_os(folder, exc, "choose a folder you can write to") from None
    return ExportResult(folder, tuple(folder / name for name in FILES), plan)


def dspy_available() -> bool:
    """Whether ``dspy`` can be imported here (without importing it)."""
    return importlib.util.find_spec("dspy") is not None
