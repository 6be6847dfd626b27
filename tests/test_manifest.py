"""Manifest rows with fields the manifest does not define are reported, not misread."""

import json
import os

import pytest

from slt import prepare
from slt.data import errors, landmarks, manifest
from slt.io import clips
from slt.tasks import languages
from slt.tasks.fingerspelling import corpus as fingerspelling

GOOD = {"path": "a.pose", "text": "A", "sign_language": "ase", "spoken_language": "en"}
# (wrong field, the field it replaces, the field(s) the message suggests)
MISNAMED = [
    ("caption", "text", ("text",)),
    ("video", "path", ("path",)),
    ("txet", "text", ("text",)),
    ("lang", "sign_language", ("sign_language", "spoken_language")),
    ("start_time", None, ("start",)),
]


def _misnamed_row(wrong: str, replaces: str | None) -> dict:
    row = dict(GOOD)
    value = row.pop(replaces) if replaces else "1.5"
    row[wrong] = value
    return row


def _write(tmp_path, rows: list[dict], fmt: str) -> str:
    path = tmp_path / f"clips.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        header = list(dict.fromkeys(k for r in rows for k in r))
        lines = ["\t".join(header)] + ["\t".join(str(r.get(k, "")) for k in header) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _parse(path: str) -> list:
    rows = manifest.raw_rows(path, manifest.read_lines(path))
    return [
        manifest.parse_row(
            row_id,
            row,
            str(os.path.dirname(path)),
            languages.SIGN_LANGUAGES,
            languages.SPOKEN_LANGUAGES,
        )
        for row_id, row in rows
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "tsv"])
@pytest.mark.parametrize(("wrong", "replaces", "meant"), MISNAMED)
def test_unknown_field_is_reported_with_the_field_meant(tmp_path, fmt, wrong, replaces, meant):
    path = _write(tmp_path, [_misnamed_row(wrong, replaces)], fmt)
    (error,) = _parse(path)
    assert isinstance(error, manifest.RowError)
    assert error.reason == "unknown_field" and error.reason in errors.REASONS
    line = 1 if fmt == "jsonl" else 2  # a TSV's first line is its header
    assert error.message.startswith(f"clips.{fmt}:{line}: unknown field {wrong!r}")
    suggestion = " or ".join(repr(f) for f in meant)
    assert f"(did you mean {suggestion}?)" in error.message
    assert f"The known fields are {', '.join(manifest.FIELDS)}," in error.message
    assert "prefix it with x_" in error.message


def test_every_unknown_field_of_a_row_is_named_and_the_id_kept(tmp_path):
    row = {**_misnamed_row("video", "path"), "id": "clip-7", "Signer": "s1"}
    (error,) = _parse(_write(tmp_path, [row], "jsonl"))
    assert error.id == "clip-7" and error.reason == "unknown_field"
    assert error.message.startswith(
        "clips.jsonl:1 (id 'clip-7'): unknown fields 'video' (did you mean 'path'?), 'Signer'."
    )


@pytest.mark.parametrize("fmt", ["jsonl", "tsv"])
def test_translations_own_fields_and_empty_values_are_accepted(tmp_path, fmt):
    rows = [
        {**GOOD, "text_de": "A auf Deutsch", "x_signer": "s1"},
        {**GOOD, "start": "", "end": "", "fps": ""},  # empty = absent
    ]
    specs = _parse(_write(tmp_path, rows, fmt))
    assert all(isinstance(s, manifest.ClipSpec) for s in specs), specs
    assert specs[1].start is None and specs[1].fps is None
    # A column the TSV header names is a field of every row, even where its cell is empty.
    rows = [GOOD, {**GOOD, "caption": "x"}]
    specs = _parse(_write(tmp_path, rows, fmt))
    expected = ["unknown_field"] * 2 if fmt == "tsv" else [None, "unknown_field"]
    assert [getattr(s, "reason", None) for s in specs] == expected
    # text_<code> is a translation only for a known spoken language code.
    (error,) = _parse(_write(tmp_path, [{**GOOD, "text_xx": "?"}], fmt))
    assert error.reason == "unknown_field" and "'text_xx'" in error.message


def test_likely_fields():
    assert manifest.likely_fields("Text") == ("text",)
    assert manifest.likely_fields("file-path") == ("path",)
    assert manifest.likely_fields("spoken") == ()  # no alias, nothing close
    assert manifest.likely_fields("sign_languag") == ("sign_language",)


def _prepare(path, out):
    return prepare.prepare(
        path,
        str(out),
        clips.PrepareOptions(config=landmarks.LandmarkConfig(max_frames=100)),
        num_workers=1,
        progress=False,
    )


def _report(out) -> list[dict]:
    return [json.loads(line) for line in (out / "report.jsonl").read_text("utf-8").splitlines()]


def test_prepare_reports_unknown_fields_and_counts_them(tmp_path):
    letters = {text: path for path, _, sign, text in fingerspelling._index() if sign == "ase"}
    good = {**GOOD, "path": letters["A"]}
    rows = [
        {**good, "id": "good-A"},
        {**good, "id": "good-B", "text_de": "A", "x_signer": "s2"},
        {**good, "id": "bad-0", "caption": good["text"], "text": None},
        {**{k: v for k, v in good.items() if k != "path"}, "id": "bad-1", "video": good["path"]},
        {**{k: v for k, v in good.items() if k != "text"}, "id": "bad-2", "txet": "A"},
    ]
    rows[2].pop("text")
    out = tmp_path / "out"
    result = _prepare(_write(tmp_path, rows, "jsonl"), out)
    assert (result.num_inputs, result.num_written, result.num_reported) == (5, 2, 3)
    assert result.reported_by_reason == {"unknown_field": 3}
    report = _report(out)
    assert [(r["id"], r["reason"]) for r in report] == [
        (f"bad-{i}", "unknown_field") for i in range(3)
    ]
    for i, (record, wrong, meant) in enumerate(
        zip(report, ["caption", "video", "txet"], ["text", "path", "text"])
    ):
        assert record["split"] == "train"
        assert record["message"].startswith(f"clips.jsonl:{3 + i} (id 'bad-{i}'): unknown field")
        assert f"{wrong!r} (did you mean {meant!r}?)" in record["message"]
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["splits"]["train"]["num_inputs"] == 5
    assert info["splits"]["train"]["reported_by_reason"] == {"unknown_field": 3}


def test_prepare_reports_every_row_of_a_tsv_with_an_unknown_column(tmp_path):
    letters = {text: path for path, _, sign, text in fingerspelling._index() if sign == "ase"}
    rows = [
        {"path": letters[c], "caption": c, "sign_language": "ase", "spoken_language": "en"}
        for c in "ABC"
    ]
    out = tmp_path / "out"
    result = _prepare(_write(tmp_path, rows, "tsv"), out)
    assert (result.num_inputs, result.num_written, result.num_reported) == (3, 0, 3)
    report = _report(out)
    assert [r["id"] for r in report] == ["clips.tsv:2", "clips.tsv:3", "clips.tsv:4"]
    assert all(r["reason"] == "unknown_field" for r in report)
    assert report[0]["message"].startswith(
        "clips.tsv:2: unknown field 'caption' (did you mean 'text'?)."
    )
