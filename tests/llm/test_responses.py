import pytest

from fewshot.errors import LLMError
from fewshot.llm.responses import Token, completion_text, top_tokens


def test_chat_shape():
    response = {"choices": [{"message": {"content": "yes"}, "logprobs": {"content": [
        {"token": "yes", "logprob": -0.2, "top_logprobs": [{"token": "yes", "logprob": -0.2, "bytes": [1]},
                                                            {"token": "no", "logprob": -1.8, "bytes": [2]}]}]}}]}
    assert top_tokens(response) == [Token("yes", -0.2), Token("no", -1.8)]
    assert completion_text(response) == ["yes"]


def test_no_logprobs_is_a_clear_error():
    with pytest.raises(LLMError, match="no logprobs"):
        top_tokens({"choices": [{"text": " yes", "logprobs": None}]})
