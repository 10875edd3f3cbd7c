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
