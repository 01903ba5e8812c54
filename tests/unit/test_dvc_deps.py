"""dvc.yaml: every stage lists exactly the code it runs.

Each ``python -m pipeline.<stage>`` is followed through its imports (top-level and inside
functions, ``dogbreeds.*`` and ``pipeline.*``) to the files it reaches. Every file reached must
be a dep of the stage (or a change there would leave ``dvc repro`` saying "up to date" while it
is not), and every code file listed must be reached (or a change there would rerun the stage
for nothing). A package's ``__init__.py`` runs on import, so it counts like any module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CODE_ROOTS = ("pipeline", "dogbreeds")


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    base = (ROOT / "src" if parts[0] == "dogbreeds" else ROOT).joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_of(path: Path) -> list[str]:
    rel = path.relative_to(ROOT / "src" if (ROOT / "src") in path.parents else ROOT)
    parts = list(rel.with_suffix("").parts)
    return parts[:-1] if path.name != "__init__.py" else parts[:-1]


def imported_modules(path: Path) -> set[str]:
    """Every ``dogbreeds``/``pipeline`` module ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = package_of(path)
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from package import module` imports a module, not only a name
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.split(".")[0] in CODE_ROOTS}


def reached_files(start: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            parts = module.split(".")
            # importing a.b.c runs a/__init__.py and a/b/__init__.py too
            for i in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:i]))
                if found:
                    todo.append(found)
    return seen


def python_stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        if "python -m pipeline." in stage.get("cmd", ""):
            out[name] = stage
    return out


def code_deps(stage: dict) -> set[str]:
    deps = [next(iter(d)) if isinstance(d, dict) else str(d) for d in stage.get("deps", [])]
    return {d for d in deps if d.endswith(".py")}


def expected_code_deps(stage: dict) -> set[str]:
    module = stage["cmd"].split("python -m ", 1)[1].split()[0]
    start = module_file(module)
    assert start is not None, f"no file for {module}"
    return {p.relative_to(ROOT).as_posix() for p in reached_files(start)}


STAGES = python_stages()


def test_every_pipeline_stage_is_checked():
    assert {"download", "build_metadata", "split", "augment", "train_scratch", "tune",
            "features", "train_transfer", "evaluate"} <= set(STAGES)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_exactly_the_code_it_runs(name):
    stage = STAGES[name]
    listed, needed = code_deps(stage), expected_code_deps(stage)
    missing, unused = sorted(needed - listed), sorted(listed - needed)
    assert not missing, f"{name}: dvc.yaml deps miss code the stage imports: {missing}"
    assert not unused, f"{name}: dvc.yaml lists code the stage never imports: {unused}"


def test_closure_follows_imports_inside_functions(tmp_path):
    """The walk sees an import inside a function body (it would hide an edge otherwise)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from dogbreeds.tracking import figures\n")
    assert "dogbreeds.tracking.figures" in imported_modules(module)


@pytest.mark.parametrize("package", ["data", "models", "tracking", "serving", "monitoring"])
def test_each_subpackage_declares_all_its_modules(package):
    """``__all__`` names every module of the subpackage (its public names) and imports none."""
    folder = ROOT / "src" / "dogbreeds" / package
    init = folder / "__init__.py"
    namespace: dict = {}
    exec(compile(init.read_text(encoding="utf-8"), str(init), "exec"), namespace)
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    assert sorted(namespace["__all__"]) == modules
    assert not imported_modules(init), f"{init} must not import (it would widen every stage's deps)"
