"""Render docs/spec-reference.md from the pipeline JSON Schema.

Usage (from the project root)::

    python scripts/render_spec_reference.py           # write the file
    python scripts/render_spec_reference.py --check   # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlnflow.spec.reference import REFERENCE_PATH, REGENERATE, render_packaged_schema

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the file differs")
    args = parser.parse_args(argv)
    target = ROOT / REFERENCE_PATH
    fresh = render_packaged_schema()
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != fresh:
            print(f"{REFERENCE_PATH} is out of date; run: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{REFERENCE_PATH} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(fresh, encoding="utf-8")
    print(f"wrote {REFERENCE_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
