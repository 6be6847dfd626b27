"""An on-disk cache of values computed from the embedded corpus, keyed by their inputs.

The feature statistics of the fingerspelling corpus
(`fingerspelling_tasks.standardized_config`) compose 1,216 clips from the letter
recordings of 19 lexicons: about 10 s of CPU on a quiet core, and several times that
on a loaded one, paid by every training, evaluation and inference process that builds
a corpus dataset. With this cache the first process computes them and every later one
reads a small JSON file.

- Where: `$SLT_CACHE_DIR/corpus/`; `SLT_CACHE_DIR` defaults to `$XDG_CACHE_HOME/slt`,
  else `~/.cache/slt`. Deleting the directory is always safe.
- Which file: the sha256 of the entry's key, a JSON object of everything that decides
  the value (its parameters, package versions, the size and modification time of each
  input file, the source text of the modules that compute it). Any change to an input
  names another file, so a stale value is never read; the key is also stored in the
  file and compared on reading.
- Concurrent processes (the tasks of a multi-process job started at once) may all
  compute a missing entry; each writes a temporary file and renames it
  (`slt.storage.write_text`), so a reader sees a whole file or none.
- Values are JSON, whose floats are written with `repr` and read back bit for bit.
- A file that cannot be read, parsed or written is logged as a warning and the value is
  computed: the cache changes how often a value is computed, never the value.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from slt import storage

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "SLT_CACHE_DIR"


def cache_dir() -> str:
    """The directory of the cache's entries (not created here)."""
    base = os.environ.get(CACHE_DIR_ENV)
    if not base:
        # local: the default cache is in this machine's home directory (as on the next line)
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
        base = os.path.join(xdg, "slt")  # local: as above
    return storage.join(storage.absolute(base), "corpus")


def entry_path(name: str, key: Mapping[str, Any]) -> str:
    """The file of entry `name` under `key` (`name` keeps the directory readable)."""
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()
    return storage.join(cache_dir(), f"{name}-{digest[:32]}.json")


def cached(name: str, key: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
    """The value stored for (`name`, `key`), or `compute()`, stored for the next call.

    `key` and the value must be JSON (lists come back for tuples).
    """
    path = entry_path(name, key)
    value = _read(path, key)
    if value is not None:
        log.debug("corpus cache: read %s", path)
        return value
    value = compute()
    try:
        text = json.dumps({"key": json.loads(_canonical(key)), "value": value})
        storage.write_text(path, text)
        log.info("corpus cache: wrote %s", path)
    except (OSError, TypeError, ValueError) as e:
        log.warning(
            "corpus cache: could not write %s (%s); the value is recomputed by the next "
            "process. Set %s to a writable directory to keep it.",
            path,
            e,
            CACHE_DIR_ENV,
        )
    return value


def _canonical(key: Mapping[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def _read(path: str, key: Mapping[str, Any]) -> Any | None:
    try:
        if not storage.exists(path):
            return None
        entry = json.loads(storage.read_text(path))
    except (OSError, ValueError) as e:
        log.warning("corpus cache: ignoring unreadable %s (%s); recomputing it", path, e)
        return None
    if not isinstance(entry, dict) or entry.get("key") != json.loads(_canonical(key)):
        log.warning("corpus cache: %s holds another key; recomputing it", path)
        return None
    return entry.get("value")


# --- what keys are made of ----------------------------------------------------------


def package_versions(*distributions: str) -> dict[str, str]:
    """Installed version of each distribution ("missing" when it is not installed)."""
    out = {}
    for name in distributions:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def source_digest(modules: Iterable[types.ModuleType]) -> str:
    """sha256 of the source files of `modules`: any edit to them changes it."""
    digest = hashlib.sha256(f"python {sys.version_info[:2]}".encode())
    for module in modules:
        digest.update(module.__name__.encode())
        # local: the source of an imported module, a file on this machine
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def files_digest(paths: Iterable[str]) -> str:
    """sha256 of each file's path, size and modification time (not its bytes: the
    lexicon's 600 recordings hold 149 MB, which would cost a second per process)."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)  # local: files of an installed package
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
