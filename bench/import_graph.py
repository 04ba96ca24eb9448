#!/usr/bin/env python3
"""Draw the project's layout from its imports: packages, their arrows, circles and arrows that point back up.

Why: "dependencies one way" is a claim about the code that drifts unless it is measured; this reads every
module of the shipped packages with the stdlib `ast` (tests and bench aside), resolves each import that names
one of our modules (lazy imports inside functions count, `if TYPE_CHECKING:` imports do not: they never run),
and reports
  - circles: strongly connected groups of modules (Tarjan), each a set that imports itself round;
  - arrows back up: an import from a lower layer into a higher one, or sideways between two packages of one
    layer (LAYERS below: ground < engines < calibration, training < inspector; inside `inspector` the
    sub-packages have no order, only circles count there);
  - the largest module (lines) and the largest class and function (lines from `def`/`class` to its end);
  - lines per top-level package.
With `--dot FILE.svg` (needs Graphviz `dot`) it renders the package graph: one box a package or sub-package,
one arrow per importing pair with the number of modules behind it, arrows back up in red.

    .venv/bin/python bench/import_graph.py [--json out.json] [--dot docs/img/layout-after.svg] [--root .]
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

#: top-level packages in layer order: an arrow may point only to a lower number.
LAYERS: dict[str, int] = {"ground": 0, "engines": 1, "calibration": 2, "training": 2, "inspector": 3}


def module_name(root: Path, path: Path) -> str:
    """`inspector/gate/actuator.py` -> `inspector.gate.actuator`; a package's `__init__` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path) -> dict[str, Path]:
    """Every module of the packages named in LAYERS that exist under `root`."""
    mods: dict[str, Path] = {}
    for pkg in LAYERS:
        base = root / pkg
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            mods[module_name(root, path)] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import nodes that run: all of them except those under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub)
                continue
            visit_stmt(child)

    def visit_stmt(child: ast.AST) -> None:
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        visit(child)

    visit(tree)
    return found


def resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules (`a.b.c` -> `a.b` if `a.b` is one)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in mods:
            return cand
        parts.pop()
    return None


def imports_of(mod: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The modules of ours that `mod` imports (relative imports resolved; `from pkg import sub` finds `pkg.sub`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                hit = resolve(alias.name, mods)
                if hit:
                    out.add(hit)
            continue
        if node.level:
            base = mod.split(".") if is_pkg else mod.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            hit = resolve(f"{target}.{alias.name}", mods) or resolve(target, mods)
            if hit:
                out.add(hit)
    out.discard(mod)
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def group_of(mod: str) -> str:
    """The box a module is drawn in: the top-level package, or `inspector.<sub-package>`."""
    parts = mod.split(".")
    if parts[0] == "inspector" and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0]


def sizes(mods: dict[str, Path]) -> dict:
    """Largest module, class and function (lines), and lines per top-level package."""
    per_pkg: dict[str, int] = defaultdict(int)
    biggest_mod = ("", 0)
    biggest_cls = ("", 0)
    biggest_fn = ("", 0)
    for mod, path in mods.items():
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        per_pkg[mod.split(".")[0]] += n
        if n > biggest_mod[1]:
            biggest_mod = (str(path), n)
        for node in ast.walk(ast.parse(text)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
            if isinstance(node, ast.ClassDef) and length > biggest_cls[1]:
                biggest_cls = (f"{mod}.{node.name}", length)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and length > biggest_fn[1]:
                biggest_fn = (f"{mod}:{node.name}", length)
    total = sum(per_pkg.values())
    return {
        "lines_total": total,
        "lines_per_package": {k: per_pkg[k] for k in sorted(per_pkg)},
        "largest_module": {"path": biggest_mod[0], "lines": biggest_mod[1]},
        "largest_class": {"name": biggest_cls[0], "lines": biggest_cls[1]},
        "largest_function": {"name": biggest_fn[0], "lines": biggest_fn[1]},
    }


def analyse(root: Path) -> dict:
    mods = find_modules(root)
    graph = {m: imports_of(m, p, mods) for m, p in mods.items()}
    back: list[tuple[str, str, str]] = []
    for src, dsts in sorted(graph.items()):
        a = src.split(".")[0]
        for dst in sorted(dsts):
            b = dst.split(".")[0]
            if a == b:
                continue
            if LAYERS[b] > LAYERS[a]:
                back.append((src, dst, "up"))
            elif LAYERS[b] == LAYERS[a]:
                back.append((src, dst, "sideways"))
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for src, dsts in graph.items():
        for dst in dsts:
            ga, gb = group_of(src), group_of(dst)
            if ga != gb:
                edges[(ga, gb)] += 1
    return {
        "root": str(root),
        "modules": len(mods),
        "imports": sum(len(v) for v in graph.values()),
        "circles": circles(graph),
        "back_arrows": [{"from": s, "to": d, "kind": k} for s, d, k in back],
        "package_edges": [{"from": a, "to": b, "modules": n} for (a, b), n in sorted(edges.items())],
        **sizes(mods),
    }


def render(result: dict, out: Path) -> None:
    """The package graph through Graphviz `dot`; red arrows point back up or sideways, red boxes hold a circle."""
    bad_pairs = {(group_of(b["from"]), group_of(b["to"])) for b in result["back_arrows"]}
    circle_groups: dict[str, int] = defaultdict(int)
    for comp in result["circles"]:
        for g in {group_of(m) for m in comp}:
            circle_groups[g] += 1
    for comp in result["circles"]:
        groups = [group_of(m) for m in comp]
        for i, a in enumerate(groups):
            for b in groups[i + 1 :]:
                if a != b:
                    bad_pairs.add((a, b))
    nodes = sorted(
        {e["from"] for e in result["package_edges"]}
        | {e["to"] for e in result["package_edges"]}
        | set(result["lines_per_package"])
    )
    lines = ["digraph layout {", '  rankdir=BT; node [shape=box, fontname="Helvetica"]; edge [fontname="Helvetica"];']
    title = (
        f"{result['modules']} modules, {len(result['circles'])} circles, "
        f"{len(result['back_arrows'])} arrows back up or sideways"
    )
    lines.append(f'  labelloc=t; label="{title}";')
    by_top: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        by_top[n.split(".")[0]].append(n)
    for top, members in sorted(by_top.items()):
        lines.append(
            f'  subgraph "cluster_{top}" {{ label="{top} (layer {LAYERS.get(top, "?")}, '
            f'{result["lines_per_package"].get(top, 0)} lines)"; style=rounded;'
        )
        for n in members:
            extra = f"\\n{circle_groups[n]} circle(s)" if circle_groups.get(n) else ""
            colour = ", color=red, fontcolor=red" if circle_groups.get(n) else ""
            lines.append(f'    "{n}" [label="{n}{extra}"{colour}];')
        lines.append("  }")
    for e in result["package_edges"]:
        colour = ", color=red, fontcolor=red, penwidth=2" if (e["from"], e["to"]) in bad_pairs else ""
        lines.append(f'  "{e["from"]}" -> "{e["to"]}" [label="{e["modules"]}"{colour}];')
    lines.append("}")
    dot = shutil.which("dot")
    if dot is None:
        raise SystemExit("error: Graphviz 'dot' not found; install it (apt-get install graphviz) or leave out --dot")
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lstrip(".") or "svg"
    subprocess.run([dot, f"-T{fmt}", "-o", str(out)], input="\n".join(lines), text=True, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="the checkout to read")
    ap.add_argument("--json", help="write the whole result here")
    ap.add_argument("--dot", help="render the package graph to this file (.svg or .png; needs Graphviz)")
    args = ap.parse_args(argv)
    result = analyse(Path(args.root).resolve())
    print(f"modules {result['modules']}, imports between them {result['imports']}, lines {result['lines_total']}")
    print("lines per package: " + ", ".join(f"{k} {v}" for k, v in result["lines_per_package"].items()))
    print(f"circles: {len(result['circles'])}")
    for comp in result["circles"]:
        print("  " + " <-> ".join(comp))
    print(f"arrows back up or sideways: {len(result['back_arrows'])}")
    for b in result["back_arrows"]:
        print(f"  {b['from']} -> {b['to']} ({b['kind']})")
    lm, lc, lf = result["largest_module"], result["largest_class"], result["largest_function"]
    print(f"largest module: {lm['path']} ({lm['lines']} lines)")
    print(f"largest class: {lc['name']} ({lc['lines']} lines)")
    print(f"largest function: {lf['name']} ({lf['lines']} lines)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.dot:
        render(result, Path(args.dot))
        print(f"picture: {args.dot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
