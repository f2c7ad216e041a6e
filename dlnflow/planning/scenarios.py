"""Scenarios of a dry run: what the plan assumes where the real run depends on the model's answers.

A plan runs the real trainer on placeholder answers (:mod:`dlnflow.planning.dryrun`). Where an outcome
rests on placeholders, a :class:`Scenario` decides it instead of the arbitrary placeholder scores:

- *when the prompts change*: ``never``, ``always`` (at every step), or ``alternate``: before every
  other validation (``phase`` 0 includes the last validation, 1 the one before it), at the first
  step after the validation before. A step the scenario keeps gets its old prompts back; a step
  it changes takes the best-scoring other candidate when the optimizer kept the prompt;
- *whether dev improves*: the plan follows an improvement at every validation of changed prompts,
  and :meth:`ScriptedTrainer.test_doubt` says how likely the final test is replayed after all
  (no validation improved, with probability ``(1 - improves) ** k``);
- *the share of rewrites that add no candidate* (:data:`LOST_REWRITES`, applied by
  :class:`~dlnflow.planning.backends.PlanningBackend`).

Steps and validations whose answers all came from the real cache keep their real outcome, so a
warm cache still replays the run exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dlnflow.core.backend import Backend
from dlnflow.training.trainer import Trainer

# Share of rewrite requests that add no new candidate, by backend kind. Measured for the embedded
# model (Gemma 3 270M) on its training runs: 16 of 48 rewrites in DLN-1 runs of 8 tasks x 2 seeds,
# 4 of 12 in the quickstart, 11 of 42 in DLN-2 runs; it mostly writes the instruction out again.
# Other models are assumed to write a new instruction every time.
LOST_REWRITES: dict[str, float] = {"llamacpp": 1 / 3}


@dataclass(frozen=True)
class Scenario:
    """What a plan assumes about answers it cannot know: when the prompts change (``never``,
    ``always``, or ``alternate``: before every other validation, the last one included when
    ``phase`` is 0, excluded when it is 1), how likely a validation of changed prompts improves
    the best dev score (``improves``), and the share of lost rewrites (``None``:
    :data:`LOST_REWRITES`)."""

    name: str
    changes: str
    phase: int = 0
    improves: float = 1.0
    lost_rewrites: float | None = None

    def lost_share(self, backend: Backend) -> float:
        if self.lost_rewrites is not None:
            return self.lost_rewrites
        return LOST_REWRITES.get(str(backend.identity().get("backend")), 0.0)


# The expected count is the mean of two complementary plans: together they change the prompts
# before exactly half of the validations, each validation in one of them, and a validation of
# changed prompts improves dev as often as not. What the model does cannot be known; these are
# the neutral choices, and near what the embedded model did on 8 tasks x 2 seeds: DLN-1 changed
# its prompt at 28 of 48 steps and improved dev in 8 of 16 runs, DLN-2 changed a layer's prompt
# at 13 of 24 layer-steps, APE took a new prompt in 9 of 16 runs.
EXPECTED = (Scenario("alternate-last", "alternate", 0, 0.5), Scenario("alternate-first", "alternate", 1, 0.5))
NEVER = Scenario("never", "never")
ALWAYS = Scenario("always", "always")
SCENARIOS = (*EXPECTED, NEVER, ALWAYS)


def validation_intervals(total: int, validate_every: int, iterative: bool = True) -> list[list[int]]:
    """The steps between validations (a non-iterative method decides once, as step 0).

    >>> validation_intervals(5, 2)
    [[1, 2], [3, 4], [5]]
    >>> validation_intervals(0, 2, iterative=False)
    [[0]]
    """
    if not iterative:
        return [[0]]
    every = max(validate_every, 1)
    out: list[list[int]] = [[]]
    for it in range(1, total + 1):
        out[-1].append(it)
        if (it % every == 0 or it == total) and it != total:
            out.append([])
    return [steps for steps in out if steps]


def change_steps(intervals: list[list[int]], scenario: Scenario) -> set[int]:
    """Steps at which ``scenario`` changes the prompts: the first step of each changing interval.

    >>> two = [[1, 2, 3], [4, 5, 6]]
    >>> sorted(change_steps(two, EXPECTED[0])), sorted(change_steps(two, EXPECTED[1]))
    ([4], [1])
    >>> sorted(change_steps([[1], [2], [3]], EXPECTED[0])), sorted(change_steps([[1, 2]], ALWAYS))
    ([1, 3], [1, 2])
    """
    if scenario.changes == "always":
        return {s for steps in intervals for s in steps}
    if scenario.changes == "alternate":
        return {steps[0] for back, steps in enumerate(reversed(intervals)) if back % 2 == scenario.phase}
    return set()


class _Steered:
    """An optimizer whose placeholder-decided outcomes follow the plan's scenario."""

    def __init__(self, inner: Any, trainer: ScriptedTrainer):
        self.inner = inner
        self.trainer = trainer
        self.iterative = getattr(inner, "iterative", True)

    def prepare(self) -> dict[str, Any]:
        return self.trainer.steer(0, self.inner.prepare)

    def step(self, iteration: int) -> dict[str, Any]:
        return self.trainer.steer(iteration, lambda: self.inner.step(iteration))


class ScriptedTrainer(Trainer):
    """The trainer on a planning client: where an outcome rests on placeholders, ``scenario``
    decides it. ``made_up()`` counts placeholder answers so far (to tell real outcomes apart);
    nothing is written (no lock, no run folder)."""

    def __init__(self, net: Any, scenario: Scenario, made_up: Callable[[], int]):
        super().__init__(net, write_lock=False, record=False)
        self.scenario = scenario
        self.made_up = made_up
        self.intervals: list[list[int]] = []
        self.changes: set[int] = set()
        self.decided: set[int] = set()
        self.improved = 0
        self.iterative = True
        self.final_test: dict[str, tuple[int, int, int]] = {}
        self._dev: dict[str, float] = {}

    def _loop(self, optimizer: Any, *args: Any) -> Any:
        t = self.net.pipeline.train
        steered = _Steered(optimizer, self)
        self.iterative = steered.iterative
        self.intervals = validation_intervals(t.iterations, t.validate_every, steered.iterative)
        self.changes = change_steps(self.intervals, self.scenario)
        return super()._loop(steered, *args)

    def steer(self, step: int, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        graph = self.net.pipeline.graph
        before, made = graph.state(), self.made_up()
        record = call()
        if self.made_up() == made:  # every answer was real: keep the real outcome
            return record
        self.decided.add(step)
        change = step in self.changes
        for name, info in (record.get("layers") or {}).items():
            layer, old = graph.layer(name), before[f"{name}.prompt"]
            if not change:
                layer.prompt = old
                if f"{name}.demos" in before:  # a layer's demonstrations stay with its prompt
                    graph.load_state({**graph.state(), f"{name}.demos": before[f"{name}.demos"]})
            elif layer.prompt == old and graph.state().get(f"{name}.demos") == before.get(f"{name}.demos"):
                others = [(c["score"], c["prompt"]) for c in info["candidates"] if c["prompt"] != old]
                if others:
                    layer.prompt = max(others)[1]
        return record

    def _spent(self) -> dict[str, tuple[int, int, int]]:
        return {m: (u.backend_calls, u.prompt_tokens, u.completion_tokens)
                for m, u in self.net.client.per_model.items()}

    def _evaluate(self, split: str) -> float:
        made, spent = self.made_up(), self._spent()
        accuracy = super()._evaluate(split)
        if split == "test":  # the last one is the final test, with the best-dev prompts
            after = self._spent()
            self.final_test = {m: tuple(a - b for a, b in zip(v, spent.get(m, (0, 0, 0)), strict=True))
                               for m, v in after.items()}  # type: ignore[misc]
        if split != "dev":
            return accuracy
        state = json.dumps(self.net.pipeline.graph.state(), sort_keys=True)
        if self.made_up() == made:
            self._dev[state] = accuracy
        elif state not in self._dev:  # new prompts judged on placeholders: the plan follows an improvement
            self.improved += bool(self._dev)  # (the first evaluation is the one before training)
            self._dev[state] = max(self._dev.values(), default=0.0) + 1.0
        return self._dev[state]

    def test_doubt(self) -> float:
        """How likely the final test is replayed after all: no validation of changed prompts improved dev.

        The plan followed an improvement at each of them; with ``improves < 1`` none happens with
        probability ``(1 - improves) ** k``, and then the best-dev prompts are the ones evaluated
        before, whose test calls the run already made (a non-iterative method keeps its prompts
        whatever dev says).
        """
        if not self.iterative or not self.improved:
            return 0.0
        return (1.0 - self.scenario.improves) ** self.improved

    def validations(self) -> tuple[int, int]:
        """``(changed, planned)``: validation intervals the plan decided, and how many of them change."""
        planned = [steps for steps in self.intervals if self.decided.intersection(steps)]
        return sum(1 for steps in planned if self.changes.intersection(steps)), len(planned)

