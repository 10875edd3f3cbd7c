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
