"""The package layout: libraries in packages that import each other in one direction,
jobs at the top of `slt/`, and the gin configs inside the package (and its wheel).

The layers, from the bottom: `slt.storage` (the file API, used by all); `slt.data`
(the data contract); `slt.io` (readers); `slt.models`; `slt.training`;
`slt.evaluation`; `slt.tasks` (seqio registries, which name metrics); `slt.study`;
`slt.performance`. A job (a module that runs as `python -m`) may import anything; a
library module imports no job, and no package imports another that imports it back.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLT = os.path.join(REPO, "slt")
# Top-level modules every layer may import: the file API.
SHARED_TOP_LEVEL = {"slt.storage"}


def _modules() -> dict[str, str]:
    """{module name: path} of every module under slt/."""
    out = {}
    for directory, _, files in os.walk(SLT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(directory, f)
                rel = os.path.relpath(path, REPO)[: -len(".py")].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = path
    return out


def _is_job(tree: ast.Module) -> bool:
    """A module with an `if __name__ == "__main__":` block runs as `python -m`."""
    return any(
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        for node in tree.body
    )


def _imports(tree: ast.Module, modules: set[str]) -> set[str]:
    """The slt modules a module imports, lazily (inside functions) or not."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("slt")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "slt":
                continue
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in modules else node.module)
    return out


def _package(module: str) -> str:
    """`slt.<package>` of a module in a package; the module itself at the top level."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _graph() -> tuple[dict[str, set[str]], set[str], dict[tuple[str, str], str]]:
    """(package -> packages its library modules import, job modules, an example
    import per package edge)."""
    modules = _modules()
    names = set(modules)
    jobs, edges, example = set(), {}, {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        if _is_job(tree):
            jobs.add(module)
        for target in _imports(tree, names):
            source_pkg, target_pkg = _package(module), _package(target)
            if source_pkg != target_pkg and target_pkg != "slt":
                edges.setdefault((module, target), None)
                example.setdefault((source_pkg, target_pkg), f"{module} imports {target}")
    graph: dict[str, set[str]] = {}
    for module, target in edges:
        if module in jobs or module.count(".") == 1:  # jobs and top-level modules
            continue
        graph.setdefault(_package(module), set()).add(_package(target))
    return graph, jobs, example


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_packages():
    graph, _, example = _graph()
    cycle = _cycle(graph)
    assert cycle is None, (
        "import cycle between packages: "
        + " -> ".join(cycle)
        + "\n"
        + ("\n".join(example[(a, b)] for a, b in zip(cycle, cycle[1:])))
    )


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_library_modules_import_no_job_or_top_level_module():
    modules = _modules()
    names = set(modules)
    _, jobs, _ = _graph()
    bad = []
    for module, path in modules.items():
        if module in jobs or module.count(".") == 1:
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for target in _imports(tree, names):
            top_level = target.count(".") == 1 and target not in SHARED_TOP_LEVEL
            if (target in jobs and _package(target) != _package(module)) or (
                top_level and target != "slt"
            ):
                bad.append(f"{module} imports {target}")
    assert not bad, "library modules importing jobs or top-level modules:\n" + "\n".join(bad)


def test_jobs_are_at_the_top_or_in_io_and_all_answer_help():
    _, jobs, _ = _graph()
    assert all(j.count(".") == 1 or j.startswith("slt.io.") for j in jobs), jobs
    # Every job's --help runs in tests/test_cli.py (the MediaPipe worker is started
    # by slt.io.video, not by users). Read without importing it (it imports JAX).
    with open(os.path.join(REPO, "tests", "test_cli.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    (entry_points,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ENTRY_POINTS"
    ]
    assert jobs - {"slt.io.video_worker"} == set(entry_points)


def _gin_files() -> set[str]:
    out = set()
    for directory, _, files in os.walk(os.path.join(SLT, "gin")):
        out |= {
            os.path.relpath(os.path.join(directory, f), REPO) for f in files if f.endswith(".gin")
        }
    return out


def _source_copy(tmp_path) -> str:
    """What `pip install .` builds from, copied: setuptools' build/ directory in the
    checkout may hold files of an earlier build that the package data no longer names."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), source / name)
    shutil.copytree(SLT, source / "slt", ignore=shutil.ignore_patterns("__pycache__"))
    return str(source)


def test_gin_configs_ship_in_the_wheel(tmp_path):
    """The wheel `pip install .` installs holds every gin config and GPU description, so
    `--gin_file=runs/demo.gin` works without the checkout."""
    source = _source_copy(tmp_path)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "dist"), source],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = os.listdir(tmp_path / "dist")
    with zipfile.ZipFile(tmp_path / "dist" / wheel) as z:
        names = set(z.namelist())
    gin_files = _gin_files()
    assert len(gin_files) >= 25
    assert not gin_files - names, f"gin configs missing from the wheel: {gin_files - names}"
    assert any(n.startswith("slt/performance/gpu_specs/") for n in names)
    assert "slt/tasks/__init__.py" in names and "slt/study/__init__.py" in names
    assert not [n for n in names if n.startswith("tasks/")], "a top-level tasks package"


@pytest.mark.parametrize("name", ["runs/demo.gin", "gin/runs/demo.gin"])
def test_gin_names_resolve_from_any_directory(tmp_path, monkeypatch, name):
    from slt import gin_utils

    monkeypatch.chdir(tmp_path)
    assert gin_utils.find_gin_file(name) == os.path.join(SLT, "gin", "runs", "demo.gin")
    assert gin_utils.find_gin_file("runs/no_such.gin") is None
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "demo.gin").write_text("# the user's own\n")
    assert gin_utils.find_gin_file("runs/demo.gin") == str(tmp_path / "runs" / "demo.gin")


def test_a_job_parses_a_shipped_config_from_another_directory_without_error_lines(tmp_path):
    """gin's package-resource reader logs `ERROR ... Path not found` for each search
    directory without the file; the jobs leave it out."""
    script = (
        "import gin, sys\n"
        "from slt import gin_utils, train\n"
        "gin_utils.parse_gin_args(['--gin_file=runs/demo.gin',"
        " '--gin_file=partitioning/fsdp.gin', '--gin.MODEL_DIR=\"x\"'], train.train)\n"
        "print(gin.query_parameter('slt.T5Config.emb_dim'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "128"
    assert "Path not found" not in result.stderr and " ERROR " not in result.stderr


@pytest.mark.slow
def test_installed_package_runs_the_demo_from_an_empty_directory(tmp_path):
    """`pip install .` (not editable) into a virtual environment, then the demo with its
    shipped config from an empty directory, to its final evaluation. The environment
    sees this one's packages (`--system-site-packages`) so nothing is downloaded; its own
    copy of slt comes first on its path."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        + [_source_copy(tmp_path)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run(
        [python, "-c", "import slt; print(slt.__file__)"],
        cwd=empty,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"slt imported from {where}, not the installed copy"
    result = subprocess.run(
        [python, "-m", "slt.train", "--gin_file=runs/demo.gin", '--gin.MODEL_DIR="runs/demo"']
        + ["--gin.train.train_steps=20"],
        cwd=empty,
        capture_output=True,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "final evaluation (test split)" in result.stdout
    assert (empty / "runs" / "demo" / "eval" / "metrics.json").is_file()
    assert "Path not found" not in result.stderr
