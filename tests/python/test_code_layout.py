"""The Python layer's structure holds: the import graph between jaxmg's
modules (module level, and nothing imported inside functions to dodge a
cycle) has no cycle; no private name is imported from another module;
every public op is declared once, in its own module of jaxmg/ops/."""

import ast
import pathlib

import jaxmg
from jaxmg import ops

PKG = pathlib.Path(jaxmg.__file__).parent


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, path, ast.parse(path.read_text())


def _resolve(module: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _edges():
    """(importer, imported module or name's module, name, inside a function)."""
    known = {name for name, _, _ in _modules()}
    for name, path, tree in _modules():
        is_pkg = path.name == "__init__.py"
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inner = {id(x) for f in funcs for x in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                src = _resolve(name, node, is_pkg)
                if not src.startswith("jaxmg"):
                    continue
                for alias in node.names:
                    target = f"{src}.{alias.name}"
                    yield name, target if target in known else src, alias.name, id(node) in inner


def test_no_import_cycles_and_no_imports_inside_functions():
    graph = {}
    for src, dst, _, inside in _edges():
        assert not inside, f"{src} imports {dst} inside a function"
        if src != dst and not dst.startswith(src + "."):
            graph.setdefault(src, set()).add(dst)
    state = {}

    def visit(n, stack):
        state[n] = 1
        for m in graph.get(n, ()):
            assert state.get(m) != 1, "import cycle: " + " -> ".join(stack + [n, m])
            if m not in state:
                visit(m, stack + [n])
        state[n] = 2

    for n in list(graph):
        if n not in state:
            visit(n, [])


def test_no_private_names_across_modules():
    bad = [(src, dst, name) for src, dst, name, _ in _edges()
           if name.startswith("_") and name != "__version__"]
    assert not bad, bad


def test_each_public_op_is_declared_once_in_its_own_module():
    modules = [op.rule.__module__ for op in ops.ALL]
    assert len(set(modules)) == len(modules) == len(ops.ALL)
    assert all(m.startswith("jaxmg.ops.") for m in modules)
    for op in ops.ALL:
        assert getattr(jaxmg, op.name).__module__ == op.rule.__module__, op.name
