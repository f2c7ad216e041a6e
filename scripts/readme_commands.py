"""Print the shell commands of named README sections, in the README's order.

``.ci/run`` runs what this prints, so CI follows the README as a newcomer would: install, the
quickstart and everything else in its section, then the test command.

    python3 scripts/readme_commands.py "Install" "Quickstart: train a prompt" "Run the tests"
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)


def sections(text: str) -> dict[str, str]:
    """``## Title`` -> the text up to the next ``## `` heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def commands(text: str, titles: list[str]) -> list[str]:
    """The lines of every bash block in the sections named ``titles`` (in that order), comments dropped."""
    found = sections(text)
    out: list[str] = []
    for title in titles:
        if title not in found:
            raise SystemExit(f"README.md has no section '## {title}'")
        for block in FENCE.findall(found[title]):
            for line in block.splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                if line and not line.startswith("#"):
                    out.append(line)
    return out


if __name__ == "__main__":
    print("\n".join(commands(README.read_text(encoding="utf-8"), sys.argv[1:])))
