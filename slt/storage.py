"""The file API of every path a job reads or writes: local paths and `gs://` buckets.

Built on `etils.epath` (the path library orbax uses), which picks TensorFlow's
`tf.io.gfile` for `gs://` when TensorFlow is installed and `gcsfs` (fsspec) otherwise
(`EPATH_USE_TF=0` forces gcsfs). This module adds what epath lacks:

- `write_text` / `write_bytes` finalise a file once: a reader sees the whole file or
  none. Locally it is written to a temporary name and renamed; on GCS an object
  becomes visible only when its upload completes, so it is written in place.
- `check_writable`: a run directory that cannot be written (bucket missing, no
  permission, read-only disk) fails when the job starts, not at the first checkpoint.
- `upload_dir` / `download_dir`: libraries that write only through TensorFlow's own
  file system (tf.data iterator checkpoints, TensorBoard events) write to a local
  staging directory that is copied through this API.

Docs: docs/training.md, "Run directories on cloud storage".
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

from etils import epath

PathLike = str | os.PathLike
log = logging.getLogger(__name__)


class StorageError(OSError):
    """A run or data path that cannot be read or written, with what to check."""


def is_remote(path: PathLike) -> bool:
    """Whether `path` is a URI (`gs://...`), not a local path."""
    return "://" in os.fspath(path)


def absolute(path: PathLike) -> str:
    """`path` as a stable string: a URI as given (without a trailing /), a local path
    made absolute with `~` expanded (a job may change its working directory)."""
    text = os.fspath(path)
    if is_remote(text):
        return text.rstrip("/")
    return os.path.abspath(os.path.expanduser(text))


def as_path(path: PathLike) -> epath.Path:
    return epath.Path(absolute(path))


def join(base: PathLike, *parts: str) -> str:
    """`base/part/...` as a string, for local paths and URIs alike."""
    return str(as_path(base).joinpath(*parts))


def name(path: PathLike) -> str:
    """The last component of `path` (`gs://b/run/checkpoints` -> `checkpoints`)."""
    return as_path(path).name


def parent(path: PathLike) -> str:
    return str(as_path(path).parent)


def exists(path: PathLike) -> bool:
    return as_path(path).exists()


def isdir(path: PathLike) -> bool:
    return as_path(path).is_dir()


def isfile(path: PathLike) -> bool:
    return as_path(path).is_file()


def listdir(path: PathLike) -> list[str]:
    """The names in directory `path`, sorted; `[]` when it does not exist."""
    directory = as_path(path)
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir())


def glob(directory: PathLike, pattern: str) -> list[str]:
    """Paths in `directory` matching the glob `pattern` (one level), sorted."""
    return sorted(str(p) for p in as_path(directory).glob(pattern))


def makedirs(path: PathLike) -> None:
    """Creates a local directory and its parents. GCS has no directories (a prefix
    exists once an object is under it), so nothing is created there: in particular
    no bucket, which would otherwise appear silently in the default project."""
    if not is_remote(path):
        as_path(path).mkdir(parents=True, exist_ok=True)


def rmtree(path: PathLike) -> None:
    """Deletes a directory tree; a missing one is no error."""
    directory = as_path(path)
    if directory.exists():
        directory.rmtree()


def remove(path: PathLike) -> None:
    file = as_path(path)
    if file.exists():
        file.unlink()


def size(path: PathLike) -> int:
    return int(as_path(path).stat().length)


def read_text(path: PathLike) -> str:
    return as_path(path).read_text(encoding="utf-8")


def read_bytes(path: PathLike) -> bytes:
    return as_path(path).read_bytes()


def open_file(path: PathLike, mode: str = "r") -> Any:
    """An open file object (`r`, `rb`, `w`, `wb`); for reading large files in pieces.
    Writes through this are not atomic: use `write_text` / `write_bytes` for those."""
    return as_path(path).open(mode)


def write_bytes(path: PathLike, data: bytes) -> None:
    """Writes `path` whole, so that no reader ever sees part of it (see module doc)."""
    target = absolute(path)
    if is_remote(target):
        as_path(target).write_bytes(data)
        return
    makedirs(os.path.dirname(target))
    temporary = f"{target}.tmp-{uuid.uuid4().hex}"
    try:
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def append_text(path: PathLike, text: str) -> None:
    """Appends to a local file (GCS objects cannot be appended to: rewrite them)."""
    if is_remote(path):
        raise StorageError(f"{path}: cannot append to a cloud object; rewrite it whole")
    with open(absolute(path), "a", encoding="utf-8") as f:
        f.write(text)


def _files_under(
    directory: epath.Path, parts: tuple[str, ...] = ()
) -> Iterator[tuple[epath.Path, tuple[str, ...]]]:
    """(file, its path components below `directory`) for every file, recursively.
    (Not `Path.walk`: its roots lose the `gs://` scheme with some backends.)"""
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.is_dir():
            yield from _files_under(entry, (*parts, entry.name))
        else:
            yield entry, (*parts, entry.name)


def upload_dir(local_dir: PathLike, destination: PathLike) -> int:
    """Copies the files under local `local_dir` to `destination` (each file written
    whole); returns the bytes copied."""
    copied = 0
    for file, parts in _files_under(epath.Path(absolute(local_dir))):
        data = file.read_bytes()
        write_bytes(join(destination, *parts), data)
        copied += len(data)
    return copied


def download_dir(source: PathLike, local_dir: PathLike) -> None:
    """Copies the files under `source` into the local directory `local_dir`."""
    for file, parts in _files_under(as_path(source)):
        target = epath.Path(absolute(local_dir)).joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())


def staging_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A local temporary directory for files headed to (or read from) storage."""
    return tempfile.TemporaryDirectory(prefix=f"slt-{prefix}-")


def check_writable(directory: PathLike, flag: str) -> None:
    """Creates and deletes a probe file in `directory`; raises `StorageError` naming
    `flag` (the option that set it) and what to check when that fails."""
    target = absolute(directory)
    probe = join(target, f".slt-write-check-{uuid.uuid4().hex}")
    try:
        makedirs(target)
        write_text(probe, "slt write check\n")
        remove(probe)
    except Exception as error:  # noqa: BLE001 (every backend raises its own types)
        detail = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        if is_remote(target):
            fix = (
                "check that the bucket exists (gcloud storage buckets describe "
                f"gs://{target.split('://', 1)[1].split('/')[0]}) and that this machine's "
                "service account may create and delete objects in it "
                "(roles/storage.objectUser)"
            )
        else:
            fix = "check that the directory or its parent exists and is writable"
        raise StorageError(
            f"{flag}={target} cannot be written ({type(error).__name__}: {detail}); {fix}."
        ) from error
    log.info("%s=%s is writable", flag, target)
