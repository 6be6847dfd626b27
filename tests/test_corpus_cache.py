"""The corpus cache (`slt/tasks/fingerspelling/cache.py`): cached feature statistics are the freshly
computed ones bit for bit, any changed input names another entry, and unreadable,
unwritable or concurrently written entries never change a value."""

import json
import logging
import os
import struct
import threading
import time
import types

import pytest

from slt.data import landmarks
from slt.tasks.fingerspelling import cache as corpus_cache
from slt.tasks.fingerspelling import corpus as fingerspelling
from slt.tasks.fingerspelling import tasks as fingerspelling_tasks


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(corpus_cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "corpus"


def _bits(values) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def test_cached_feature_statistics_equal_freshly_computed_ones_bit_for_bit(cache_dir, monkeypatch):
    computed = []
    compute = fingerspelling_tasks.corpus_feature_statistics

    def counting(*args):
        computed.append(compute(*args))
        return computed[-1]

    monkeypatch.setattr(fingerspelling_tasks, "corpus_feature_statistics", counting)
    # The undecorated function: the in-process functools cache would hide the disk cache.
    first = fingerspelling_tasks.standardized_config.__wrapped__()
    assert len(computed) == 1 and len(list(cache_dir.iterdir())) == 1
    fresh_mean, fresh_std = computed[0]
    assert len(fresh_mean) == len(fresh_std) == landmarks.FRAME_DIM
    assert first == landmarks.LandmarkConfig(feature_mean=fresh_mean, feature_std=fresh_std)

    # A warm cache composes no clip and reads no recording.
    def fail(*args, **kwargs):
        raise AssertionError("the warm cache computed the statistics")

    monkeypatch.setattr(fingerspelling_tasks, "corpus_feature_statistics", fail)
    monkeypatch.setattr(fingerspelling, "load_lexicon", fail)
    monkeypatch.setattr(fingerspelling, "compose_clip", fail)
    read = fingerspelling_tasks.standardized_config.__wrapped__()
    assert read == first
    assert _bits(read.feature_mean) == _bits(fresh_mean)
    assert _bits(read.feature_std) == _bits(fresh_std)
    assert all(type(v) is float for v in read.feature_mean + read.feature_std)
    # The process-wide config the tasks use is the same one.
    assert fingerspelling_tasks.standardized_config() == first


def test_statistics_key_names_every_input():
    key = fingerspelling_tasks.statistics_key(0, 64)
    assert key != fingerspelling_tasks.statistics_key(1, 64)
    assert key != fingerspelling_tasks.statistics_key(0, 32)
    assert [s for s, _ in key["sign_to_spoken"]] == list(fingerspelling_tasks.SIGN_TO_SPOKEN)
    assert set(key["packages"]) == {"numpy", "babel", "spoken-to-signed", "pose-format"}
    assert "missing" not in key["packages"].values()
    assert "unit_box" in key["landmark_config"] and "jitter" in key["augment_config"]
    assert key == fingerspelling_tasks.statistics_key(0, 64)  # deterministic


def test_file_and_source_digests_change_with_their_inputs(tmp_path):
    data = tmp_path / "letter.pose"
    data.write_bytes(b"abc")
    before = corpus_cache.files_digest([str(data)])
    assert corpus_cache.files_digest([str(data)]) == before
    data.write_bytes(b"abcd")
    assert corpus_cache.files_digest([str(data)]) != before
    stat = data.stat()
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same size, touched
    touched = corpus_cache.files_digest([str(data)])
    assert touched not in (before, corpus_cache.files_digest([]))

    source = tmp_path / "composer.py"
    module = types.ModuleType("composer")
    module.__file__ = str(source)
    source.write_text("SCALE = 1.0\n")
    first = corpus_cache.source_digest([module])
    source.write_text("SCALE = 2.0\n")
    assert corpus_cache.source_digest([module]) != first


def test_floats_come_back_bit_for_bit_and_keys_select_entries(cache_dir):
    values = [0.1 + 0.2, -0.0, 5e-324, 1e-310, 1.7976931348623157e308, 2.0 / 3.0]
    calls = []

    def compute(scale: float):
        calls.append(scale)
        return [v * scale for v in values]

    first = corpus_cache.cached("floats", {"scale": 1.0}, lambda: compute(1.0))
    again = corpus_cache.cached("floats", {"scale": 1.0}, lambda: compute(1.0))
    other = corpus_cache.cached("floats", {"scale": 3.0}, lambda: compute(3.0))
    assert calls == [1.0, 3.0]
    assert _bits(again) == _bits(first) == _bits(values)
    assert _bits(other) == _bits([v * 3.0 for v in values])
    assert len(list(cache_dir.iterdir())) == 2
    # Key order does not matter; tuples in keys are stored as lists.
    key = {"b": (1, 2), "a": "x"}
    same = {"a": "x", "b": [1, 2]}
    assert corpus_cache.entry_path("t", key) == corpus_cache.entry_path("t", same)


def test_corrupt_or_foreign_entries_are_recomputed_and_replaced(cache_dir, caplog):
    key = {"what": "statistics", "seed": 0}
    path = corpus_cache.entry_path("stats", key)
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write('{"key": {"what": "statistics", "se')  # a truncated write of an old version
    with caplog.at_level(logging.WARNING, logger="slt.tasks.fingerspelling.cache"):
        assert corpus_cache.cached("stats", key, lambda: [1.5, 2.5]) == [1.5, 2.5]
    assert "ignoring unreadable" in caplog.text and path in caplog.text
    with open(path) as f:
        assert json.load(f) == {"key": key, "value": [1.5, 2.5]}

    with open(path, "w") as f:
        json.dump({"key": {"what": "other"}, "value": [9.0]}, f)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="slt.tasks.fingerspelling.cache"):
        assert corpus_cache.cached("stats", key, lambda: [1.5, 2.5]) == [1.5, 2.5]
    assert "holds another key" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_an_unwritable_cache_directory_computes_and_warns(tmp_path, monkeypatch, caplog):
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o500)
    monkeypatch.setenv(corpus_cache.CACHE_DIR_ENV, str(readonly))
    with caplog.at_level(logging.WARNING, logger="slt.tasks.fingerspelling.cache"):
        assert corpus_cache.cached("stats", {"k": 1}, lambda: [4.0]) == [4.0]
    assert "could not write" in caplog.text and corpus_cache.CACHE_DIR_ENV in caplog.text


def test_a_cache_path_that_is_a_file_computes_and_warns(tmp_path, monkeypatch, caplog):
    # Works as root too: no directory can be made below a regular file.
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("")
    monkeypatch.setenv(corpus_cache.CACHE_DIR_ENV, str(blocker))
    with caplog.at_level(logging.WARNING, logger="slt.tasks.fingerspelling.cache"):
        assert corpus_cache.cached("stats", {"k": 1}, lambda: [4.0]) == [4.0]
        assert corpus_cache.cached("stats", {"k": 1}, lambda: [4.0]) == [4.0]
    assert caplog.text.count("could not write") == 2


def test_concurrent_writers_leave_one_whole_entry(cache_dir):
    key = {"what": "shared"}
    start = threading.Barrier(8)
    results = [None] * 8

    def compute():
        time.sleep(0.05)  # all eight miss the entry and write it
        return [0.1 * i for i in range(1000)]

    def worker(i):
        start.wait()
        results[i] = corpus_cache.cached("shared", key, compute)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == compute() for r in results)
    assert [p.name for p in cache_dir.iterdir()] == [
        os.path.basename(corpus_cache.entry_path("shared", key))
    ]  # no temporary file left behind
    assert corpus_cache.cached("shared", key, lambda: pytest.fail("recomputed")) == compute()


def test_default_directory_follows_xdg_then_home(monkeypatch):
    monkeypatch.delenv(corpus_cache.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/someone")
    assert corpus_cache.cache_dir() == "/var/cache/someone/slt/corpus"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert corpus_cache.cache_dir() == os.path.expanduser("~/.cache/slt/corpus")
    monkeypatch.setenv(corpus_cache.CACHE_DIR_ENV, "/scratch/slt")
    assert corpus_cache.cache_dir() == "/scratch/slt/corpus"
