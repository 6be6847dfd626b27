# The Dataflow worker for `python -m slt.prepare --runner=DataflowRunner`: Beam's Python
# 3.11 SDK image (the harness Dataflow starts), slt with the [beam] extra, and the
# MediaPipe environment that `slt.io.video` runs in a subprocess (mediapipe 0.10.21 pins
# numpy<2 and protobuf<5, so it cannot share slt's environment). docs/data_at_scale.md
# has the build and run commands.
#
#   docker build -f launch/dataflow.Dockerfile -t REGION-docker.pkg.dev/PROJECT/slt/prepare .
FROM apache/beam_python3.11_sdk:2.77.0

# OpenCV (inside mediapipe) needs these shared libraries to decode videos.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/slt
COPY setup.py README.md ./
COPY slt ./slt
COPY tasks ./tasks
RUN pip install --no-cache-dir ".[beam]"

# The MediaPipe environment at a fixed path; slt finds it through SLT_MEDIAPIPE_PYTHON.
ENV SLT_MEDIAPIPE_VENV=/opt/mediapipe-venv \
    SLT_MEDIAPIPE_PYTHON=/opt/mediapipe-venv/bin/python
RUN python -m slt.io.video --install --venv "$SLT_MEDIAPIPE_VENV" --python python3.11 \
    && "$SLT_MEDIAPIPE_PYTHON" -c "import mediapipe, cv2"

# Beam's worker harness is the image's entry point, as in the base image.
ENTRYPOINT ["/opt/apache/beam/boot"]
