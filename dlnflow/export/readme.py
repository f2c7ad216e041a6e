"""The ``README.md`` written beside an exported DSPy program: how to run it, and the limits of the mapping."""

from __future__ import annotations

from dlnflow._version import __version__
from dlnflow.export.plan import ExportPlan
from dlnflow.export.program import DEFAULT_API_BASE, class_name

READS = {
    "text": "its completion, stripped",
    "score": "the most probable class among the next token's alternatives",
    "label": "the class a short greedy completion starts with",
}

LIMITS = """\
## What the mapping keeps

- **Prompts, exactly.** `DlnflowAdapter` renders each layer's prompt with the same text as
  dlnflow's forward template (the exporter rendered both on sample inputs and compared them
  before writing), and `CompletionsEngine` sends it to the server unchanged. DSPy's own text
  mode would add a marker after every prompt; the learned instructions never saw one.
- **Decoding.** Each layer keeps its `max_tokens`, `temperature`, `top_p` and `stop` settings;
  hidden texts are stripped, as dlnflow strips them.
- **Classification by probability.** dlnflow does not let a classifier write its answer: it
  compares the probability of each class. The program asks the server for one token with its
  most likely alternatives (as dlnflow's `openai` backend does) and picks the most probable
  class. A class missing from those alternatives is left out of the comparison; when none is
  there the call fails with `AdapterParseError` instead of guessing.

## Limits

- **Same model, different runtime.** A spec on the embedded backend (`llamacpp`) computes
  probabilities inside dlnflow; here they come from a server. Serving the same GGUF gives the
  same greedy tokens and nearly the same probabilities, but a server that reuses the cached
  start of an earlier prompt can shift them slightly, so a near tie or a long hidden text can
  come out differently now and then.
- **DSPy's adapters.** `use_dspy_adapter=True` (or `--dspy-adapter`) formats prompts with the
  adapter DSPy is configured with (ChatAdapter by default, with JSONAdapter as its fallback).
  The learned instructions were optimised for dlnflow's template, not for those formats, and a
  small base model often does not answer in the field format they parse: expect parse errors
  and lower accuracy. Give that mode more `max_tokens` (`make_lm(..., max_tokens=...)`).
- **Demos.** dlnflow's templates have no place for worked examples, so `DlnflowAdapter`
  refuses a predictor that has demos (from `BootstrapFewShot`, say); switch to DSPy's adapter
  for those. Optimizers that only change instructions (COPRO, MIPROv2 without demos) work:
  the new instruction goes into the same template.
- **Not exported:** the training state (candidate prompts, the optimizer's memory of best
  prompts, posterior hidden texts and their weights), the backward templates that write new
  prompts and hidden texts (rewrite, posterior, hidden rewrite), the loss, the data and its
  splits, metrics (they stay in the lock file), the call cache (DSPy keeps its own), budgets,
  and seeds of sampled layers. Prompts too long for the model's context are not shortened.
"""


def _run_section(plan: ExportPlan) -> str:
    model = plan.models[plan.default_model]
    if model["backend"] == "llamacpp":
        serve = (
            f"The spec runs `{plan.default_model}` inside dlnflow (llama.cpp). Serve the same GGUF file with an\n"
            "OpenAI-compatible server, for instance llama.cpp's own:\n\n"
            "```bash\n"
            f"python -m llama_cpp.server --model path/to/model.gguf --model_alias {model['model']} "
            "--host 127.0.0.1 --port 8000\n"
            "```\n\n"
            "(dlnflow's embedded model file: `python -c \"from dlnflow.backends.llamacpp.backend import "
            "embedded_model_path; print(embedded_model_path())\"`.)\n"
        )
        base = DEFAULT_API_BASE
    else:
        serve = (f"The spec's model `{plan.default_model}` is `{model['model']}` at `{model['base_url']}`; "
                 f"the key is read from `${model['api_key_env']}`.\n")
        base = model["base_url"]
    cls = class_name(plan.name)
    return (
        "## Run it\n\n"
        + serve
        + "\nThen, with DSPy 3.4 or later installed (`pip install dspy`, or `pip install -e '.[dspy]'` in a\n"
        "dlnflow checkout):\n\n"
        "```bash\n"
        f'python program.py --api-base {base} "some input"\n'
        f'python program.py --json "some input"      # every layer\'s text\n'
        "```\n\n"
        "From Python:\n\n"
        "```python\n"
        "import dspy\n"
        f"from program import {cls}, make_lm\n\n"
        f"program = {cls}()\n"
        f'with dspy.context(lm=make_lm(api_base="{base}")):\n'
        '    prediction = program(x="some input")\n'
        f"print(prediction.{plan.output.field})\n"
        "```\n\n"
        "`make_lm` builds a `dspy.LM` (text completions, greedy by default) with its own engine;\n"
        "extra keyword arguments go to `dspy.LM` (`cache=False`, `num_retries=...`).\n"
    )


def _layers_section(plan: ExportPlan) -> str:
    rows = ["| layer | inputs | template | answer read as | instruction |", "|---|---|---|---|---|"]
    for p in plan.layers:
        first = (p.instruction.strip().splitlines() or [""])[0].replace("|", "\\|")
        short = first if len(first) <= 70 else first[:67] + "..."
        rows.append(f"| `{p.name}` | {', '.join(p.fields)} | {p.template} | {READS[p.read]} | {short} |")
    tail = "\n\nThe full instructions are in `program.json` and at the top of `program.py`.\n"
    return "## Layers\n\n" + "\n".join(rows) + tail


def _warnings_section(plan: ExportPlan) -> str:
    if not plan.warnings:
        return "## Warnings for this export\n\nNone: every setting of this spec has a counterpart in the program.\n"
    return "## Warnings for this export\n\n" + "".join(f"- {w}\n" for w in plan.warnings)


def render_readme(plan: ExportPlan) -> str:
    """The export's README: origin, files, how to run it, layers, warnings and limits."""
    source = (f"the learned prompts in `{plan.lock_file}`" if plan.lock_file
              else f"the prompts written in `{plan.spec_file}` (no lock file was beside it)")
    head = (
        f"# {plan.name}: exported to DSPy\n\n"
        f"Written by `dlnflow export --to dspy` (dlnflow {__version__}) from `{plan.spec_file}`; the\n"
        f"instructions are {source}. Re-export after training instead of editing these files.\n\n"
        "- `program.py`: the network as a DSPy module; needs only `dspy` and the standard library.\n"
        "- `program.json`: the instructions per layer, with their dlnflow parameter names and the\n"
        "  sha256 of the spec and the lock, so a diff shows what training changed.\n"
        "- `README.md`: this file.\n"
    )
    sections = [head, _run_section(plan), _layers_section(plan), _warnings_section(plan), LIMITS]
    return "\n".join(s.rstrip("\n") + "\n" for s in sections)
