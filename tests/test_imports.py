"""The package's import graph has no circle: every module of ``src/hkt`` can be read knowing only the modules it
imports, and ``hkt.compare`` imports nothing inside functions."""

import ast
from pathlib import Path

import hkt

SRC = Path(hkt.__file__).parent


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, names: set[str], top_level_only: bool) -> set[str]:
    """The hkt modules ``path`` imports (a ``from package import module`` counts as the module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("hkt"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & names
            found |= subs or {node.module}
    return found


def cycles(top_level_only: bool) -> list[list[str]]:
    mods = modules()
    names = set(mods)
    # a package's __init__ importing its own modules is how packages re-export: not a dependency of theirs
    graph = {
        m: {d for d in imports(p, names, top_level_only) if not (p.name == "__init__.py" and d.startswith(m + "."))}
        for m, p in mods.items()
    }
    found, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                found.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_no_module_of_hkt_sits_on_an_import_circle():
    assert cycles(top_level_only=False) == []


def test_compare_imports_nothing_inside_functions():
    for path in (SRC / "compare").glob("*.py"):
        tree = ast.parse(path.read_text())
        nested = [
            n.lineno
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
            if isinstance(n, (ast.Import, ast.ImportFrom))
        ]
        assert nested == [], f"{path.name} imports inside functions at lines {nested}"


def test_core_holds_the_method_only():
    """``hkt.core`` (genes, extraction, transfer, Genetic Attention, the engines) reads no files and swaps no module of
    the user's: the parent cache and its replay, the gene survey and the baselines' pieces (ReviewKD's ``@preact``
    reader, FitNet's regressor) live outside it; the engine stops nothing with an exception and counts no rows."""
    mods = modules()
    for name, path in mods.items():
        if name.startswith("hkt.core"):
            tree = ast.parse(path.read_text())
            imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert not {m for m in imported if m.split(".")[0] == "safetensors" or m.startswith("hkt.io")}, name
            text = path.read_text().replace("setattr(new, element", "")  # outputs.write: a copy of an output object
            assert not [w for w in ("setattr(", "_preact_hook", "ACTIVATIONS", "_ParentDone", "2 * b", "Regressor") if w in text], name
