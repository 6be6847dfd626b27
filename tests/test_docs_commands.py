"""The commands of README.md and docs/*.md, as a user copies them.

Default run (seconds): every `python -m slt.<job>` command of a ```bash block is parsed by
the job's own argument parser, and a gin job's files, bindings and required bindings by
gin, without running the job; every such command is found. Slow: the README's and
docs/data.md's walk-throughs run, reduced with bindings (a tiny model, a few steps), in a
fresh working directory. tests/test_docs_runs.py runs the other pages' commands.
"""

import argparse
import dataclasses
import glob
import json
import logging
import os
import re
import shlex
import subprocess
import sys

import gin
import pytest
from tiny_train_flags import TINY_TRAIN_FLAGS

from slt import gin_utils

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# docs/results.md belongs to the study's report; its commands run a study of hours.
PAGES = ["README.md"] + sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "docs", "*.md"))
    if not p.endswith("results.md")
)
GIN_JOBS = ("slt.train", "slt.eval", "slt.infer", "slt.compile_check", "slt.experiment")


@dataclasses.dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str  # as a shell runs it, continuation lines joined

    @property
    def argv(self) -> list[str]:
        words = shlex.split(
            self.text.split("\n")[0] if "<<" in self.text else self.text, comments=True
        )
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value python ...
            words.pop(0)
        for i, word in enumerate(words):  # up to a shell operator: `... &`, `... | head`
            if word in ("&", ";", "|", ">", "2>", "&&", "||"):
                return words[:i]
        return words

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def _quotes_closed(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return "<<" in text  # a here-document's first line is complete
    return True


def shell_commands(page: str) -> list[Command]:
    """The commands of the page's ```bash blocks: continuation lines joined, `&&` chains
    split, a here-document kept whole with its command."""
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        lines = f.read().splitlines()
    commands, block, i = [], False, 0
    while i < len(lines):
        line, start = lines[i], i + 1
        i += 1
        if line.strip().startswith("```"):
            block = not block and line.strip() in ("```bash", "```sh")
            continue
        if not block or not line.strip() or line.strip().startswith("#"):
            continue
        text = line.strip()
        while i < len(lines) and (text.endswith("\\") or not _quotes_closed(text)):
            if text.endswith("\\"):
                text = text[:-1] + " " + lines[i].strip()
            else:  # a quoted argument over several lines (python -c "...")
                text += "\n" + lines[i]
            i += 1
        heredoc = re.search(r"<<'?(\w+)'?", text)
        if heredoc:
            body = []
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            commands.append(Command(page, start, text + "\n" + "\n".join(body)))
            continue
        commands += [Command(page, start, part.strip()) for part in text.split(" && ")]
    return commands


ALL = [c for page in PAGES for c in shell_commands(page)]
JOBS = [c for c in ALL if c.argv[:2] == ["python", "-m"] and c.argv[2].startswith("slt.")]


def test_the_pages_commands_are_found():
    # The commands the default run checks below; a page whose blocks stop parsing
    # (an unclosed fence) would drop them silently.
    assert len(JOBS) >= 50, [str(c) for c in JOBS]
    modules = {c.argv[2] for c in JOBS}
    assert {"slt.train", "slt.eval", "slt.infer", "slt.translate", "slt.prepare"} <= modules
    assert {"slt.export", "slt.compile_check", "slt.manifest_makers", "slt.io.video"} <= modules


class _Parsed(Exception):
    """Raised in place of running a job once its arguments parsed."""


def _check_gin_job(module: str, argv: list[str]) -> None:
    """Parses the gin files and bindings as the job would, then checks that every
    required binding of the job is set."""
    if module == "slt.compile_check":
        from slt import compile_check
        from slt import train as train_job

        own, argv = compile_check._parse_own_args(argv)
        assert own.topology, "--topology is required"
        # It reads these two of train's bindings (compile_check.CheckConfig).
        job, required = train_job.train, {"task_feature_lengths", "batch_size"}
    elif module == "slt.experiment":
        pytest.skip("slt.experiment's commands are in docs/results.md")
    else:
        job = getattr(
            __import__(module, fromlist=["_"]), module.split(".")[1].replace("eval", "evaluate")
        )
        required = None  # every gin.REQUIRED parameter
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        gin_utils.parse_gin_args(argv, job)
        for name, parameter in inspect_parameters(job):
            if parameter.default is gin.REQUIRED and (required is None or name in required):
                try:
                    gin.query_parameter(f"{job.__name__}.{name}")
                except ValueError:
                    pytest.fail(f"{job.__name__}.{name} is not set")
    finally:
        gin.clear_config()
        root.handlers[:] = handlers
        root.setLevel(level)


def inspect_parameters(job):
    import inspect

    return inspect.signature(job).parameters.items()


def _check_argparse_job(module: str, argv: list[str], monkeypatch) -> None:
    """Runs the job's `main(argv)` until its parser has parsed `argv`."""
    parse_known_args = argparse.ArgumentParser.parse_known_args

    def parse_then_stop(self, args=None, namespace=None):
        parsed = parse_known_args(self, args, namespace)
        raise _Parsed(parsed)

    # parse_args calls it too, and so does a command's subparser.
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_then_stop)
    job = __import__(module, fromlist=["main"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with pytest.raises(_Parsed):
            job.main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("command", JOBS, ids=[f"{c.page}:{c.line}" for c in JOBS])
def test_documented_job_command_parses(command, monkeypatch, capsys, tmp_path):
    module, argv = command.argv[2], command.argv[3:]
    monkeypatch.chdir(tmp_path)  # relative paths of the command land here, if any
    if module in GIN_JOBS:
        _check_gin_job(module, argv)
    else:
        _check_argparse_job(module, argv, monkeypatch)
    err = capsys.readouterr().err
    assert "error:" not in err, f"{command}\n{err}"


# ------------------------------------------------------------------ run, reduced (slow)

# Appended to each training command: the tiny model, 4 steps.
TINY = [
    *TINY_TRAIN_FLAGS[1:],
    "--gin.train.train_steps=4",
    "--gin.slt.OptimizerConfig.decay_steps=4",
    "--gin.slt.CheckpointConfig.period=4",
]


def _run(command: str, cwd, extra: list[str] = (), timeout: int = 900) -> str:
    """Runs `command` with `extra` arguments in `cwd`, as a shell would; returns its
    output, failing with it on a non-zero status."""
    text = command + "".join(" " + shlex.quote(a) for a in extra)
    env = dict(
        os.environ, PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])
    )
    result = subprocess.run(
        ["bash", "-c", text], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{text}\n{output[-4000:]}"
    return output


def _find(page: str, start: str) -> Command:
    found = [c for c in shell_commands(page) if c.text.startswith(start)]
    assert found, f"{page} has no command starting with {start!r}"
    return found[0]


@pytest.mark.slow
def test_readme_walk_through_runs_reduced(tmp_path):
    train = _find("README.md", "python -m slt.train --gin_file=runs/demo.gin --gin.MODEL_DIR=")
    assert "pip install" not in train.text
    out = _run(train.text, tmp_path, TINY)
    assert "final evaluation (test split)" in out and "chrF signature" in out
    out = _run(_find("README.md", "python -m slt.eval").text, tmp_path)
    assert os.path.exists(tmp_path / "runs" / "demo" / "eval_4_test" / "metrics.json"), out
    _run(_find("README.md", "python -m slt.infer").text, tmp_path)
    assert glob.glob(str(tmp_path / "runs" / "demo" / "infer" / "*.predictions-*.jsonl"))
    readme = [c for c in shell_commands("README.md") if c.text.startswith('python -c "')]
    _run(readme[0].text, tmp_path)  # writes august.npy
    out = _run(_find("README.md", "python -m slt.translate").text, tmp_path)
    assert out.startswith("august.npy\t") or "\naugust.npy\t" in out, out
    _run(_find("README.md", "python -m slt.export").text, tmp_path)
    with open(tmp_path / "exports" / "demo_hf" / "config.json") as f:
        assert json.load(f)["d_model"] == 32


@pytest.mark.slow
def test_data_walk_through_runs_reduced(tmp_path):
    heredoc = _find("docs/data.md", "python - <<'EOF'")
    _run(heredoc.text, tmp_path)
    out = _run(
        _find(
            "docs/data.md",
            "python -m slt.prepare --manifest=letters.jsonl --output_dir=data/letters ",
        ).text,
        tmp_path,
    )
    assert '"num_written": 8' in out and '"missing_file": 1' in out, out
    # Its recipe for training on the prepared directory, which has no test split yet:
    # refused before training, then trained without the final evaluation.
    gin_text = _read("docs/data.md").split("From gin, without Python:\n\n```\n")[1]
    gin_text = gin_text.split("```")[0].replace("data/mycorpus", "data/letters")
    (tmp_path / "letters.gin").write_text("include 'runs/demo.gin'\n" + gin_text)
    train = [
        sys.executable,
        "-m",
        "slt.train",
        "--gin_file=letters.gin",
        '--gin.MODEL_DIR="runs/letters"',
        *TINY,
    ]
    result = subprocess.run(train, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "task mycorpus_slt has no split 'test'" in result.stderr, result.stderr
    assert not (tmp_path / "runs" / "letters" / "checkpoints").exists()
    result = subprocess.run(
        [*train, "--gin.slt.EvalConfig.final=False"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "runs" / "letters" / "checkpoints" / "4").is_dir()


# ------------------------------------------------------------------ figures


def _read(page: str) -> str:
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return f.read()


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_to_bench_results_name_its_sections():
    """A figure quoted in the docs links to the section of bench/RESULTS.md that holds
    it: each such link's anchor is a heading there."""
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", _read("bench/RESULTS.md"), re.M)}
    links = [
        (page, anchor)
        for page in PAGES
        for anchor in re.findall(r"RESULTS\.md#([\w\-]+)", _read(page))
    ]
    assert len(links) >= 5
    assert [link for link in links if link[1] not in anchors] == []


def test_demo_figures_match_the_current_runs_table():
    """The demo's chrF and exact match as the README and docs quote them are those of
    the latest measured run, the table under "Current runs" in bench/RESULTS.md."""
    results = _read("bench/RESULTS.md")
    current = results[results.index("## Current runs") :]
    current = current[: current.index("\n## ")]
    chrf = re.search(r"^\| chrF \| \*\*([\d.]+)\*\* \|$", current, re.M).group(1)
    exact = re.search(r"^\| exact match \| ([\d.]+)% ", current, re.M).group(1)
    exact_fraction = f"{float(exact) / 100:.3f}"
    readme = _read("README.md")
    assert re.search(
        rf"^fingerspelling_slt_ase_en +0\.00 +{chrf} +{exact_fraction} +127$", readme, re.M
    )
    assert f"test chrF {chrf} and {exact}% exact match" in _read("docs/architecture.md")
    evaluation = _read("docs/evaluation.md")
    assert f"The demo gets chrF {chrf} and BLEU" in evaluation
    assert f"against {chrf} with its own joint decoding" in evaluation


# ------------------------------------------------------------------ Python in the docs

# `python -c` one-liners that only read: they run in the default tests. The README's
# writes a clip for the walk-through, which runs it.
READ_ONLY_ONE_LINERS = [
    c for c in ALL if c.text.startswith('python -c "') and c.page != "README.md"
]


def test_read_only_one_liners_are_found():
    assert len(READ_ONLY_ONE_LINERS) >= 3, [str(c) for c in READ_ONLY_ONE_LINERS]


@pytest.mark.parametrize(
    "command", READ_ONLY_ONE_LINERS, ids=[f"{c.page}:{c.line}" for c in READ_ONLY_ONE_LINERS]
)
def test_documented_one_liner_runs(command, tmp_path):
    out = _run(command.text, tmp_path, timeout=300)
    assert "Traceback" not in out, f"{command}\n{out}"


def _snippet_imports() -> list[tuple[str, str]]:
    """(page, statement) for each `import`/`from` of slt in the pages' Python blocks,
    here-documents and `python -c` commands."""
    out = []
    for page in ["README.md", "CONTRIBUTING.md"] + PAGES[1:] + ["docs/results.md"]:
        text = _read(page)
        snippets = re.findall(r"```python\n(.*?)```", text, re.S)
        snippets += re.findall(r'python -c "(.*?)"', text, re.S)
        snippets += re.findall(r"python - <<'EOF'\n(.*?)\nEOF", text, re.S)
        for snippet in snippets:
            for line in snippet.splitlines():
                for statement in line.split("#")[0].split(";"):
                    statement = statement.strip()
                    if statement.startswith(("import slt", "from slt")):
                        out.append((page, statement))
    return out


def test_the_docs_python_imports_name_what_exists():
    """Every import of slt in the docs' Python snippets runs: a module the layout moved
    or renamed fails here."""
    imports = _snippet_imports()
    assert len(imports) >= 20, imports
    failed = []
    for page, statement in imports:
        try:
            exec(statement, {})
        except ImportError as error:
            failed.append(f"{page}: {statement}: {error}")
    assert not failed, "\n".join(failed)
