import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow (used by seqio's data pipeline) off the accelerator JAX may want.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """fake-gcs-server on localhost with bucket `gcs_emulator.BUCKET`, one per session:
    gcsfs and tensorstore keep clients per endpoint, so every module sees the same
    URL. Yields the URL."""
    import gcs_emulator  # imported here: most tests never start it

    with gcs_emulator.serve(tmp_path_factory.mktemp("gcs")) as url:
        yield url


@pytest.fixture(scope="module")
def gcs(gcs_server):
    """This process pointed at the emulator for the module's tests; yields the
    environment variables that point a job's subprocess there too."""
    import gcs_emulator

    with gcs_emulator.pointed_at(gcs_server) as env:
        yield env
