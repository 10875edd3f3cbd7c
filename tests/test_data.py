import pytest

from fewshot.data import load_examples
from fewshot.errors import InputError
from tests.conftest import write_jsonl


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


def test_eval_data_files_keep_their_ids(tmp_path):
    from fewshot.datasets import load_dataset

    rows = [{"id": f"r{i}", "text": f"text {i}", "label": "a"} for i in range(3)]
    data = load_dataset(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert [e.id for e in data.examples] == ["r0", "r1", "r2"] and data.id_field == "id"
    data = load_dataset(str(write_jsonl(tmp_path / "e.jsonl", [{"text": "x", "label": "a"}])))
    assert [e.id for e in data.examples] == ["e-0"] and data.id_field is None
