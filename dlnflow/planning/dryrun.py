"""Dry runs: how many calls and tokens a training run will need, without calling a model.

The real training algorithm runs against a *planning* client (:mod:`dlnflow.planning.backends`):
its cache view answers from the real call cache where it can (those calls are free) and never
writes to it; every other request gets a placeholder answer and counts as a new call. Because
the algorithm itself runs, everything that follows from its structure is counted as the real
run will count it: candidates that coincide (the current prompt, example-carrying candidates,
remembered prompts) are scored once, requests repeated within the run are cache hits, shown
examples are dropped until a backward request fits the context.

What a placeholder cannot know is what the model would answer. Three things decide most of the
count, and the plan states what it assumes for each (:meth:`Plan.notes`;
:mod:`dlnflow.planning.scenarios` has the details):

1. *When the prompts change.* A changed prompt makes the next batch and the next dev validation
   new calls; an unchanged one is replayed from the cache. The headline is the mean of two
   complementary plans that change the prompts before every other validation (one includes the
   last validation, the other the one before), so together they change before exactly half.
   The range is planned too: prompts that *never* change, and prompts that change at *every* step.
2. *Whether dev improves.* Only an improvement makes the final test evaluation new calls; a
   validation of changed prompts is assumed to improve dev as often as not.
3. *Rewrites that add no candidate* (the backward model repeats the instruction or writes
   nothing usable): a stated share per backward model, :data:`LOST_REWRITES`.

Repeated posterior texts (DLN-2) are not assumed: every sample counts as distinct.

The plan decides only steps and validations whose answers are placeholders: where every answer
comes from the real cache the run is replayed as it happened, so a warm cache gives an exact
prediction (0 new calls when everything is cached).

Token counts use the backend's own ``count_tokens``; generated texts count half their
``max_tokens``. For the embedded model the dry run reads only the GGUF vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlnflow.core.backend import Backend
from dlnflow.data.dataset import Dataset
from dlnflow.planning.backends import PlanCache, PlanningBackend, VocabOnlyLlama, light_backend
from dlnflow.planning.scenarios import ALWAYS, EXPECTED, LOST_REWRITES, NEVER, SCENARIOS, Scenario, ScriptedTrainer
from dlnflow.runtime.client import Client, Usage
from dlnflow.spec.pipeline import Pipeline

__all__ = ["EXPECTED", "LOST_REWRITES", "Plan", "PlanCache", "PlanningBackend", "RunPlan", "Scenario",
           "VocabOnlyLlama", "light_backend", "pipeline_facts", "plan_network", "plan_pipeline", "plan_run",
           "scenario_caches"]


# -- planning one run -------------------------------------------------------------------------------
@dataclass
class RunPlan:
    """The predicted work of one run. ``new_*``: calls that would reach a model; ``cached_*``:
    distinct calls answered by the cache as it is now; ``cache_hits``: lookups the run's client will
    count as hits (cached calls plus repeats of calls made earlier in the run); ``calls_never`` /
    ``calls_always``: new calls if the prompts never change / change at every step;
    ``validations``: (with changed prompts, decided by the plan); ``rewrites``: (lost, asked)."""

    label: str
    new_calls: int = 0
    new_prompt_tokens: int = 0
    new_completion_tokens: int = 0
    completion_tokens_max: int = 0
    cached_calls: int = 0
    cached_tokens: int = 0
    cache_hits: int = 0
    overflows: int = 0
    skipped: bool = False
    calls_never: int | None = None
    calls_always: int | None = None
    validations: tuple[float, int] = (0, 0)
    rewrites: tuple[int, int] = (0, 0)
    method: str = ""
    per_model: dict[str, Usage] = field(default_factory=dict)
    completion_max_per_model: dict[str, int] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.new_calls == 0

    def predicted(self) -> dict[str, Any]:
        """The numbers a finished run reports, as predicted (stored in its summary)."""
        out = {"backend_calls": self.new_calls, "cache_hits": self.cache_hits,
               "prompt_tokens": self.new_prompt_tokens, "completion_tokens": self.new_completion_tokens,
               "completion_tokens_max": self.completion_tokens_max, "exact": self.exact}
        if self.calls_never is not None and self.calls_always is not None:
            out["backend_calls_range"] = [self.calls_never, self.calls_always]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "skipped": self.skipped, "exact": self.exact,
                "new": {"calls": self.new_calls, "prompt_tokens": self.new_prompt_tokens,
                        "completion_tokens": self.new_completion_tokens,
                        "completion_tokens_max": self.completion_tokens_max,
                        "calls_if_prompts_never_change": self.calls_never,
                        "calls_if_prompts_change_every_step": self.calls_always},
                "cached": {"calls": self.cached_calls, "tokens": self.cached_tokens},
                "cache_hits": self.cache_hits, "context_overflows": self.overflows,
                "assumed": {"validations_with_new_prompts": list(self.validations),
                            "rewrites_lost": list(self.rewrites)}}


def _half(a: int, b: int) -> int:
    return (a + b + 1) // 2


def mean_plan(a: RunPlan, b: RunPlan) -> RunPlan:
    """The mean of two plans of the same run (counts rounded up)."""
    numbers = ("new_calls", "new_prompt_tokens", "new_completion_tokens", "completion_tokens_max", "cached_calls",
               "cached_tokens", "cache_hits", "overflows")
    models = set(a.per_model) | set(b.per_model)
    usage = {m: Usage(**{k: _half(getattr(a.per_model.get(m, Usage()), k), getattr(b.per_model.get(m, Usage()), k))
                         for k in vars(Usage())}) for m in models}
    return RunPlan(
        a.label, **{k: _half(getattr(a, k), getattr(b, k)) for k in numbers},
        validations=((a.validations[0] + b.validations[0]) / 2, max(a.validations[1], b.validations[1])),
        rewrites=(_half(a.rewrites[0], b.rewrites[0]), _half(a.rewrites[1], b.rewrites[1])), method=a.method,
        per_model=usage, completion_max_per_model={m: _half(a.completion_max_per_model.get(m, 0),
                                                            b.completion_max_per_model.get(m, 0)) for m in models})


@dataclass
class _PlanNet:
    """What the trainer needs from a network, with the planning client in place of the real one."""

    pipeline: Pipeline
    client: Client
    dataset: Dataset


def plan_pipeline(label: str, pipeline: Pipeline, dataset: Dataset, models: Mapping[str, Backend],
                  cache: PlanCache, probe: bool = True, scenario: Scenario = EXPECTED[0]) -> RunPlan:
    """Run training on ``pipeline`` against placeholders under one ``scenario``; the graph's prompts
    are restored afterwards."""
    planners = {name: PlanningBackend(b, probe, scenario.lost_share(b)) for name, b in models.items()}
    client = Client(dict(planners), cache, "use")  # type: ignore[arg-type]
    state = pipeline.graph.state()
    real_before = len(cache.real)
    tokens_before = cache.real_prompt_tokens + cache.real_completion_tokens

    def made_up() -> int:
        return cache.made_up + sum(p.answered for p in planners.values())

    trainer = ScriptedTrainer(_PlanNet(pipeline, client, dataset), scenario, made_up)
    try:
        trainer.fit()
    finally:
        pipeline.graph.load_state(state)
    per_model = _discounted(client.per_model, trainer.final_test, trainer.test_doubt())
    total = sum(u.backend_calls for u in per_model.values())
    return RunPlan(
        label=label, new_calls=total, new_prompt_tokens=sum(u.prompt_tokens for u in per_model.values()),
        new_completion_tokens=sum(u.completion_tokens for u in per_model.values()),
        completion_tokens_max=sum(p.completion_max for p in planners.values()),
        cached_calls=len(cache.real) - real_before,
        cached_tokens=cache.real_prompt_tokens + cache.real_completion_tokens - tokens_before,
        cache_hits=client.usage.cache_hits + (client.usage.backend_calls - total if cache.remember else 0),
        overflows=sum(p.overflows for p in planners.values()), validations=trainer.validations(),
        rewrites=(sum(p.lost for p in planners.values()), sum(p.rewrites for p in planners.values())),
        method=pipeline.train.method, per_model=per_model,
        completion_max_per_model={name: p.completion_max for name, p in planners.items()},
    )


def _discounted(per_model: Mapping[str, Usage], final_test: Mapping[str, tuple[int, int, int]],
                doubt: float) -> dict[str, Usage]:
    """``per_model`` less the expected share (``doubt``) of the final test's new calls and tokens."""
    out = {}
    for m, u in per_model.items():
        calls, prompt, completion = (round(doubt * n) for n in final_test.get(m, (0, 0, 0)))
        out[m] = dataclasses.replace(u, backend_calls=u.backend_calls - calls, prompt_tokens=u.prompt_tokens - prompt,
                                     completion_tokens=u.completion_tokens - completion)
    return out


def scenario_caches(store: Any, remember: bool = True) -> dict[str, PlanCache]:
    """One cache view per scenario (each remembers its own placeholders across a sweep's runs)."""
    return {s.name: PlanCache(store, remember=remember) for s in SCENARIOS}


def plan_run(label: str, pipeline: Pipeline, dataset: Dataset, models: Mapping[str, Backend],
             caches: Mapping[str, PlanCache], probe: bool = True, bounds: bool = True) -> RunPlan:
    """The expected plan of one run (the mean of the two :data:`EXPECTED` scenarios), with the new
    calls of the ``never``/``always`` scenarios when ``bounds``."""
    def one(s: Scenario) -> RunPlan:
        return plan_pipeline(label, pipeline, dataset, models, caches[s.name], probe, s)

    plan = mean_plan(*(one(s) for s in EXPECTED))
    if bounds:
        plan.calls_never, plan.calls_always = one(NEVER).new_calls, one(ALWAYS).new_calls
    return plan


def plan_network(net: Any, label: str = "run", bounds: bool = True) -> RunPlan:
    """Plan ``net``'s training with its own (loaded) backends and cache, just before training it."""
    client = net.client
    use = net.cache_mode == "use"
    caches = scenario_caches(client.cache if use else None, remember=use)
    return plan_run(label, net.pipeline, net.dataset, client.models, caches, bounds=bounds)


# -- a whole plan ---------------------------------------------------------------------------------
def _cost(tokens: Mapping[str, tuple[int, int]], prices: Mapping[str, Mapping[str, float]]) -> float | None:
    """Money for ``{model: (prompt tokens, completion tokens)}`` at ``prices`` (``None`` without prices)."""
    used = {m: t for m, t in tokens.items() if t != (0, 0)}
    if not used or any(m not in prices for m in used):
        return None
    return sum(p / 1000 * float(prices[m].get("prompt_per_1k", 0.0))
               + c / 1000 * float(prices[m].get("completion_per_1k", 0.0)) for m, (p, c) in used.items())


def _pair(runs: list[RunPlan], name: str) -> tuple[float, int]:
    return sum(getattr(r, name)[0] for r in runs), sum(int(getattr(r, name)[1]) for r in runs)


@dataclass
class Plan:
    """The plans of every run of a command, with what their numbers depend on."""

    runs: list[RunPlan]
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    backends: set[str] = field(default_factory=set)
    early_stopping: bool = False

    def total(self, name: str) -> int:
        return sum(int(getattr(r, name) or 0) for r in self.runs)

    @property
    def calls_range(self) -> tuple[int, int] | None:
        """New calls if the prompts never change / change at every step (``None`` when not planned)."""
        live = [r for r in self.runs if not r.skipped and not r.exact]
        if any(r.calls_never is None or r.calls_always is None for r in live):
            return None
        return sum(int(r.calls_never or 0) for r in live), sum(int(r.calls_always or 0) for r in live)

    def cost(self) -> dict[str, float | None]:
        new: dict[str, tuple[int, int]] = {}
        worst: dict[str, tuple[int, int]] = {}
        for r in self.runs:
            for m, u in r.per_model.items():
                p, c = new.get(m, (0, 0))
                new[m] = (p + u.prompt_tokens, c + u.completion_tokens)
                p, c = worst.get(m, (0, 0))
                worst[m] = (p + u.prompt_tokens, c + r.completion_max_per_model.get(m, 0))
        return {"new": _cost(new, self.prices), "new_max": _cost(worst, self.prices)}

    @property
    def exact(self) -> bool:
        return self.total("new_calls") == 0

    def _assumptions(self) -> list[str]:
        live = [r for r in self.runs if not r.skipped and not r.exact]
        changed, planned = _pair(live, "validations")
        lost, asked = _pair(live, "rewrites")
        out = ["estimate: the training algorithm ran on placeholder answers, so what follows from its "
               "structure is counted as the run counts it (candidates that coincide are scored once, "
               "repeated requests are cache hits); what the model would answer is assumed:"]
        span = self.calls_range
        alt = f" (range: {span[0]} if they never change, {span[1]} if they change at every step)" if span else ""
        out.append(f"assumed: the prompts change before half of the validations the plan decides ({changed:g} of "
                   f"{planned}: the mean of two plans that change them before every other validation, one "
                   "starting with the last, one with the one before), at the first step after the previous "
                   "validation, so dev is evaluated again; each such validation improves dev as often as not, "
                   f"and only an improvement makes the final test new calls{alt}")
        if asked:
            out.append(f"assumed: {lost} of {asked} rewrites add no new candidate (the backward model repeats "
                       "the instruction or writes nothing usable): one in three for the embedded model, as "
                       "measured on its training runs; none for other models")
        if any(r.method == "vi" for r in live):
            out.append("not assumed: posterior texts that repeat one another are scored once, so DLN-2 may need "
                       "fewer calls than planned")
        if self.early_stopping:
            out.append("early stopping (patience) follows the assumed dev results")
        return out

    def notes(self) -> list[str]:
        out: list[str] = []
        if self.exact:
            out.append("every call the training needs is already cached: it replays for free (exact)")
        else:
            out += self._assumptions()
            out.append("generated texts are counted at half their max_tokens; at most "
                       f"{self.total('completion_tokens_max')} completion tokens")
        if "llamacpp" in self.backends:
            out.append("the embedded model was not loaded: tokens were counted with its vocabulary only")
        if "openai" in self.backends:
            out.append("tokens of remote models are estimated from text length; the server was not asked "
                       "whether it can score (assumed yes, except for chat endpoints)")
        if self.total("overflows"):
            out.append(f"{self.total('overflows')} request(s) would not fit the model's context window")
        if not self.prices and not self.exact:
            out.append("no models.<name>.price in the spec: no cost computed")
        return out

    def as_dict(self) -> dict[str, Any]:
        span = self.calls_range
        return {
            "dry_run": True, "exact": self.exact,
            "new": {"calls": self.total("new_calls"), "calls_range": list(span) if span else None,
                    "prompt_tokens": self.total("new_prompt_tokens"),
                    "completion_tokens": self.total("new_completion_tokens"),
                    "completion_tokens_max": self.total("completion_tokens_max")},
            "cached": {"calls": self.total("cached_calls"), "tokens": self.total("cached_tokens")},
            "cache_hits": self.total("cache_hits"), "cost": self.cost(),
            "runs": [r.as_dict() for r in self.runs], "notes": self.notes(),
        }

    def text(self) -> str:
        d = self.as_dict()
        new, cached = d["new"], d["cached"]
        lines = [f"dry run ({len(self.runs)} run{'s' if len(self.runs) != 1 else ''}; no model was called):"]
        if len(self.runs) > 1:
            for r in self.runs:
                what = "finished, skipped" if r.skipped else f"{r.new_calls} new, {r.cached_calls} cached"
                lines.append(f"  {r.label}: {what}")
        span = new["calls_range"]
        alt = f" (expected; range {span[0]}-{span[1]})" if span and not self.exact else ""
        lines += [
            f"backend calls: {new['calls']} new{alt}, {cached['calls']} already cached (free)",
            f"new tokens: {new['prompt_tokens']} prompt + {new['completion_tokens']} completion "
            f"(completion at most {new['completion_tokens_max']})",
            f"cached tokens (free): {cached['tokens']}",
        ]
        cost = d["cost"]
        if cost["new"] is not None:
            lines.append(f"cost of new calls: {cost['new']:.4f} (at most {cost['new_max']:.4f})")
        lines += [f"note: {n}" for n in d["notes"]]
        return "\n".join(lines)


def pipeline_facts(pipeline: Pipeline) -> tuple[dict[str, dict[str, float]], set[str]]:
    """The spec's price table and backend kinds."""
    models = pipeline.models
    prices = {name: dict(m["price"]) for name, m in models.items() if isinstance(m.get("price"), dict)}
    return prices, {str(m.get("backend", "llamacpp")) for m in pipeline.models.values()}
