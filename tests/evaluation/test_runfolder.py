"""The run folder: cell keys, readers that never change a file, the append-and-repair writer, the
lock, run.json merging and the code version."""

import errno
import hashlib
import json
import logging
import subprocess
import sys

import pytest

from fewshot.errors import InputError
from fewshot.evaluation import runfolder
from fewshot.evaluation.runfolder import (CellKey, RunFolder, _code_tokens, code_version, merge_run, read_jsonl,
                                          run_lock)


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_cell_key_is_built_and_parsed_in_one_place():
    key = CellKey("sst2", 3, "annotate", "go-v-c>knn:q", 32, 4)
    assert str(key) == "sst2|3|annotate|go-v-c>knn:q|B32|k4" and CellKey.parse(str(key)) == key
    with pytest.raises(InputError, match="may not contain"):
        CellKey("a|b", 0, "shared", "go:s", 4, 4)
    for bad in ("a|0|shared|x", "a|zero|shared|x|B4|k4", "a|0|shared|x|4|k4"):
        with pytest.raises(InputError, match="not a cell key"):
            CellKey.parse(bad)


def test_a_torn_last_line_is_skipped_with_a_warning_and_left_alone(tmp_path, caplog):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"cell": "a"}\n{"cell": "b"}\n{"cell": "c", "la')
    before = md5(path)
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path) == [{"cell": "a"}, {"cell": "b"}]
    assert md5(path) == before  # a reader never cuts: an eval may be writing that line now
    assert str(path) in caplog.text and "line 3 is torn" in caplog.text
    path.write_bytes('{"cell": "a"}\n{"cell": "é'.encode()[:-1])  # torn inside a UTF-8 character
    assert read_jsonl(path) == [{"cell": "a"}]


def test_a_damaged_middle_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"cell": "a"}\nnot json\n{"cell": "c"}\n')
    with pytest.raises(InputError, match=r"records.jsonl, line 2: damaged line"):
        read_jsonl(path)
    path.write_text('{"cell": "a"}\n{"cell": \n')  # complete (it has its newline) yet damaged: not torn
    with pytest.raises(InputError, match="line 2"):
        read_jsonl(path)


def test_repair_needs_the_lock_and_ends_each_file_on_a_whole_line(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.records_file.write_text('{"cell": "a"}\n{"cell": "b"}')  # complete, newline lost
    folder.predictions_file.write_text('{"cell": "a"}\n{"cell": "b"}\n{"cell": "c", "ro')  # c's record never came
    with pytest.raises(RuntimeError, match="lock"):
        folder.repair()
    with folder.lock():
        folder.repair()
        folder.append_cell({"cell": "d"}, {"cell": "d"})
    assert folder.records_file.read_text() == '{"cell": "a"}\n{"cell": "b"}\n{"cell": "d"}\n'
    assert folder.predictions_file.read_text() == '{"cell": "a"}\n{"cell": "b"}\n{"cell": "d"}\n'


def test_a_failed_append_leaves_no_torn_line_and_names_the_file(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        folder.append_cell({"cell": "a"}, {"cell": "a"})
        before = folder.records_file.read_bytes()
        real_write = runfolder.os.write

        def full_disk(fd, data):
            real_write(fd, bytes(data[:5]))  # half a line, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(runfolder.os, "write", full_disk)
        with pytest.raises(InputError, match=r"predictions.jsonl: cannot write \(No space left on device\).*resume"):
            folder.append_cell({"cell": "b"}, {"cell": "b"})
    assert folder.records_file.read_bytes() == before and read_jsonl(folder.predictions_file) == [{"cell": "a"}]


def test_repair_rewrites_the_predictions_line_by_line_keeping_the_recorded_cells(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    first_a, orphan, b, last_a = ({"cell": "a", "rows": [1]}, {"cell": "x", "rows": [2]}, {"cell": "b", "rows": [3]},
                                  {"cell": "a", "rows": [4]})
    folder.predictions_file.write_text("".join(json.dumps(p) + "\n" for p in (first_a, orphan, b, last_a)))
    folder.records_file.write_text('{"cell": "a"}\n{"cell": "b"}\n')  # x's record never came
    written = []
    real = runfolder.replace_files

    def spy(files, field):
        (target, chunks), = files
        assert not isinstance(chunks, (list, tuple, str, bytes))  # a generator, never the whole file
        written.append(chunks := list(chunks))
        real([(target, chunks)], field)

    monkeypatch.setattr(runfolder, "replace_files", spy)
    with folder.lock():
        folder.repair()
    # a cell keeps its first place and its last answers; one chunk per line
    assert written == [[(json.dumps(last_a) + "\n").encode(), (json.dumps(b) + "\n").encode()]]
    assert read_jsonl(folder.predictions_file) == [last_a, b]


def test_a_streamed_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"cell": "a"}\n')

    def lines():
        yield b'{"cell": "b"}\n'
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InputError, match=r"cannot write \(No space left on device\)"):
        runfolder.write_atomic(path, lines())
    assert path.read_text() == '{"cell": "a"}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]
    runfolder.write_atomic(path, iter([b'{"cell": "b"}\n', b'{"cell": "c"}\n']))
    assert read_jsonl(path) == [{"cell": "b"}, {"cell": "c"}]


def test_an_unwritable_folder_is_named_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot write the run folder") as err:
        RunFolder(tmp_path / "file" / "run").check_writable()
    assert str(tmp_path / "file") in str(err.value)
    with pytest.raises(InputError, match="cannot write the run folder"):
        with run_lock(tmp_path / "file" / "run"):
            pass


def test_a_folder_without_records_is_an_error_not_an_empty_report(tmp_path):
    folder = RunFolder(tmp_path)
    with pytest.raises(InputError, match="no records.jsonl here"):
        folder.planned_records()
    folder.records_file.write_text("")
    with pytest.raises(InputError, match="no finished cell") as err:
        folder.planned_records()
    assert str(folder.records_file) in str(err.value)
    folder.records_file.write_text('{"cell": "a"}\n{"cell": "b"}\n')
    folder.run_file.write_text(json.dumps({"cells": ["b", "c"]}))
    assert folder.planned_records() == [{"cell": "b"}]  # only the planned cells


def test_one_eval_at_a_time_per_run_folder(tmp_path):
    script = f"import time; from pathlib import Path; from fewshot.evaluation.runfolder import run_lock\n" \
             f"with run_lock(Path({str(tmp_path / 'run')!r})):\n    print('held', flush=True); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=rf"pid {holder.pid}.*another --out"):  # another process: refused
            with run_lock(tmp_path / "run"):
                pass
        with run_lock(tmp_path / "other"):  # another folder is free
            pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path / "run"):  # released when its process ended
        with run_lock(tmp_path / "run"):  # and re-entrant in one process (the CLI holds it around run_suite)
            pass


# -- run.json and the code version -------------------------------------------------------------------

def test_the_code_digest_ignores_comments_and_docstrings_but_not_code():
    plain = "def f(x):\n    return x + 1\n"
    assert _code_tokens('"""Module."""\n# note\ndef f(x):\n    """Doc."""\n\n    return x + 1  # one\n') == _code_tokens(plain)
    assert _code_tokens("def f(x):\n    return x + 2\n") != _code_tokens(plain)
    version = code_version()
    assert set(version) == {"fewshot", "scoring"} and len(version["scoring"]) == 16 and version == code_version()


def planned(code=None, **config):
    run = {"configuration": {"pool_size": 30, "data": {"d": "x"}, **config}, "suite": {"variants": {}},
           "references": {}, "cells": ["d|0|shared|random:s|B2|k2"]}
    return run if code is None else {**run, "code": code}


def test_a_resume_across_scoring_code_is_refused_unless_allowed(tmp_path):
    old, new = {"fewshot": "0.1.0", "scoring": "aaaa"}, {"fewshot": "0.2.0", "scoring": "bbbb"}
    with pytest.raises(InputError) as err:
        merge_run(planned(old), planned(new), tmp_path / "run.json")
    message = str(err.value)
    assert str(tmp_path / "run.json") in message and "0.1.0 (scoring code aaaa)" in message
    assert "0.2.0 (scoring code bbbb)" in message and "another --out" in message and "allow_code_change" in message
    merged = merge_run(planned(old), planned(new), tmp_path / "run.json", allow_code_change=True)
    assert merged["code"] == new and merged["earlier_code"] == [old]  # both versions recorded
    same = merge_run(planned({**old, "fewshot": "0.1.1"}), planned({**old, "fewshot": "0.1.2"}), tmp_path / "run.json")
    assert same["code"]["fewshot"] == "0.1.2" and "earlier_code" not in same  # only the scoring code counts


def test_a_folder_from_before_code_versions_resumes_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        merged = merge_run(planned(), planned(code_version()), tmp_path / "run.json")
    assert "no code version recorded" in caplog.text and str(tmp_path / "run.json") in caplog.text
    assert merged["earlier_code"] == [{"fewshot": "unknown", "scoring": "unknown"}]


def test_merging_keeps_earlier_cells_variants_and_data_and_refuses_a_changed_configuration(tmp_path):
    earlier = {**planned(code_version()), "cells": ["e|0|shared|go-x|B2|k2"], "suite": {"variants": {"go-x": {}}}}
    earlier["configuration"]["data"] = {"e": "y"}
    merged = merge_run(earlier, planned(code_version()), tmp_path / "run.json")
    assert merged["cells"] == ["e|0|shared|go-x|B2|k2", "d|0|shared|random:s|B2|k2"]
    assert merged["suite"]["variants"] == {"go-x": {}} and merged["configuration"]["data"] == {"e": "y", "d": "x"}
    with pytest.raises(InputError, match="pool_size: 30 then, 40 now"):
        merge_run(earlier, planned(code_version(), pool_size=40), tmp_path / "run.json")


def test_reference_llms_may_join_a_folder_but_not_change_their_model_file(tmp_path):
    earlier = planned(code_version())  # a folder run without a reference LLM
    joined = merge_run(earlier, planned(code_version(), reference_llms={"smol": "file-a"}), tmp_path / "run.json")
    assert joined["configuration"]["reference_llms"] == {"smol": "file-a"}
    again = merge_run(joined, planned(code_version()), tmp_path / "run.json")  # a later run without one keeps it
    assert again["configuration"]["reference_llms"] == {"smol": "file-a"}
    with pytest.raises(InputError, match="reference_llms smol: model file-a then, file-b now"):
        merge_run(joined, planned(code_version(), reference_llms={"smol": "file-b"}), tmp_path / "run.json")
    assert "reference_llms" not in merge_run(earlier, planned(code_version()), tmp_path / "run.json")["configuration"]
