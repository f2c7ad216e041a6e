"""Rewrite and posterior requests stop where the backward templates' answer ends."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from helpers import TWO_LAYERS, standin, write_spec  # noqa: F401
from standin import StandIn

from dlnflow.cli import cli
from dlnflow.graph.templates import BACKWARD_LIBRARY, BACKWARD_STOPS, backward_stops


def test_every_stop_is_a_label_of_its_own_template() -> None:
    assert set(BACKWARD_STOPS) == set(BACKWARD_LIBRARY)
    for name, stops in BACKWARD_STOPS.items():
        for stop in stops:
            assert stop == "\n\n" or stop.lstrip("\n") in BACKWARD_LIBRARY[name], (name, stop)


def test_layer_stops_come_first_and_are_not_repeated() -> None:
    stops = backward_stops("posterior", ("\nAnswer:", "###"))
    assert stops[:2] == ("\nAnswer:", "###") and stops.count("\nAnswer:") == 1


def test_training_sends_the_stops(standin: StandIn, tmp_path: Path) -> None:  # noqa: F811
    spec = write_spec(tmp_path, method="vi", layers=TWO_LAYERS)
    result = CliRunner().invoke(cli, ["--json", "train", str(spec)])
    assert result.exit_code == 0, result.output
    sampled = [r for r in standin.log if r.op == "generate" and r.temperature > 0]
    posterior = [r for r in sampled if "The correct final answer is:" in r.prompt]
    rewrites = [r for r in sampled if r.prompt.startswith("You improve instructions for a language model.")]
    hidden = [r for r in sampled if "writes intermediate reasoning" in r.prompt]
    assert posterior and rewrites and hidden
    # the hidden layer's own stops (the default blank line) first, and its own max_tokens
    assert all(r.stop == backward_stops("posterior", ("\n\n",)) and r.max_tokens == 8 for r in posterior)
    assert all(r.stop == backward_stops("rewrite") for r in rewrites)
    assert all(r.stop == backward_stops("hidden_rewrite") for r in hidden)
