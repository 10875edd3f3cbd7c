import errno
import json
import os

import pytest

from fewshot import data
from fewshot.data import check_writable_dir, check_writable_file, load_examples, parse_examples, write_outputs
from fewshot.errors import InputError
from tests.conftest import EXAMPLES, fill_disk, make_read_only, write_jsonl


def test_jsonl_and_csv(tmp_path):
    jsonl = write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    assert [(e.id, e.text, e.label) for e in load_examples(jsonl)] == [("1", "a", "x"), ("2", "b", None)]
    csv = tmp_path / "p.csv"
    csv.write_text("uid,text,label\nu1,hello,pos\nu2,bye,\n", encoding="utf-8")
    assert [(e.id, e.label) for e in load_examples(csv, id_field="uid")] == [("u1", "pos"), ("u2", None)]


@pytest.mark.parametrize("content, message, line", [
    (b'{"text": "a"}\n{"text": "b"\n', "malformed JSON", 2),
    (b'{"text": "a"}\n{"txt": "b"}\n', "missing text field", 2),
    (b'{"text": "a"}\n{"text": "  "}\n', "text is empty", 2),
    (b'{"text": "a"}\n{"text": "caf\xe9"}\n', "not valid UTF-8", 2),
    (b'{"text": "a", "id": 1}\n{"text": "b", "id": 1}\n', "duplicate id", 2),
    (b'["text"]\n', "JSON object", 1),
])
def test_bad_rows_name_file_line_and_field(tmp_path, content, message, line):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_examples(path, id_field="id" if b'"id"' in content else None)
    assert message in str(err.value) and f"line {line}" in str(err.value) and str(path) in str(err.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match="empty"):
        load_examples(tmp_path / "empty.jsonl")


def test_required_labels(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(InputError, match="line 2, field 'label'"):
        load_examples(path, require_labels=True)


def test_ids_default_to_the_id_field_when_the_file_has_one(tmp_path):
    with_ids = load_examples(write_jsonl(tmp_path / "a.jsonl", [{"id": "x7", "text": "a"}, {"id": 9, "text": "b"}]))
    assert [e.id for e in with_ids] == ["x7", "9"] and with_ids.id_field == "id"
    assert with_ids.id_source == "field 'id'"
    without = load_examples(write_jsonl(tmp_path / "b.jsonl", [{"text": "a"}, {"text": "b"}]))
    assert [e.id for e in without] == ["1", "2"] and without.id_field is None
    csv = tmp_path / "c.csv"
    csv.write_text("id,text\nq1,hello\nq2,bye\n", encoding="utf-8")
    assert [e.id for e in load_examples(csv)] == ["q1", "q2"]


@pytest.mark.parametrize("rows, id_field", [
    ([{"id": "a", "text": "a"}, {"text": "b"}], None),  # the first row set the id field
    ([{"uid": "a", "text": "a"}, {"uid": "", "text": "b"}], "uid"),  # empty is missing, never a line number
])
def test_missing_id_is_an_error_once_ids_are_in_use(tmp_path, rows, id_field):
    with pytest.raises(InputError, match="line 2, field '(id|uid)': missing id"):
        load_examples(write_jsonl(tmp_path / "p.jsonl", rows), id_field=id_field)


def test_a_folder_is_not_a_missing_file(tmp_path):
    with pytest.raises(InputError, match="is a folder, not a file") as err:
        load_examples(tmp_path)
    assert "does not exist" not in str(err.value)


# -- labels: one JSON type per label field -----------------------------------------------------------

def _mixed_rows():
    """The fault probe's file: sst2 rows, every other label written as 1/0 instead of positive/negative."""
    rows = [json.loads(line) for line in (EXAMPLES / "pool.jsonl").read_text(encoding="utf-8").splitlines()][:20]
    return [{**r, "label": int(r["label"] == "positive") if i % 2 else r["label"]} for i, r in enumerate(rows)]


def test_mixed_label_types_are_refused_naming_the_lines_of_each_type(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", _mixed_rows())
    with pytest.raises(InputError) as err:
        load_examples(path)
    message = str(err.value)
    assert message.startswith(f"{path}, field 'label': labels mix 2 JSON types")
    assert "strings on lines 1, 3, 5, 7, 9 and 5 more" in message
    assert "numbers on lines 2, 4, 6, 8, 10 and 5 more" in message


@pytest.mark.parametrize("labels, kinds", [
    ([True, "yes"], ("booleans on line 1", "strings on line 2")),
    ([1, True], ("numbers on line 1", "booleans on line 2")),
])
def test_booleans_are_a_type_of_their_own(tmp_path, labels, kinds):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate(labels)])
    with pytest.raises(InputError, match="labels mix 2 JSON types") as err:
        load_examples(path)
    assert all(kind in str(err.value) for kind in kinds)


def test_one_label_type_per_file_is_fine_and_missing_labels_do_not_count(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0.5}, {"text": "c"}, {"text": "d", "label": ""}]
    assert [e.label for e in load_examples(write_jsonl(tmp_path / "n.jsonl", rows))] == ["1", "0.5", None, None]


def test_numerically_equal_labels_are_one_class(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 1.0}, {"text": "c", "label": 0.0},
            {"text": "d", "label": 2.5}, {"text": "e", "label": 1e20}, {"text": "f", "label": -0.0}]
    labels = [e.label for e in load_examples(write_jsonl(tmp_path / "n.jsonl", rows))]
    assert labels == ["1", "1", "0", "2.5", "100000000000000000000", "0"]


def test_numpy_and_python_numbers_from_a_list_are_one_class():
    np = pytest.importorskip("numpy")
    rows = enumerate([{"text": "a", "label": np.int64(1)}, {"text": "b", "label": np.float64(1.0)},
                      {"text": "c", "label": np.float32(1.0)}, {"text": "d", "label": 1.0}])
    assert {e.label for e in parse_examples(rows, lambda i: {"path": f"rows[{i}]"})} == {"1"}


def test_string_labels_are_kept_as_written(tmp_path):
    rows = [{"text": "a", "label": "1.0"}, {"text": "b", "label": "1"}, {"text": "c", "label": "01"}]
    assert [e.label for e in load_examples(write_jsonl(tmp_path / "s.jsonl", rows))] == ["1.0", "1", "01"]


def test_a_number_and_the_same_number_as_a_string_are_refused_naming_the_lines(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": "1"}, {"text": "b", "label": 1.0}])
    with pytest.raises(InputError, match="strings on line 1; numbers on line 2") as err:
        load_examples(path)
    assert str(err.value).startswith(f"{path}, field 'label': labels mix 2 JSON types")


def test_not_a_number_labels_stay_as_written():
    assert [data.label_text(v) for v in (float("nan"), float("inf"), True, 3)] == ["nan", "inf", "True", "3"]


@pytest.mark.parametrize("given, present, words", [
    ([" pos", "neg ", "pos", "", "  "], ["x"], ["pos", "neg"]),  # stripped, no blanks or repeats, in the given order
    (None, ["b", None, "a", "b"], ["a", "b"]),  # none given: the labels present, sorted
    (["", " "], ["b", "a"], ["a", "b"]),
    ([], [None], []),
])
def test_label_words(given, present, words):
    assert data.label_words(given, present) == words


def test_a_label_that_is_a_list_is_refused(tmp_path):
    with pytest.raises(InputError, match="line 2, field 'label': a label must be a string, a number or a boolean"):
        load_examples(write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": ["x"]}]))


def test_csv_labels_are_all_strings_so_there_is_no_type_to_mix(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("text,label\na,1\nb,positive\n", encoding="utf-8")
    assert [e.label for e in load_examples(path)] == ["1", "positive"]


def test_mixed_label_types_in_a_list_name_the_items():
    rows = [(0, {"text": "a", "label": "pos"}), (1, {"text": "b", "label": 1})]
    with pytest.raises(InputError, match=r"strings on examples\[0\]; numbers on examples\[1\]"):
        parse_examples(rows, lambda i: {"path": f"examples[{i}]"})


# -- where each example came from ---------------------------------------------------------------------

def test_examples_keep_their_line_numbers(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n\n{"id": "b", "text": "y"}\n', encoding="utf-8")
    examples = load_examples(path)
    assert examples.lines == [1, 3] and examples.where(1) == f"{path}, line 3, id 'b'"
    csv = tmp_path / "p.csv"
    csv.write_text('text\n"two\nlines"\nz\n', encoding="utf-8")  # a quoted field may span lines
    assert load_examples(csv).where(1) == f"{csv}, line 4, id '4'"


def test_examples_from_a_list_name_the_item():
    examples = parse_examples(enumerate([{"text": "a"}, {"text": "b"}]), lambda i: {"path": f"pool[{i}]"})
    assert examples.lines == [0, 1] and examples.where(1) == "pool[1], id '1'"


# -- outputs: written whole or not at all --------------------------------------------------------------

OLD_DATA, OLD_META = b'{"id": "old"}\n', b'{"k": 1}\n'
NEW = [{"id": f"n{i}", "text": "x" * 100} for i in range(50)]


@pytest.fixture
def previous(tmp_path):
    """An earlier run's output and its meta."""
    out = tmp_path / "sel.jsonl"
    out.write_bytes(OLD_DATA)
    (tmp_path / "sel.jsonl.meta.json").write_bytes(OLD_META)
    return out


def _unchanged(out):
    assert out.read_bytes() == OLD_DATA and (out.parent / "sel.jsonl.meta.json").read_bytes() == OLD_META
    assert sorted(p.name for p in out.parent.iterdir()) == ["sel.jsonl", "sel.jsonl.meta.json"]  # no temp left


def test_write_outputs_writes_data_and_meta(previous):
    write_outputs(previous, NEW, {"k": 4})
    assert [json.loads(line) for line in previous.read_text().splitlines()] == NEW
    assert json.loads((previous.parent / "sel.jsonl.meta.json").read_text()) == {"k": 4}
    assert sorted(p.name for p in previous.parent.iterdir()) == ["sel.jsonl", "sel.jsonl.meta.json"]


def _fail_on(monkeypatch, name, error, after=0):
    """``os.NAME`` raises ``error`` from its ``after``-th call on."""
    real, calls = getattr(os, name), []

    def failing(*args):
        calls.append(args)
        if len(calls) > after:
            raise OSError(error, os.strerror(error))
        return real(*args)

    monkeypatch.setattr(os, name, failing)


@pytest.mark.parametrize("name, after", [("write", 0), ("write", 1), ("fsync", 0), ("fsync", 1)])
def test_a_full_disk_leaves_the_previous_output_and_meta_as_they_were(previous, monkeypatch, name, after):
    # after=1: the data file was written whole, its meta failed; neither may be replaced
    _fail_on(monkeypatch, name, errno.ENOSPC, after)
    with pytest.raises(InputError) as err:
        write_outputs(previous, NEW, {"k": 4})
    monkeypatch.undo()
    assert str(previous) in str(err.value) and "field '--out'" in str(err.value)
    assert "No space left on device" in str(err.value)
    assert "the previous sel.jsonl and sel.jsonl.meta.json are unchanged" in str(err.value)
    _unchanged(previous)


def test_a_failed_new_output_leaves_nothing(tmp_path, monkeypatch):
    _fail_on(monkeypatch, "write", errno.ENOSPC)
    with pytest.raises(InputError, match="nothing was written"):
        write_outputs(tmp_path / "new.jsonl", NEW, {"k": 4})
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_a_kill_between_the_renames_leaves_no_stale_meta(previous, monkeypatch):
    real_replace = os.replace

    def killed_after_the_data(src, dst):
        if str(dst).endswith(".meta.json"):
            raise SystemExit("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_the_data)
    with pytest.raises(SystemExit):
        write_outputs(previous, NEW, {"k": 4})
    assert previous.read_bytes() != OLD_DATA  # the new data is in place...
    assert not (previous.parent / "sel.jsonl.meta.json").exists()  # ...and no meta describes the old one


def test_an_output_through_a_symlink_replaces_the_target(tmp_path):
    target = tmp_path / "real.jsonl"
    target.write_bytes(OLD_DATA)
    (tmp_path / "link.jsonl").symlink_to(target)
    data.write_jsonl(tmp_path / "link.jsonl", NEW[:1])
    assert (tmp_path / "link.jsonl").is_symlink() and json.loads(target.read_text()) == NEW[0]


# -- writability, before any work ----------------------------------------------------------------------

def test_check_writable_file(tmp_path):
    with pytest.raises(InputError, match="field '--out': is a folder"):
        check_writable_file(tmp_path)
    assert check_writable_file(tmp_path / "a" / "b" / "out.jsonl") == tmp_path / "a" / "b" / "out.jsonl"
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="a file is in the way"):
        check_writable_file(tmp_path / "file" / "out.jsonl")


def test_check_writable_dir(tmp_path):
    assert check_writable_dir(tmp_path / "cache", field="--cache-dir").is_dir()
    assert list((tmp_path / "cache").iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="field '--cache-dir': is a file, not a folder"):
        check_writable_dir(tmp_path / "file", field="--cache-dir")


@pytest.mark.parametrize("check", [check_writable_file, check_writable_dir])
def test_an_unwritable_folder_is_refused_naming_path_field_and_reason(tmp_path, monkeypatch, check):
    # as root, permission bits do not stop writes: the file system's refusal is simulated here and
    # real on a read-only mount below
    _fail_on(monkeypatch, "open", errno.EROFS)
    with pytest.raises(InputError) as err:
        check(tmp_path / "x", field="--out")
    assert f"{tmp_path / 'x'}, field '--out': cannot write in" in str(err.value)
    assert "Read-only file system" in str(err.value)


# -- on a real small file system (needs mount: root) -----------------------------------------------------

def test_a_full_file_system_leaves_the_previous_output(mounted):
    out = mounted / "sel.jsonl"
    out.write_bytes(OLD_DATA)
    (mounted / "sel.jsonl.meta.json").write_bytes(OLD_META)
    fill_disk(mounted)
    with pytest.raises(InputError, match="No space left on device.*unchanged"):
        write_outputs(out, NEW * 100, {"k": 4})
    (mounted / "filler").unlink()
    _unchanged(out)


def test_a_read_only_file_system_is_refused_before_work_and_leaves_the_output(mounted):
    out = mounted / "sel.jsonl"
    out.write_bytes(OLD_DATA)
    (mounted / "sel.jsonl.meta.json").write_bytes(OLD_META)
    make_read_only(mounted)
    for check in (check_writable_file, check_writable_dir):
        with pytest.raises(InputError, match="Read-only file system"):
            check(out if check is check_writable_file else mounted, field="--out")
    with pytest.raises(InputError, match="cannot create this folder \\(Read-only file system\\)"):
        check_writable_file(mounted / "sub" / "out.jsonl")
    with pytest.raises(InputError, match="Read-only file system.*unchanged"):
        write_outputs(out, NEW, {"k": 4})
    _unchanged(out)
