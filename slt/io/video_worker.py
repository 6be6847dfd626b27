"""Video -> MediaPipe Holistic landmarks (.npz). Runs in the mediapipe environment.

This file is executed as a script by the MediaPipe environment's Python (see
`slt/io/video.py`); it imports nothing from `slt`, only mediapipe 0.10.21, OpenCV
and numpy<2.

  <mediapipe python> video_worker.py VIDEO OUT.npz

Writes `data` float32 [T, 553, 3], `conf` float32 [T, 553] and `fps`: pose 33, the
refined face 478, left hand 21, right hand 21 (pose-format's 553-point holistic
layout). Coordinates follow pose-format's `video_to_pose`: x and y in pixels, z as
MediaPipe gives it; confidence is the pose points' visibility, and 1 for detected
face and hand points (0 and zeros where MediaPipe found none).
"""

import sys

import cv2
import mediapipe as mp
import numpy as np

COMPONENTS = (
    ("pose_landmarks", 33, True),
    ("face_landmarks", 478, False),
    ("left_hand_landmarks", 21, False),
    ("right_hand_landmarks", 21, False),
)


def _frame(results, width, height):
    data, conf = [], []
    for attribute, size, visibility in COMPONENTS:
        component = getattr(results, attribute)
        if component is None:
            data.append(np.zeros((size, 3), np.float32))
            conf.append(np.zeros(size, np.float32))
            continue
        points = component.landmark
        data.append(np.array([[p.x * width, p.y * height, p.z] for p in points], np.float32))
        conf.append(
            np.array(
                [p.visibility for p in points] if visibility else np.ones(len(points)), np.float32
            )
        )
    return np.concatenate(data), np.concatenate(conf)


def main(video_path, out_path):
    capture = cv2.VideoCapture(video_path)
    if not capture.isOpened():
        print(f"{video_path}: OpenCV cannot open the video.", file=sys.stderr)
        return 2
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    datas, confs = [], []
    # model_complexity=1 is the only one whose model ships in the 0.10.21 wheel
    # (0 and 2 download at construction, which fails offline).
    with mp.solutions.holistic.Holistic(
        static_image_mode=False, model_complexity=1, refine_face_landmarks=True
    ) as holistic:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            height, width = frame.shape[:2]
            results = holistic.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            data, conf = _frame(results, width, height)
            datas.append(data)
            confs.append(conf)
    capture.release()
    if not datas:
        print(f"{video_path}: the video has no readable frames.", file=sys.stderr)
        return 3
    np.savez(out_path, data=np.stack(datas), conf=np.stack(confs), fps=np.float32(fps))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    sys.exit(main(sys.argv[1], sys.argv[2]))
