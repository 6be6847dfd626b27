"""report.html: what it holds, how big it is, and how it behaves in headless Chromium.

The browser tests drive Debian's `chromium` over the DevTools protocol on a pipe
(`--remote-debugging-pipe`: NUL-terminated JSON on file descriptors 3 and 4), so no
browser automation package is needed. `.ci/run` installs chromium; without it those
tests are skipped.
"""

import base64
import contextlib
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time

import numpy as np
import pytest
from helpers import tiny_t5_config

from slt import tasks
from slt import train as train_lib  # sets XLA flags before JAX starts
from slt.data import landmarks
from slt.evaluation import evaluate as evaluate_lib
from slt.evaluation import html_report, predict, prediction_files
from slt.training import checkpoints

TASK = "fingerspelling_slt_ase_en"
LENGTHS = {"landmarks": 160, "inputs": 24, "targets": 24}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (.ci/run installs Debian's chromium package)",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model trained for 4 steps; its final evaluation writes eval/report.html."""
    model_dir = str(tmp_path_factory.mktemp("run"))
    train_lib.train(
        model_dir=model_dir,
        mixture_or_task_name=TASK,
        task_feature_lengths=LENGTHS,
        batch_size=16,
        train_steps=4,
        checkpoint_config=checkpoints.CheckpointConfig(period=100),
        log_period=2,
        tensorboard=False,
        network_config=tiny_t5_config(landmark_stride=2),
        eval_config=evaluate_lib.EvalConfig(split="test", batch_size=64),
    )
    return model_dir


def _predictions(model_dir):
    path = os.path.join(model_dir, "eval", f"{TASK}.test.predictions.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _clips(page: str) -> dict:
    start = page.index("<script id='report-data' type='application/json'>")
    text = page[page.index(">", start) + 1 : page.index("</script>", start)]
    return json.loads(text.replace("<\\/", "</"))["clips"]


# -- the page's contents, without a browser ------------------------------------------


def test_select_examples_worst_best_and_seeded_random():
    scores = [50.0, 10.0, 90.0, 10.0, 70.0, 30.0, 60.0, 20.0]
    config = html_report.ReportConfig(worst=2, best=2, random=2, seed=3)
    chosen = html_report.select_examples(scores, config)
    assert chosen[:4] == [(1, "worst"), (3, "worst"), (2, "best"), (4, "best")]
    random_ones = [i for i, why in chosen if why == "random"]
    assert len(random_ones) == 2 and not set(random_ones) & {1, 3, 2, 4}
    assert html_report.select_examples(scores, config) == chosen  # seeded
    # More asked for than there are: each example once.
    many = html_report.select_examples(scores[:3], html_report.ReportConfig(5, 5, 5))
    assert sorted(i for i, _ in many) == [0, 1, 2]
    assert html_report.select_examples(scores, html_report.ReportConfig(0, 0, 0)) == []


def test_char_diff_marks_what_each_side_lacks():
    diff = html_report.char_diff_html("Hebrw <x>", "Hebrew")
    assert diff == "Hebr<del>e</del>w<ins> &lt;x&gt;</ins>"


def test_model_points_undo_standardisation_and_keep_missing_points_missing():
    config = landmarks.LandmarkConfig(
        feature_mean=tuple([0.5] * landmarks.FRAME_DIM),
        feature_std=tuple([0.25] * landmarks.FRAME_DIM),
    )
    frames = np.full((3, landmarks.FRAME_DIM), 2.0, np.float32)  # standardised 2 -> 1.0
    frames[1] = config.missing_value  # a frame without landmarks
    frames[2, :3] = config.missing_value  # one missing point
    points, present = html_report.model_points(frames, config)
    assert present.sum(axis=1).tolist() == [85, 0, 84]
    assert np.allclose(points[present], 1.0)
    clip = html_report.encode_clip(points, present)
    codes, decoded = html_report.decode_clip(clip)
    assert (decoded == present).all() and clip["missing_frames"] == 1
    # A gap is the missing code, never a zero coordinate.
    assert (codes[1] == html_report.MISSING_CODE).all() and (codes[2, 0] == 65535).all()


def test_final_evaluation_writes_report_html(model_dir):
    path = os.path.join(model_dir, "eval", "report.html")
    with open(path, encoding="utf-8") as f:
        page = f.read()
    predictions = _predictions(model_dir)
    scores = html_report.sentence_chrf(predictions)
    assert "<table class='metrics'>" in page and "chrf_signature" in page
    assert page.count("<div class='example ") == 10
    assert page.count("class='why'>worst<") == 3 and page.count("class='why'>best<") == 3
    # The worst example shown is the split's lowest sentence chrF.
    worst = min(range(len(scores)), key=lambda i: (scores[i], i))
    assert f"#{worst} <code>{predictions[worst]['id']}</code>" in page
    assert page.count("src='data:image/png;base64,") == 2  # metrics and training curves
    assert "http://" not in page and "https://" not in page  # opens offline
    # The clips are the model's input frames, read again from the split.
    clips = _clips(page)
    assert len(clips) == 10
    ds = predict.task_dataset(TASK, "test", LENGTHS)
    first = next(ds.as_numpy_iterator())
    config = tasks.landmark_config(TASK)
    points, present = html_report.model_points(first["landmarks"], config)
    [shown] = html_report.task_examples(
        TASK, "test", predictions[:1], LENGTHS, config, html_report.ReportConfig(0, 0, 1)
    )
    assert shown["clip"] == html_report.encode_clip(points, present)
    assert shown["clip"]["frames"] == len(first["landmarks"])


def test_a_hundred_examples_stay_under_two_megabytes(model_dir, tmp_path):
    """Quantised, delta coded, compressed clips: 100 examples of the embedded corpus
    (about 80 frames each) take about 1.5 MB."""
    with open(os.path.join(model_dir, "eval", "metrics.json"), encoding="utf-8") as f:
        results = json.load(f)
    summary = html_report.write_html_report(
        str(tmp_path / "report.html"),
        results,
        {TASK: _predictions(model_dir)},
        "test",
        task_feature_lengths=LENGTHS,
        landmark_config=tasks.landmark_config(TASK),
        config=html_report.ReportConfig(worst=30, best=30, random=40),
    )
    assert summary["examples"] == summary["clips"] == 100
    assert summary["bytes"] == os.path.getsize(tmp_path / "report.html") < 2_000_000


# -- in the browser -----------------------------------------------------------------------


def _pipe_from_10() -> tuple[int, int]:
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe."""

    def __init__(self, user_data_dir, width: int = 1100, height: int = 1400):
        # The browser reads commands on fd 3 and writes on fd 4; bash puts the pipe
        # ends there (numbered from 10 up, so neither is 3 or 4 before it is moved).
        self._to_browser_r, self._to_browser_w = _pipe_from_10()
        self._from_browser_r, self._from_browser_w = _pipe_from_10()
        read_end, write_end = self._to_browser_r, self._from_browser_w
        self.process = subprocess.Popen(
            [
                "bash",  # dash's redirections take one-digit descriptors only
                "-c",
                f'exec "$0" "$@" 3<&{read_end} 4>&{write_end} {read_end}<&- {write_end}>&-',
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                f"--user-data-dir={user_data_dir}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(read_end, write_end),
        )
        os.close(self._to_browser_r)
        os.close(self._from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session = None

    def close(self):
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            self.send("Browser.close", session=False, timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser_w)
        os.close(self._from_browser_r)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser_r], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_browser_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (status {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params=None, session=True, timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._read_message(deadline))

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, False
        )
        self.session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{expression} stayed false for {timeout} s")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries so far."""
        self.send("Runtime.evaluate", {"expression": "0"})  # collects pending events
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(" ".join(str(a.get("value")) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def screenshot(self) -> np.ndarray:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


@pytest.fixture
def browser(tmp_path):
    chromium = Chromium(tmp_path / "chromium-profile")
    yield chromium
    chromium.close()


@needs_chromium
def test_report_plays_in_chromium_without_errors(model_dir, browser):
    path = os.path.join(model_dir, "eval", "report.html")
    browser.open("file://" + path)
    assert browser.wait_for("document.body.dataset.ready") == "10"
    assert browser.evaluate("document.querySelectorAll('table.metrics tr').length") == 2
    # Both plots decoded (a broken data URI has no natural width).
    widths = browser.evaluate("[...document.images].map(i => i.complete && i.naturalWidth)")
    assert len(widths) == 2 and min(widths) > 300
    frames = "[...document.querySelectorAll('.clip[data-clip]')].map(c => +c.dataset.frame)"
    before = browser.evaluate(frames)
    time.sleep(0.6)  # 15 frames/s: about 9 frames
    after = browser.evaluate(frames)
    assert len(before) == 10 and all(a != b for a, b in zip(after, before))
    # The drawn points of frame 0 of the first clip are the clip's present points.
    with open(path, encoding="utf-8") as f:
        clip = _clips(f.read())["0-0"]
    _, present = html_report.decode_clip(clip)
    first = "document.querySelector('.clip[data-clip]')"
    browser.evaluate(f"{first}.querySelector('button.play').click()")  # pause
    browser.evaluate(
        f"(s => {{ s.value = '0'; s.dispatchEvent(new Event('input')); }})"
        f"({first}.querySelector('input'))"
    )
    assert browser.evaluate(f"{first}.dataset.frame") == "0"
    assert int(browser.evaluate(f"{first}.dataset.points")) == int(present[0].sum())
    assert browser.errors() == []
    shot = browser.screenshot()
    assert shot.shape[0] >= 1000 and shot.shape[1] >= 1000
    # Not blank: many colours (text, plot lines, skeleton) and a spread of brightness.
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200 and shot.std() > 20


@needs_chromium
def test_gaps_text_only_examples_and_an_empty_task_in_chromium(model_dir, browser, tmp_path):
    """A clip with missing frames draws nothing there (a note says so); a text task
    shows text only; a task with 0 examples in the report says so."""
    ds = predict.task_dataset(TASK, "test", LENGTHS)
    frames = next(ds.as_numpy_iterator())["landmarks"].copy()
    config = tasks.landmark_config(TASK)
    frames[5:9] = config.missing_value
    points, present = html_report.model_points(frames, config)
    clip = html_report.encode_clip(points, present)
    prediction = _predictions(model_dir)[0]
    text_task = "fingerspelling_mt_en_de"
    text_example = next(predict.task_dataset(text_task, "test", LENGTHS).as_numpy_iterator())
    target = text_example["targets_pretokenized"].decode()
    example = {
        "position": 0,
        "why": "worst",
        "id": prediction["id"],
        "prompt": prediction["prompt"],
        "prediction": prediction["prediction"],
        "target": prediction["target"],
        "chrf": 0.0,
        "diff": html_report.char_diff_html(prediction["prediction"], prediction["target"]),
        "language": None,
        "clip": clip,
    }
    text = {
        **example,
        "prompt": text_example["inputs_pretokenized"].decode(),
        "prediction": target[:-1],
        "target": target,
        "diff": html_report.char_diff_html(target[:-1], target),
        "language": "de",
        "clip": None,
    }
    results = {TASK: {"num_examples": 1}, text_task: {"num_examples": 1}, "empty": {}}
    page = html_report.render_html(
        "gaps", "test", results, {TASK: [example], text_task: [text]}, {TASK: 15.0}, None, None
    )
    path = tmp_path / "gaps.html"
    path.write_text(page, encoding="utf-8")
    browser.open(f"file://{path}")
    assert browser.wait_for("document.body.dataset.ready") == "1"
    assert browser.evaluate("document.querySelectorAll('.clip.none').length") == 1
    assert "0 examples in this report" in browser.evaluate("document.body.innerText")
    assert "4 of " in browser.evaluate("document.querySelector('.clip .note').innerText")
    clip_el = "document.querySelector('.clip[data-clip]')"
    browser.evaluate(f"{clip_el}.querySelector('button.play').click()")
    for frame, drawn in ((6, 0), (9, int(present[9].sum()))):
        browser.evaluate(
            f"(s => {{ s.value = '{frame}'; s.dispatchEvent(new Event('input')); }})"
            f"({clip_el}.querySelector('input'))"
        )
        assert browser.evaluate(f"{clip_el}.dataset.points") == str(drawn)
    assert browser.errors() == []


def test_infer_report_from_prediction_shards(model_dir, tmp_path):
    """slt.infer's report reads its shards back and scores them as slt.eval does."""
    from slt import infer

    predictions = _predictions(model_dir)
    out = str(tmp_path / "infer")
    os.makedirs(out)
    for k in range(2):  # two shards, as infer writes them
        prediction_files.write_jsonl(
            prediction_files.shard_path(out, TASK, "test", k), predictions[64 * k : 64 * (k + 1)]
        )
    config = tasks.landmark_config(TASK)
    path = infer.write_report(out, [TASK], "test", LENGTHS, config, html_report.ReportConfig(), "t")
    with open(path, encoding="utf-8") as f:
        page = f.read()
    with open(os.path.join(model_dir, "eval", "metrics.json"), encoding="utf-8") as f:
        chrf = json.load(f)[TASK]["chrf"]
    assert f"<td>{chrf:.2f}</td>" in page and len(_clips(page)) == 10


@needs_chromium
def test_translate_report_shows_the_model_clip_and_the_source_file(model_dir, tmp_path, browser):
    from slt import translate
    from slt.io import readers
    from slt.tasks.fingerspelling import corpus

    letters = [path for path, _, sign, _ in corpus._index() if sign == "ase"][:2]
    report = str(tmp_path / "translations.html")
    status = translate.main(
        ["--checkpoint", model_dir, "--target_lang", "en", "--html_report", report, *letters]
    )
    assert status == 0
    with open(report, encoding="utf-8") as f:
        clips = _clips(f.read())
    assert sorted(clips) == ["0-0", "0-0-source", "0-1", "0-1-source"]
    pose = readers.read_holistic(letters[0])
    assert clips["0-0-source"]["frames"] == len(pose.points)
    assert clips["0-0"]["frames"] == len(
        translate.preprocess(letters[0], landmarks.LandmarkConfig())
    )
    browser.open(f"file://{report}")
    assert browser.wait_for("document.body.dataset.ready") == "4"
    assert "no references" in browser.evaluate("document.body.innerText")
    assert browser.errors() == []


def test_text_task_examples_have_no_clip_and_an_empty_list_has_none():
    text_task = "fingerspelling_mt_en_de"
    examples = list(predict.task_dataset(text_task, "test", LENGTHS).take(4).as_numpy_iterator())
    predictions = [
        {
            "id": e["id"].decode(),
            "prompt": e["inputs_pretokenized"].decode(),
            "prediction": e["targets_pretokenized"].decode()[:-2],
            "target": e["targets_pretokenized"].decode(),
        }
        for e in examples
    ]
    config = landmarks.LandmarkConfig()
    shown = html_report.task_examples(
        text_task, "test", predictions, LENGTHS, config, html_report.ReportConfig(1, 1, 2)
    )
    assert [e["clip"] for e in shown] == [None] * 4
    assert sorted(e["id"] for e in shown) == sorted(p["id"] for p in predictions)
    assert all(0 < e["chrf"] < 100 and "<del>" in e["diff"] for e in shown)
    assert (
        html_report.task_examples(
            text_task, "test", [], LENGTHS, config, html_report.ReportConfig()
        )
        == []
    )


def test_a_broken_training_log_is_named_on_the_page(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": \n{"step": 3, "loss": 1.0}\n')
    path = tmp_path / "report.html"
    html_report.write_html_report(
        str(path),
        {},
        {},
        "test",
        task_feature_lengths=None,
        landmark_config=landmarks.LandmarkConfig(),
        training_log=str(log),
    )
    page = path.read_text(encoding="utf-8")
    assert f"Training curves left out: {log}, line 2: not JSON" in page
    assert "No tasks were evaluated" in page
    # A last line cut off mid-write is what a killed run leaves: it is skipped.
    log.write_text('{"step": 1, "loss": 2.0, "accuracy": 0.1}\n{"step": 2, "lo')
    records = html_report.read_training_log(str(log))
    assert records == [{"step": 1, "loss": 2.0, "accuracy": 0.1}]
    assert html_report.training_curves_png(records, lambda count: 1e-3 * count)[:4] == b"\x89PNG"
