"""Size of report.html: the page of a trained run's final evaluation with 10 and with 100
examples, and its clips against the same frames stored plainly (float32 x and y, base64).

Reads MODEL_DIR/eval (the predictions and metrics.json of `slt.train`'s final evaluation)
and the task's test split; writes the pages to a temporary directory. Prints one JSON line:
per page its bytes, examples and frames, the clip bytes per frame, the plain bytes per
frame and their ratio, and the seconds it took to write.

    python bench/report_size.py --model_dir runs/demo
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time

from slt.evaluation import html_report, trained_model


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", default="runs/demo", help="an slt.train MODEL_DIR")
    args = parser.parse_args(argv)
    restored = trained_model.load_trained_model(args.model_dir)
    task = restored.mixture_or_task_name
    eval_dir = os.path.join(args.model_dir, "eval")
    with open(os.path.join(eval_dir, "metrics.json"), encoding="utf-8") as f:  # local: a bench
        results = json.load(f)
    path = os.path.join(eval_dir, f"{task}.test.predictions.jsonl")
    with open(path, encoding="utf-8") as f:  # local: a bench
        predictions = [json.loads(line) for line in f]
    config = restored.landmark_config
    out = {"task": task, "pages": []}
    with tempfile.TemporaryDirectory() as tmp:
        for worst, best, random in ((3, 3, 4), (30, 30, 40)):
            report_config = html_report.ReportConfig(worst, best, random)
            start = time.perf_counter()
            summary = html_report.write_html_report(
                os.path.join(tmp, "report.html"),
                results,
                {task: predictions},
                "test",
                task_feature_lengths=restored.task_feature_lengths,
                landmark_config=restored.landmark_config,
                config=report_config,
            )
            seconds = time.perf_counter() - start
            examples = html_report.task_examples(
                task, "test", predictions, restored.task_feature_lengths, config, report_config
            )
            clips = [e["clip"] for e in examples if e["clip"] is not None]
            frames = sum(c["frames"] for c in clips)
            clip_bytes = sum(len(c["data"]) for c in clips)
            # The plain peer: float32 x and y of 85 points per frame, base64.
            plain = sum(len(base64.b64encode(bytes(c["frames"] * 85 * 2 * 4))) for c in clips)
            out["pages"].append(
                {
                    **summary,
                    "frames": frames,
                    "clip_bytes_per_frame": round(clip_bytes / frames, 1),
                    "plain_bytes_per_frame": round(plain / frames, 1),
                    "plain_over_ours": round(plain / clip_bytes, 2),
                    "seconds": round(seconds, 2),
                }
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
