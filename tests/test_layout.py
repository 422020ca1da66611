"""The package's shape: no import circle at module level, imports inside functions only in the CLI, every stage a
folder (the layers themselves are import-linter's contract in pyproject.toml, run by .ci/run)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "medablate"


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = ["medablate", *path.relative_to(SRC).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> tuple[set[str], list[int]]:
    """Project modules imported at module level, and the lines of project imports inside functions."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    top: set[str] = set()
    inner: list[int] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        return [f"{base}.{a.name}" for a in node.names] + [base]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                hits = [t for t in targets(child) if t in modules and t != name]
                if hits and in_function:
                    inner.append(child.lineno)
                elif not in_function:
                    top.update(hits)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return top, inner


def test_no_import_circle_and_function_imports_only_in_the_cli() -> None:
    modules = _modules()
    graph, inner = {}, {}
    for name, path in modules.items():
        graph[name], lines = _imports(path, name, modules)
        if lines and name != "medablate.cli":
            inner[name] = lines
    assert not inner, f"project imports inside functions outside cli.py: {inner}"
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = cycle_from(nxt, [*path, nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            circle = cycle_from(start, [start])
            assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_flat_package_is_gone() -> None:
    """Only the CLI, the errors and the package's marker sit at the top; every stage is a folder."""
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert top == ["__init__.py", "cli.py", "errors.py"], top


def test_commands_check_their_arguments_before_loading_torch_matplotlib_or_scipy(tmp_path: Path) -> None:
    """A wrong path is answered from the file system alone: nothing heavy is imported first."""
    import subprocess
    import sys

    probe = ("import sys\nfrom medablate.cli import app\n"
             "try:\n    app(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
             "heavy = sorted(m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules)\n"
             "print('exit', code, 'heavy', heavy)\n")
    for args in (["compare", "/nonexistent"], ["report", "/nonexistent"], ["status", "/nonexistent"],
                 ["run", str(tmp_path / "missing.yaml")], ["evaluate", "/nonexistent"],
                 ["predict", "/nonexistent", "x.png"]):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        assert result.stdout.strip().endswith("exit 2 heavy []"), (args, result.stdout, result.stderr[-500:])


def test_the_readme_layout_names_every_stage_folder() -> None:
    """README's layout section lists exactly the package's top-level folders and modules."""
    readme = (SRC.parent.parent / "README.md").read_text()
    block = readme.split("    src/medablate/\n", 1)[1].split("\n\n", 1)[0]
    listed = {line.split()[0] for line in block.splitlines() if line.startswith("      ") and line[6] != " "}
    present = {p.name + ("/" if p.is_dir() else "") for p in SRC.iterdir()
               if p.name not in ("__init__.py", "__pycache__", "py.typed")}
    assert listed == present
