"""The import rules between jouled's parts (the whiteboard's never-arrows), read from every module's AST.

1. energy math does no I/O: ``jouled.energy`` (window math), ``jouled.windows`` (marker pairs) and ``jouled.rows``
   (energy rows, run totals) import no I/O module (sqlite3, sockets, HTTP, MQTT, asyncio, ...);
2. the core (``jouled.<module>``, ``jouled.store``) imports no component (``jouled.daemon``, ``jouled.trainer``,
   ``jouled.scheduler``) — except the command-line modules, which mount components and may import them lazily,
   inside a function, never at import time;
3. the daemon imports neither the trainer nor the scheduler;
4. the scheduler does not import the daemon.

Any import counts, at module level or inside a function (a lazy import is still an arrow), except the command-line
modules' lazy imports (rule 2) and imports under ``if TYPE_CHECKING:`` (types only, never executed). The
violations left today are listed in KNOWN_VIOLATIONS, each with why it is there and what removes it; the test fails
on a new violation and on a listed one that is gone, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# folder → the package it is installed as (pyproject.toml: package-dir)
PACKAGES = {"jouled": "jouled", "daemon": "jouled.daemon", "trainer": "jouled.trainer", "scheduler": "jouled.scheduler"}
COMPONENTS = ("jouled.daemon", "jouled.trainer", "jouled.scheduler")
# the core modules that are the command line's own: they mount the components' commands
PURE_MODULES = frozenset({"jouled.energy", "jouled.windows", "jouled.rows"})  # the energy math: no I/O
CLI_MODULES = frozenset({"jouled.cli", "jouled.cli_common", "jouled.demo", "jouled.calibrate_cli", "jouled.energy_cli",
                         "jouled.export_cli", "jouled.import_cli", "jouled.service_cli", "jouled.entry", "jouled.runcmd"})
IO_MODULES = ("sqlite3", "socket", "socketserver", "ssl", "select", "selectors", "asyncio", "http", "urllib.request",
              "httpx", "requests", "paho", "aiomqtt", "amqtt", "subprocess", "multiprocessing", "threading", "shutil",
              "tempfile", "jouled.store", "jouled.statusfile", "jouled.config", "jouled.secrets")

Violation = tuple[str, str, str]  # (rule, importing module, imported module)

# empty: every never-rule holds (the list may only shrink — a new entry needs a why and what removes it)
KNOWN_VIOLATIONS: dict[Violation, str] = {}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    lazy: bool  # inside a function (runs when called, not at import time)


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, name: str | None = None) -> list[Import]:
    """Every import in the file (absolute names; relative ones resolved), at module level or in a function."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for sub in node.orelse:  # the `else:` of `if TYPE_CHECKING` does run
                visit(sub, lazy)
            return
        if isinstance(node, ast.Import):
            out.extend(Import(name, a.name, lazy) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.append(Import(name, base, lazy))
            # `from jouled.scheduler import lamoo` imports jouled.scheduler.lamoo
            out.extend(Import(name, f"{base}.{a.name}", lazy) for a in node.names if a.name != "*")
        inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
    return out


def _under(name: str, prefixes: tuple[str, ...] | str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ((prefixes,) if isinstance(prefixes, str) else prefixes))


def _is_module(name: str) -> bool:
    """Whether ``name`` is one of ours as a module or package (not a name imported from one)."""
    for folder, package in sorted(PACKAGES.items(), key=lambda fp: -len(fp[1])):  # jouled.daemon before jouled
        if _under(name, package):
            rest = name[len(package):].lstrip(".").split(".") if name != package else []
            base = REPO / folder / Path(*rest) if rest else REPO / folder
            return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
    return True  # a third-party or standard module: the prefix match decides


def violations(imports: list[Import]) -> set[Violation]:
    found: set[Violation] = set()
    for imp in imports:
        who, what = imp.importer, imp.imported
        if not _is_module(what):
            continue  # `from jouled.x import name`: the arrow is to jouled.x, recorded separately
        if who in PURE_MODULES and _under(what, IO_MODULES):
            found.add(("energy math does no I/O", who, what))
        in_core = not _under(who, COMPONENTS)
        if in_core and _under(what, COMPONENTS) and not (who in CLI_MODULES and imp.lazy):
            found.add(("core imports no component", who, what))
        if _under(who, "jouled.daemon") and _under(what, ("jouled.trainer", "jouled.scheduler")):
            found.add(("daemon imports neither trainer nor scheduler", who, what))
        if _under(who, "jouled.scheduler") and _under(what, "jouled.daemon"):
            found.add(("scheduler does not import the daemon", who, what))
    return found


def all_imports() -> list[Import]:
    files = [p for folder in PACKAGES for p in sorted((REPO / folder).rglob("*.py")) if "__pycache__" not in p.parts]
    assert len(files) > 50, files  # the walk found the tree
    return [imp for f in files for imp in imports_of(f)]


def io_reached(modules: Iterable[str]) -> list[tuple[str, str, str]]:
    """(module, importer, I/O module) for every I/O module each of `modules` reaches, directly or through the jouled
    modules it imports; each module must be in the import graph (the walk sees it at all)."""
    graph: dict[str, set[str]] = {}
    for imp in all_imports():
        graph.setdefault(imp.importer, set()).add(imp.imported)
    bad = []
    for mod in sorted(modules):
        assert mod in graph, mod
        seen, todo = set(), [mod]
        while todo:
            m = todo.pop()
            for dep in graph.get(m, ()):
                if dep in seen:
                    continue
                seen.add(dep)
                if _under(dep, IO_MODULES):
                    bad.append((mod, m, dep))
                elif dep.startswith("jouled"):
                    todo.append(dep)
    return bad


def _deepest(found: set[Violation]) -> set[Violation]:
    """One violation per arrow: `jouled.scheduler.lamoo.tree` reported, not also `jouled.scheduler`."""
    return {v for v in found if not any(o != v and o[:2] == v[:2] and o[2].startswith(v[2] + ".") for o in found)}


def test_no_new_import_violations_and_the_known_list_only_shrinks() -> None:
    found = _deepest(violations(all_imports()))
    new = sorted(found - set(KNOWN_VIOLATIONS))
    gone = sorted(set(KNOWN_VIOLATIONS) - found)
    assert not new, "new import across a never-rule (fix it, or list it in KNOWN_VIOLATIONS with why):\n" + "\n".join(
        f"  {rule}: {who} imports {what}" for rule, who, what in new
    )
    assert not gone, "fixed — remove from KNOWN_VIOLATIONS:\n" + "\n".join(f"  {v}" for v in gone)


def test_the_rules_catch_what_they_should(tmp_path: Path) -> None:
    """The checker itself: each rule fires on a made-up import, lazy CLI imports and TYPE_CHECKING do not."""
    cases = [
        Import("jouled.energy", "sqlite3", False),
        Import("jouled.energy", "asyncio", True),
        Import("jouled.query", "jouled.scheduler.simulator", True),
        Import("jouled.cli", "jouled.trainer.train_cli", False),
        Import("jouled.daemon.recorder", "jouled.trainer.markers", True),
        Import("jouled.scheduler.live", "jouled.daemon.app", False),
    ]
    rules = sorted(v[0] for v in violations(cases))
    assert rules == sorted([
        "energy math does no I/O", "energy math does no I/O", "core imports no component", "core imports no component",
        "daemon imports neither trainer nor scheduler", "scheduler does not import the daemon",
    ])
    assert violations([Import("jouled.cli", "jouled.trainer.train_cli", True)]) == set()
    assert violations([Import("jouled.trainer.markers", "jouled.spool", False)]) == set()

    src = tmp_path / "probe.py"
    src.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from jouled.daemon.app import Daemon\n"
        "else:\n    import jouled.scheduler.policies\n"
        "def f():\n    from jouled.trainer import markers\n"
        "from . import energy\n"
    )
    got = {(i.imported, i.lazy) for i in imports_of(src, "jouled.probe")}
    assert ("jouled.daemon.app", False) not in got  # TYPE_CHECKING: types only
    assert ("jouled.scheduler.policies", False) in got and ("jouled.trainer.markers", True) in got
    assert ("jouled.energy", False) in got  # relative, resolved
