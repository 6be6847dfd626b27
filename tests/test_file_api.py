"""Every run and data path goes through `slt/storage.py`, the one file API.

A job's paths may be `gs://` (docs/training.md, "Run directories on cloud storage"), and
only `slt.storage` handles both kinds. So `slt/` and `tasks/` make no file-system call
of their own (`open`, `os.path.*`, `shutil.*`, `glob.glob`, `os.makedirs`, `os.listdir`
and the other `os` file functions, `pathlib`) outside `slt/storage.py`, unless the call's
line or the line above it carries `# local: <why>`: a path that is by nature on this
machine (a temporary directory, the package's own files, a virtual environment).
"""

from __future__ import annotations

import ast
import io
import os
import tokenize

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIRS = ("slt",)
FILE_API = "slt/storage.py"
MARKER = "local:"

# The calls that touch the file system: whole modules, and single functions.
FILE_MODULES = ("os.path", "shutil", "pathlib")
FILE_FUNCTIONS = {"open", "io.open", "builtins.open", "glob.glob", "glob.iglob"} | {
    f"os.{name}"
    for name in (
        "listdir",
        "makedirs",
        "mkdir",
        "remove",
        "removedirs",
        "rename",
        "renames",
        "replace",
        "rmdir",
        "scandir",
        "unlink",
        "walk",
    )
}


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it stands for (`import os.path as osp` -> os.path,
    `from shutil import copy` -> shutil.copy); builtins stand for themselves."""
    names = {"open": "open"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:  # `import os.path` binds `os`
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, names)
        return f"{base}.{node.attr}" if base else None
    return None


def _is_file_call(name: str) -> bool:
    return name in FILE_FUNCTIONS or any(name.startswith(m + ".") for m in FILE_MODULES)


def _marked_lines(source: str) -> set[int]:
    """Lines whose comment starts with the marker and gives a reason after it."""
    marked = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if text.startswith(MARKER) and text[len(MARKER) :].strip():
                marked.add(token.start[0])
    return marked


def unmarked_file_calls(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every file-system call in `source` that neither its own
    line nor the line above marks as local."""
    tree = ast.parse(source)
    names = _imported_names(tree)
    marked = _marked_lines(source)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func, names)
        if name and _is_file_call(name) and not {node.lineno, node.lineno - 1} & marked:
            found.append((node.lineno, name))
    return sorted(found)


def _modules() -> list[str]:
    paths = []
    for top in SOURCE_DIRS:
        for directory, _, files in os.walk(os.path.join(REPO, top)):
            paths += [
                os.path.relpath(os.path.join(directory, f), REPO)
                for f in files
                if f.endswith(".py")
            ]
    return sorted(paths)


def test_no_file_call_outside_the_file_api_unless_marked_local():
    modules = _modules()
    assert FILE_API in modules and len(modules) > 50, modules  # the walk found the code
    offences = []
    for module in modules:
        if module == FILE_API:
            continue
        with open(os.path.join(REPO, module), encoding="utf-8") as f:
            source = f.read()
        offences += [f"{module}:{line}: {name}" for line, name in unmarked_file_calls(source)]
    assert not offences, (
        "file-system calls outside slt/storage.py; use slt.storage (add a function there "
        "if none fits), or mark a path that is by nature local with `# local: <why>` on "
        "the line or the line above:\n  " + "\n  ".join(offences)
    )


@pytest.mark.parametrize(
    "line",
    [
        "with open(path) as f: pass",
        "import io\nio.open(path)",
        "import os\nos.path.exists(path)",
        "import os.path\nos.path.join(a, b)",
        "import os.path as osp\nosp.isfile(path)",
        "from os import path\npath.isdir(p)",
        "from os.path import join\njoin(a, b)",
        "import os\nos.makedirs(path, exist_ok=True)",
        "import os\nos.listdir(path)",
        "import os\nfor _ in os.walk(path): pass",
        "import os\nos.replace(a, b)",
        "import shutil\nshutil.rmtree(path)",
        "from shutil import copyfile\ncopyfile(a, b)",
        "import glob\nglob.glob(pattern)",
        "from glob import glob\nglob(pattern)",
        "import pathlib\npathlib.Path(p).read_text()",
        "from pathlib import Path\nPath(p)",
        "import os\n# local:\nos.listdir(path)",  # a marker without a reason
        "import os\nx = '# local: in a string, not a comment'; os.listdir(path)",
        "import os\n# local: two lines up\n\nos.listdir(path)",
    ],
)
def test_every_form_of_a_file_call_is_found(line):
    assert len(unmarked_file_calls(line)) == 1, line


@pytest.mark.parametrize(
    "line",
    [
        "import os\nos.listdir(tmp)  # local: a temporary directory",
        "import os\n# local: the package's own files\nos.path.join(here, 'a.csv')",
        "import os\nos.environ.get('A'); os.fspath(p); os.getpid()",  # no file access
        "import glob\nglob.escape(name)",  # a string function
        "from slt import storage\nstorage.listdir(path)",
        "def open(x): pass\nf.open()",  # a method, not the builtin
    ],
)
def test_marked_and_harmless_calls_pass(line):
    assert unmarked_file_calls(line) == [], line
