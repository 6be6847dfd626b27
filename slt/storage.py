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
- `local_copy` / `local_output`: libraries that read or write only local files
  (MediaPipe's video reader, safetensors' memory map, TensorFlow's SavedModel loader)
  get a local copy of a `gs://` input, or a local file that becomes the `gs://` output
  once it is complete. Local paths are passed through unchanged (no copy).
- `tensorstore_kvstore`: the TensorStore key-value store of a path, so that T5X
  checkpoint arrays are read and written on `gs://` without a copy.
- Path arithmetic that works on URIs too (`split_extension`, `resolve`, `relative_to`).

Everything else in `slt/` and `tasks/` reaches files through this module;
`tests/test_file_api.py` fails on any `open`, `os.path`, `shutil` or `glob` call
elsewhere that is not marked `# local: <why>` (a path that is by nature on this
machine: a temporary directory, the package's own files, a virtual environment).

Docs: docs/training.md, "Run directories on cloud storage".
"""

from __future__ import annotations

import contextlib
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


def split_extension(path: PathLike) -> tuple[str, str]:
    """(`path` without its extension, the extension with its dot), for URIs too:
    `gs://b/clips/a.en.vtt` -> (`gs://b/clips/a.en`, `.vtt`)."""
    text = os.fspath(path)
    slash = text.rfind("/") + 1
    dot = text.rfind(".")
    if dot <= slash:  # no dot in the last component, or only a leading one
        return text, ""
    return text[:dot], text[dot:]


def extension(path: PathLike) -> str:
    """The extension of `path` in lower case (`.mp4`, `.pose`), or `""`."""
    return split_extension(path)[1].lower()


def resolve(base_dir: PathLike, path: PathLike) -> str:
    """`path` as `absolute` would give it, a relative one taken as relative to
    `base_dir` (a manifest's directory, a data root), which may be a URI."""
    text = os.fspath(path)
    if is_remote(text) or os.path.isabs(text):
        return absolute(text)
    base = absolute(base_dir)
    if is_remote(base):
        # No normpath: it would fold `gs://` into `gs:/`; object names keep `..` as is.
        return f"{base}/{text}"
    return os.path.normpath(os.path.join(base, text))


def relative_to(path: PathLike, base_dir: PathLike) -> str:
    """`path` relative to `base_dir` where `resolve(base_dir, ...)` gives it back: for
    two local paths always (with `..` where needed), for a URI only when it lies
    under `base_dir` (object stores have no `..`); otherwise `absolute(path)`."""
    target, base = absolute(path), absolute(base_dir)
    if is_remote(target) or is_remote(base):
        prefix = base + "/"
        return target[len(prefix) :] if target.startswith(prefix) else target
    return os.path.relpath(target, base)


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


def walk_files(directory: PathLike) -> list[str]:
    """Every file under `directory`, recursively, as sorted full paths (a folder of
    downloads on disk or a bucket prefix alike); `[]` when it does not exist."""
    root = as_path(directory)
    if not root.is_dir():
        return []
    return sorted(str(file) for file, _ in _files_under(root))


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


_CHUNK_BYTES = 64 << 20  # copies stream in pieces: a checkpoint shard may not fit in memory


def copy_file(source: PathLike, destination: PathLike) -> int:
    """Copies one file between any two places (local, `gs://`), streamed in pieces and
    finalised as `write_bytes` does (a reader sees all of `destination` or none of it);
    returns the bytes copied."""
    target = absolute(destination)
    copied = 0
    temporary = target if is_remote(target) else f"{target}.tmp-{uuid.uuid4().hex}"
    makedirs(parent(target))
    try:
        with as_path(source).open("rb") as reader, as_path(temporary).open("wb") as writer:
            while chunk := reader.read(_CHUNK_BYTES):
                writer.write(chunk)
                copied += len(chunk)
        if temporary != target:
            os.replace(temporary, target)
    finally:
        if temporary != target and os.path.exists(temporary):
            os.remove(temporary)
    return copied


@contextlib.contextmanager
def local_copy(path: PathLike) -> Iterator[str]:
    """A local path with the contents of file or directory `path`, for a library that
    opens local files only. A local `path` is yielded as it is; a remote one is copied
    into a temporary directory (keeping its name, so its extension still tells the
    format) that is deleted on exit."""
    if not is_remote(path):
        yield absolute(path)
        return
    source = as_path(path)
    with staging_dir("input") as local_dir:
        local = os.path.join(local_dir, source.name)
        if source.is_dir():
            download_dir(source, local)
        elif source.exists():
            copy_file(source, local)
        else:
            raise FileNotFoundError(f"{absolute(path)}: no such file or directory")
        yield local


@contextlib.contextmanager
def local_output(path: PathLike) -> Iterator[str]:
    """A local file name for a library that writes local files only; once the block
    ends without an error, the file becomes `path` whole (renamed on the same disk,
    uploaded to a bucket). On an error nothing is left at `path`."""
    target = absolute(path)
    if not is_remote(target):
        makedirs(parent(target))
        temporary = f"{target}.tmp-{uuid.uuid4().hex}"
        try:
            yield temporary
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return
    with staging_dir("output") as local_dir:
        local = os.path.join(local_dir, name(target))
        yield local
        copy_file(local, target)


def tensorstore_kvstore(path: PathLike) -> dict[str, str]:
    """The TensorStore key-value store spec of a directory: `file` for a local path,
    `gcs` for `gs://bucket/prefix`, so arrays (T5X checkpoints) go to storage
    directly, with TensorStore's own GCS client (`TENSORSTORE_GCS_HTTP_URL` points it at
    an emulator)."""
    target = absolute(path)
    if not is_remote(target):
        return {"driver": "file", "path": target}
    scheme, rest = target.split("://", 1)
    if scheme != "gs":
        raise StorageError(
            f"{target}: TensorStore arrays can be read and written on local disk or gs:// "
            f"only, not {scheme}://; copy the checkpoint to one of them."
        )
    bucket, _, prefix = rest.partition("/")
    return {"driver": "gcs", "bucket": bucket, "path": prefix}


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
    return sum(
        copy_file(file, join(destination, *parts))
        for file, parts in _files_under(epath.Path(absolute(local_dir)))
    )


def download_dir(source: PathLike, local_dir: PathLike) -> None:
    """Copies the files under `source` into the local directory `local_dir` (streamed:
    a SavedModel's variables may be gigabytes)."""
    for file, parts in _files_under(as_path(source)):
        copy_file(file, epath.Path(absolute(local_dir)).joinpath(*parts))


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
