"""Token counts and the token budget check every entry point shares."""

import pytest
from typer.testing import CliRunner

from fewshot.cli import app
from fewshot.data import Example
from fewshot.errors import InputError
from fewshot.pipeline import Request, build_problem
from fewshot.tokens import check_token_budget, count_tokens
from tests.conftest import EXAMPLES


def test_count_tokens():
    assert count_tokens(["hello world", ""]).tolist() == [2, 0]


@pytest.mark.parametrize("budget", [None, 1, 500])
def test_a_budget_of_at_least_one_token_or_none_is_fine(budget):
    check_token_budget(budget)


@pytest.mark.parametrize("budget", [0, -3])
def test_a_budget_under_one_token_is_refused_naming_the_field(budget):
    with pytest.raises(InputError, match=f"field '--max-tokens': max_tokens={budget} must be positive"):
        check_token_budget(budget)


def test_every_entry_point_refuses_a_zero_budget_with_the_same_message():
    expected = "field '--max-tokens': max_tokens=0 must be positive"
    with pytest.raises(InputError, match=expected):
        Request("go", k=2, max_tokens=0).check()
    with pytest.raises(InputError, match=expected):
        build_problem([Example("a", "x")], [Example("q", "y")], max_tokens=0)
    # eval refuses before it reads a data set or starts a server
    result = CliRunner().invoke(app, ["eval", "--data", str(EXAMPLES / "pool.jsonl"), "--max-tokens", "0"])
    assert result.exit_code == 2 and "max_tokens=0 must be positive" in result.output, result.output
