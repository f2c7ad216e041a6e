"""Run the dlnflow CLI in a child process with the stand-in model in place of every backend.

Used by tests that need a real process to kill (crash-resume) without loading a real model.
Each stand-in call sleeps a little so that a kill can land in the middle of a run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers import colour_rules  # noqa: E402
from standin import StandIn  # noqa: E402


class SlowStandIn(StandIn):
    def run(self, requests):  # type: ignore[no-untyped-def]
        time.sleep(0.003 * len(requests))
        return super().run(requests)


def main() -> None:
    import dlnflow.training.network
    from dlnflow.cli import main as cli_main

    model = colour_rules(SlowStandIn())
    dlnflow.training.network.make_backend = lambda settings, base: model  # type: ignore[assignment]
    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
