"""Video -> MediaPipe Holistic landmarks, through a separate Python environment.

mediapipe 0.10.21 is the last release whose wheel ships the Holistic models (and it
runs offline only with model_complexity=1), but it pins numpy<2 and protobuf<5,
which the training stack cannot use. So it lives in an environment of its own, and
`slt` runs `video_worker.py` there in a subprocess.

Install that environment once (about 300 MB; needs the package registry):

    python -m slt.io.video --install

which runs `python3.11 -m venv <DIR> && <DIR>/bin/pip install mediapipe==0.10.21
"numpy<2"`. <DIR> is `$SLT_MEDIAPIPE_VENV` if set, else `~/.cache/slt/mediapipe-venv`.
To use an existing environment, point `SLT_MEDIAPIPE_PYTHON` at its python.

Extract one video (writes .npz, which `read_holistic` reads):

    python -m slt.io.video VIDEO.mp4 OUT.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile

from slt import gin_utils, storage
from slt.data import errors
from slt.io import arrays
from slt.io.pose_files import HolisticPose

PYTHON_ENV_VAR = "SLT_MEDIAPIPE_PYTHON"
VENV_ENV_VAR = "SLT_MEDIAPIPE_VENV"
# local: the MediaPipe environment is a virtual environment on this machine
DEFAULT_VENV = os.path.join("~", ".cache", "slt", "mediapipe-venv")
MEDIAPIPE_REQUIREMENTS = ("mediapipe==0.10.21", "numpy<2")
# local: a file of this package
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "video_worker.py")
INSTALL_COMMAND = "python -m slt.io.video --install"


def venv_dir() -> str:
    # local: a virtual environment on this machine
    return os.path.expanduser(os.environ.get(VENV_ENV_VAR) or DEFAULT_VENV)


def mediapipe_python() -> str:
    """The MediaPipe environment's python: $SLT_MEDIAPIPE_PYTHON, else the venv's."""
    # local: an interpreter on this machine
    return os.environ.get(PYTHON_ENV_VAR) or os.path.join(venv_dir(), "bin", "python")


def backend_available() -> bool:
    return os.path.isfile(mediapipe_python())  # local: an interpreter on this machine


def extract_holistic(path: str, timeout_s: float | None = 3600) -> HolisticPose:
    """Runs MediaPipe Holistic on every frame of a video (553-point layout).

    Raises:
      BadInput: `video_backend_missing` (the environment is not installed; the
        message gives the install command) or `video_failed` (OpenCV or MediaPipe
        failed; the message has its stderr).
    """
    python = mediapipe_python()
    if not os.path.isfile(python):  # local: an interpreter on this machine
        raise errors.BadInput(
            "video_backend_missing",
            f"{path}: reading videos needs the MediaPipe environment, and {python} does "
            f"not exist. Install it with `{INSTALL_COMMAND}`, or set {PYTHON_ENV_VAR} to "
            "the python of an environment with mediapipe==0.10.21.",
        )
    # OpenCV opens local files only: a gs:// video is copied to a temporary file first.
    with storage.local_copy(path) as video, tempfile.TemporaryDirectory(prefix="slt-video-") as tmp:
        out = os.path.join(tmp, "landmarks.npz")  # local: in the temporary directory
        env = dict(
            os.environ,
            PYTHONNOUSERSITE="1",
            PYTHONPATH="",
            GLOG_minloglevel="2",
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        try:
            done = subprocess.run(
                [python, WORKER, video, out],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
            )
        except subprocess.TimeoutExpired as e:
            raise errors.BadInput(
                "video_failed", f"{path}: MediaPipe took over {timeout_s} s; split the video."
            ) from e
        if done.returncode != 0 or not os.path.exists(out):  # local: in the temporary directory
            tail = (done.stderr or "").strip().splitlines()[-5:]
            raise errors.BadInput(
                "video_failed",
                f"{path}: MediaPipe extraction failed (exit {done.returncode}): {' | '.join(tail)}",
            )
        pose = arrays.read_npz(out)
    return dataclasses.replace(pose, source=path)


def install(directory: str | None = None, python: str = "python3.11") -> str:
    """Creates the MediaPipe environment; returns its python."""
    # `venv` refuses a symlinked directory (e.g. a cache dir linked elsewhere): use its target.
    # local: a virtual environment (as are the paths below)
    directory = os.path.realpath(os.path.expanduser(directory or venv_dir()))
    subprocess.run([python, "-m", "venv", directory], check=True)
    pip = os.path.join(directory, "bin", "pip")  # local: in the virtual environment
    subprocess.run([pip, "install", *MEDIAPIPE_REQUIREMENTS], check=True)
    return os.path.join(directory, "bin", "python")  # local: in the virtual environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m slt.io.video",
        description=__doc__,
        formatter_class=gin_utils.HelpFormatter,
    )
    parser.add_argument("video", nargs="?", help="a video file OpenCV reads (.mp4, ...)")
    parser.add_argument("output", nargs="?", help="the .npz to write")
    parser.add_argument(
        "--install", action="store_true", help="create the MediaPipe environment and exit"
    )
    parser.add_argument(
        "--venv",
        default=None,
        help=f"where --install puts it (default: ${VENV_ENV_VAR}, else {DEFAULT_VENV})",
    )
    parser.add_argument(
        "--python", default="python3.11", help="the interpreter --install builds the venv from"
    )
    args = gin_utils.parse_args(parser, argv)
    if args.install:
        print(install(args.venv, args.python))
        return 0
    if not args.video or not args.output:
        parser.error("give VIDEO and OUTPUT.npz, or --install")
    pose = extract_holistic(args.video)
    arrays.write_npz(args.output, pose.points, pose.present.astype("float32"), pose.fps)
    print(
        f"{args.output}: {pose.num_frames} frames, {pose.points.shape[1]} points, "
        f"{pose.fps:.2f} fps",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    gin_utils.run_job(main)
