import pytest

from fewshot.datasets import load_dataset, load_datasets
from fewshot.errors import InputError
from tests.conftest import write_jsonl
from tests.test_data import _mixed_rows


def test_eval_data_files_keep_their_ids(tmp_path):
    rows = [{"id": f"r{i}", "text": f"text {i}", "label": "a"} for i in range(3)]
    data = load_dataset(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert [e.id for e in data.examples] == ["r0", "r1", "r2"] and data.id_field == "id"
    data = load_dataset(str(write_jsonl(tmp_path / "e.jsonl", [{"text": "x", "label": "a"}])))
    assert [e.id for e in data.examples] == ["e-0"] and data.id_field is None


def test_mixed_label_types_are_refused_before_the_eval(tmp_path):
    # the fault probe: load_datasets(['mixed.jsonl'])[0].labels was ['0', '1', 'negative', 'positive']
    path = write_jsonl(tmp_path / "mixed.jsonl", _mixed_rows())
    with pytest.raises(InputError, match=r"mixed.jsonl, field 'label': labels mix 2 JSON types \(strings on lines 1, 3"):
        load_datasets([str(path)])


def test_where_names_file_line_and_id_past_dropped_duplicates(tmp_path):
    rows = [{"id": "a", "text": "same", "label": "x"}, {"id": "b", "text": "Same", "label": "x"},
            {"id": "c", "text": "other", "label": "y"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = load_dataset(str(path))
    assert [e.id for e in data.examples] == ["a", "c"] and data.lines == (1, 3)
    assert data.where(1) == f"{path}, line 3, id 'c'"
    (tmp_path / "x").mkdir()
    renamed = load_datasets([str(path), str(write_jsonl(tmp_path / "x" / "d.jsonl", rows))])
    assert renamed[1].where(0) == f"{tmp_path / 'x' / 'd.jsonl'}, line 1, id 'a'"


def test_where_in_a_built_in_set_names_the_set():
    pytest.importorskip("sklearn")
    assert load_dataset("iris").where(0) == "iris, id 'iris-0'"
