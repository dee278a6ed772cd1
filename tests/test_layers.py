"""Layers only point down: surfaces -> services -> protocols -> domain -> pure. Every import of
relviz/ (at module level and inside functions) is read from the source; an import of a higher layer
or any import cycle between modules fails."""

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]

# The first matching prefix decides a module's layer (0 = pure ... 4 = surfaces).
LAYERS = [
    (4, ("relviz.cli", "relviz.serve", "relviz.__main__")),
    (3, ("relviz.workspace", "relviz.jobs", "relviz.demo", "relviz.info", "relviz.experiment")),
    (2, ("relviz.train", "relviz.eval", "relviz.toy", "relviz.viz")),
    (1, ("relviz.data", "relviz.models", "relviz.teacher")),
    (0, ("relviz.errors", "relviz.tensors", "relviz.files", "relviz.config", "relviz.versions", "relviz.sparse",
         "relviz.losses", "relviz.metrics", "relviz.segmentation", "relviz.stats")),
]
NAMES = {0: "pure", 1: "domain", 2: "protocols", 3: "services", 4: "surfaces"}


def layer(module: str) -> int:
    for level, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def relviz_imports(root: Path = ROOT) -> nx.DiGraph:
    modules = {module_name(p, root): p for p in (root / "relviz").rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("relviz"):
                # `from relviz.x import y` imports relviz.x.y when that is a module
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("relviz")]
            for target in targets:
                if target != name and target != "relviz":
                    graph.add_edge(name, target, line=node.lineno)
    return graph


def upward_imports(graph: nx.DiGraph) -> list[str]:
    return [f"{a} ({NAMES[layer(a)]}) imports {b} ({NAMES[layer(b)]}) at line {d['line']}"
            for a, b, d in graph.edges(data=True) if layer(b) > layer(a)]


def import_cycles(graph: nx.DiGraph) -> list[list[str]]:
    graph = graph.copy()  # a package's __init__ re-exporting its own modules is not a cycle of concepts
    graph.remove_edges_from([(a, b) for a, b in list(graph.edges) if b.startswith(a + ".")])
    return list(nx.simple_cycles(graph))


def test_imports_only_point_down():
    upward = upward_imports(relviz_imports())
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    cycles = import_cycles(relviz_imports())
    assert not cycles, cycles[:5]


def test_the_checks_catch_function_level_upward_imports_and_cycles(tmp_path):
    pkg = tmp_path / "relviz" / "train"
    pkg.mkdir(parents=True)
    (tmp_path / "relviz" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "trainer.py").write_text("def f():\n    from relviz.workspace import warm_caches\n")
    (tmp_path / "relviz" / "workspace.py").write_text("from relviz.train.trainer import f\n")
    graph = relviz_imports(tmp_path)
    assert upward_imports(graph) == ["relviz.train.trainer (protocols) imports relviz.workspace (services) at line 2"]
    assert import_cycles(graph) == [["relviz.train.trainer", "relviz.workspace"]] or \
        import_cycles(graph) == [["relviz.workspace", "relviz.train.trainer"]]


def test_committed_records_hold_no_machine_paths():
    """The demo manifest, the demo experiment's report and the metadata of the committed checkpoints
    name datasets and runs by name: an absolute path would be one machine's."""
    import json
    import re

    from relviz.models.checkpoint import read_metadata

    demo = ROOT / "checkpoints" / "demo"
    texts = {str(p.relative_to(demo)): p.read_text() for p in (*demo.glob("*.json"), *demo.glob("experiment/*"))}
    texts.update({p.name: json.dumps(read_metadata(p)) for p in demo.glob("*.safetensors")})
    found = {name: re.findall(r'"(/[^"]+)"|\s(/(?:work|tmp|home|root)/\S+)', text) for name, text in texts.items()}
    assert "experiment/report.md" in texts and not any(found.values()), found


def test_docstrings_point_to_files_that_exist():
    import re

    missing = []
    for path in (ROOT / "relviz").rglob("*.py"):
        for ref in re.findall(r"(?<![\w/>])((?:docs|bench|checkpoints)/[\w./-]+\.\w+)", path.read_text()):
            if not (ROOT / ref).exists():
                missing.append(f"{path.relative_to(ROOT)}: {ref}")
        if "SPEC.md" in path.read_text():
            missing.append(f"{path.relative_to(ROOT)}: SPEC.md is not in the repository")
    assert not missing, missing


def test_every_page_of_the_app_is_under_100_lines():
    """Issue 31: a page is widgets, a library call and a figure; what is more lives in relviz.viz or in
    the pages' helper modules (common, kept, background, ...), which app.py does not list as pages."""
    import re

    root = Path(__file__).resolve().parents[1]
    pages = re.findall(r'st\.Page\("(app_pages/[a-z_]+\.py)"', (root / "app.py").read_text())
    assert len(pages) >= 9
    for page in pages:
        assert len((root / page).read_text().splitlines()) < 100, page
