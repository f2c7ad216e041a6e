"""The generated spec reference is up to date and complete; cookbook specs and commands are real."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from paths import ROOT

from dlnflow.cli import COMMANDS, cli
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.loader import schema
from dlnflow.spec.reference import REFERENCE_PATH, REGENERATE, anchor, render_packaged_schema, render_reference

COOKBOOK = sorted((ROOT / "docs" / "cookbook").glob("*.md"))


def test_committed_reference_matches_a_fresh_rendering() -> None:
    committed = (ROOT / REFERENCE_PATH).read_text(encoding="utf-8")
    assert committed == render_packaged_schema(), (
        f"{REFERENCE_PATH} is out of date with schemas/pipeline.schema.json; regenerate it with: {REGENERATE}"
    )


def dotted_properties(node: dict[str, Any], root: dict[str, Any], prefix: str = "") -> list[str]:
    """Every property path as the reference names it (``layers[].output.classes``...)."""
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    out = []
    for key, sub in node.get("properties", {}).items():
        if key == "$schema" and prefix:
            continue
        path = f"{prefix}{key}"
        out.append(path)
        resolved = sub
        while "$ref" in resolved:
            resolved = root["$defs"][resolved["$ref"].rsplit("/", 1)[-1]]
        if "properties" in resolved:
            out += dotted_properties(resolved, root, path + ".")
        elif isinstance(resolved.get("items"), dict):
            out += dotted_properties(resolved["items"], root, path + "[].")
        elif isinstance(resolved.get("additionalProperties"), dict):
            out += dotted_properties(resolved["additionalProperties"], root, path + ".<name>.")
    return out


def test_every_property_has_an_entry_with_its_default_and_description() -> None:
    root = schema()
    text = render_packaged_schema()
    paths = dotted_properties(root, root)
    assert len(paths) > 60
    for path in paths:
        assert f"### `{path}`" in text, path
    iterations = text.split("### `train.iterations`", 1)[1].split("###", 1)[0]
    assert "- default: `10`" in iterations
    assert "How many optimisation steps" in iterations
    assert "- one of: `dln1`, `vi`, `ape`, `fewshot`, `none`" in text
    assert "- when `backend` is `openai`: requires `model`" in text


def test_links_point_at_headings() -> None:
    text = render_packaged_schema()
    headings = {anchor(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    assert set(links) <= headings


def test_rendering_follows_the_schema() -> None:
    tiny = {"description": "Tiny.", "type": "object", "additionalProperties": False,
            "properties": {"size": {"description": "How big.", "type": "integer", "minimum": 2,
                                    "default": 3, "examples": [4]}}}
    text = render_reference(tiny)
    assert "### `size`\n\n- type: integer, at least 2\n- default: `3`\n- examples: `4`\n\nHow big." in text


# -- cookbook ------------------------------------------------------------------------------------
def blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


def test_cookbook_pages_exist() -> None:
    names = {p.name for p in COOKBOOK}
    assert {"openai.md", "local-server.md", "shared-cache.md", "lock-files-in-git.md"} <= names


@pytest.mark.parametrize("page", COOKBOOK, ids=lambda p: p.name)
def test_cookbook_specs_validate(page: Path, tmp_path: Path) -> None:
    for i, text in enumerate(b for b in blocks(page, "yaml") if b.startswith("version:")):
        spec = yaml.safe_load(text)
        data = spec["data"]
        if data.get("format") == "jsonl":
            classes = spec["layers"][-1]["output"]["classes"]
            rows = [{"input": f"example {k}", "target": c} for k in range(3) for c in classes]
            (tmp_path / data["path"]).write_text("".join(json.dumps(r) + "\n" for r in rows))
        path = tmp_path / f"spec{i}.yaml"
        path.write_text(text)
        compile_spec(path)


def command_lines(page: Path) -> list[list[str]]:
    out = []
    for block in blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("dlnflow "):
                out.append(shlex.split(line))
    return out


def options_of(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


@pytest.mark.parametrize("page", COOKBOOK, ids=lambda p: p.name)
def test_cookbook_commands_exist(page: Path) -> None:
    ctx = click.Context(cli)
    for argv in command_lines(page):
        words = argv[1:]
        known = {opt: p for p in cli.params for opt in getattr(p, "opts", [])}
        while words and words[0].startswith("-"):  # global options (with a value when they take one)
            word = words.pop(0)
            assert word in known, (page.name, argv)
            param = known[word]
            if isinstance(param, click.Option) and not param.is_flag and not param.count:
                words.pop(0)
        name = words.pop(0)
        assert name in COMMANDS, (page.name, argv)
        command = cli.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            sub = command.get_command(ctx, words.pop(0))
            assert sub is not None, (page.name, argv)
            command = sub
        for word in words:
            if word.startswith("-"):
                assert word in options_of(command), (page.name, argv, word)
