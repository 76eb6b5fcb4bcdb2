"""The package's layers: every module sits in a layer of the data flow and imports only its own layer or lower
ones, with no cycle between units; imports inside functions count (that is where cycles hide)."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "platform" / "slidegrid"

# Lowest first. A unit is a top-level module or subpackage of slidegrid.
LAYERS: list[tuple[str, ...]] = [
    ("slidegrid", "errors", "metrics", "losses"),  # the version, errors, pure functions
    ("io",),  # slides, archives, storage, grid files, manifest, tables
    ("geometry", "runtime", "placement"),  # tissue and tiles; where Ray runs and what runs where
    ("encoders", "stitching", "viz", "preview"),  # tile encoders; slide-scale inference mechanics; pictures
    ("models", "synth", "stream", "tracking"),  # aggregators and segmenters; synthetic slides; the slide stream; MLflow
    ("train",),  # the trainers: aggregator/, encoder/, segmentation/ and their shared runner
    ("encode", "segment", "predict", "probe_patches", "analysis"),  # the jobs
    ("demo", "cli"),  # what people run
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (annotations only, never executed)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(path: Path) -> set[str]:
    """The slidegrid modules `path` imports, anywhere in the file."""
    module, tree = _module(path), ast.parse(path.read_text())
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    skip, out = _type_checking_only(tree), set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            target = (".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                      if node.level else node.module or "")
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names if (PACKAGE.parent / f"{target}.{a.name}".replace(
                ".", "/")).with_suffix(".py").exists()}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return {m for m in out if m == "slidegrid" or m.startswith("slidegrid.")}


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        src = _unit(_module(path))
        edges[src] |= {_unit(m) for m in _imports(path)} - {src}
    return edges


def test_every_unit_has_a_layer():
    units = {_unit(_module(p)) for p in PACKAGE.rglob("*.py")}
    assert not units - set(RANK), f"place these in LAYERS (tests/test_layers.py): {sorted(units - set(RANK))}"


def test_no_upward_import():
    upward = sorted(f"{src} -> {dst}" for src, dsts in _graph().items() for dst in dsts
                    if RANK.get(dst, -1) > RANK.get(src, len(LAYERS)))
    assert not upward, f"imports from a lower layer into a higher one: {upward}"


def test_no_cycle_between_units():
    edges, state, cycles = _graph(), {}, []

    def visit(unit: str, stack: list[str]) -> None:
        state[unit] = "open"
        for nxt in sorted(edges.get(unit, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[unit] = "done"

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [unit])
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_a_lazy_upward_import(tmp_path, monkeypatch):
    """The test above would pass on an empty graph: show it catches an import hidden inside a function."""
    fake = tmp_path / "slidegrid"
    (fake / "io").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "io" / "__init__.py").write_text("")
    (fake / "io" / "slides.py").write_text("def f():\n    from ..encode import run_encode\n")
    (fake / "encode.py").write_text("from .io.slides import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _graph()["io"] == {"encode"}
    try:
        test_no_upward_import()
    except AssertionError as err:
        assert "io -> encode" in str(err)
    else:
        raise AssertionError("an upward import inside a function went unnoticed")


def test_public_api_resolves_every_name():
    """Every name of `slidegrid.__all__` loads, lazily: `import slidegrid` alone imports no job module."""
    code = ("import sys, slidegrid as sg; assert 'slidegrid.encode' not in sys.modules, 'import slidegrid is not lazy';"
            "missing = [n for n in sg.__all__ if getattr(sg, n, None) is None]; assert not missing, missing;"
            "from slidegrid.encode import run_encode; assert sg.run_encode is run_encode")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_job_is_run_job_of_its_config_returning_its_report():
    """`run_<job>(<Job>Config) -> <Job>Report` for every job of the public API, each pair exported with it."""
    import typing

    import slidegrid as sg

    jobs = [n for n in sg.__all__ if n.startswith("run_")]
    assert {"run_encode", "run_segment", "run_train", "run_tune", "run_predict", "run_train_encoder",
            "run_train_seg", "run_probe", "run_pn_stage", "run_burden", "run_demo"} <= set(jobs)
    for name in jobs:
        fn = getattr(sg, name)
        hints = typing.get_type_hints(fn)
        params = [p for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty]
        assert len(params) == 1, f"{name} takes one config, not {[p.name for p in params]}"
        config, report = hints[params[0].name], hints["return"]
        assert config.__name__.endswith("Config") and report.__name__.endswith("Report"), (name, config, report)
        assert getattr(sg, config.__name__) is config and getattr(sg, report.__name__) is report, name


def test_readme_layout_names_every_unit():
    """The README's Layout block is the package's map: every unit (top-level module or subpackage) and every
    trainer folder is named there, so a new folder cannot land unmapped."""
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```")[1]
    units = {_unit(_module(p)) for p in PACKAGE.rglob("*.py")} - {"slidegrid"}
    trainers = {p.name for p in (PACKAGE / "train").iterdir() if (p / "__init__.py").exists()}
    missing = sorted(u for u in units | trainers if not re.search(rf"(?<![\w/]){u}(/|\.py|[,}}])", block))
    assert not missing, f"name these in README.md's Layout block: {missing}"
