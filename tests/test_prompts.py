import pytest

from fewshot.data import Example
from fewshot.errors import InputError
from fewshot.prompts import load_template


def test_bundled_templates_render_query_last():
    t = load_template("classification")
    prompt = t.render([Example("1", "nice", "positive")], "awful", ["negative", "positive"])
    assert prompt.index("nice") < prompt.index("awful") and prompt.endswith("Text: awful\nLabel:")
    assert load_template("regression").render([], "x: 1").endswith("Value:")


def test_unknown_placeholder_names_file_and_key(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('demo = "{text} {answer}"\nquery = "{text}"\n')
    with pytest.raises(InputError, match=r"field 'demo': unknown placeholder \{answer\}"):
        load_template(path)


def test_missing_template():
    with pytest.raises(InputError, match="template not found"):
        load_template("no-such-template")


def test_missing_template_lists_the_bundled_ones():
    with pytest.raises(InputError, match="known templates: classification, regression"):
        load_template("no-such-template")


def test_template_by_path_and_bundled_names_work_from_another_folder(tmp_path, monkeypatch):
    path = tmp_path / "mine.toml"
    path.write_text('demo = "{text} -> {label}"\nquery = "{text} ->"\n')
    monkeypatch.chdir(tmp_path)  # names never resolve against the working folder
    assert load_template(path).name == "mine" and load_template("mine.toml").render([], "q") == "q ->"
    assert load_template("classification").name == "classification"


def test_bundled_suites_load_by_name_and_list_the_known_ones():
    from fewshot.evaluation.suites import load_suite

    assert load_suite("quick").name == "quick"
    with pytest.raises(InputError, match="known suites: .*quick"):
        load_suite("no-such-suite")
