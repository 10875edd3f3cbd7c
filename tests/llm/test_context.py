"""check_fits: a text that cannot fit the model's context is named before any work (probe 6,
200,000 characters, in ../shared/docs/faults-2026-11-29.md)."""

import pytest

from fewshot.errors import InputError
from fewshot.llm import LLMClient
from fewshot.llm.context import check_fits
from tests.llm.fake_server import FakeServer

ITEMS = [("a short text", "pool.jsonl, line 1, id 'a'"), ("word " * 35, "pool.jsonl, line 74, id 'long-1'"),
         ("word " * 40, "pool.jsonl, line 75, id 'long-2'")]


@pytest.fixture
def llama(tmp_path):
    """An endpoint that tells its context (per slot) and counts tokens: one per word, like llama-server's
    /props and /tokenize."""
    asked = []

    def tokenize(body):
        asked.append(body["content"])
        return {"tokens": list(range(len(body["content"].split())))}
    server = FakeServer([(200, {}, 0)], routes={"/props": lambda body: {"default_generation_settings": {"n_ctx": 40}},
                                                "/tokenize": tokenize})
    yield LLMClient(server.url, "m", cache=False), asked
    server.close()


def test_the_first_text_that_cannot_fit_is_named_with_the_servers_count(llama):
    client, asked = llama
    with pytest.raises(InputError) as info:
        check_fits(ITEMS, client, reserve_tokens=8)
    assert str(info.value) == ("pool.jsonl, line 74, id 'long-1': the text is 35 tokens long (the server's count), "
                               "more than fits one prompt of the model: its context holds 40 tokens, 8 of them kept "
                               "for the template and the answer; shorten or leave out this text")
    assert "a short text" not in asked  # shorter in bytes than the budget: it fits, uncounted
    check_fits(ITEMS, client, reserve_tokens=0, limit=100)  # a larger context given: everything fits


def test_without_a_server_count_tiktoken_estimates(tmp_path):
    server = FakeServer([(200, {}, 0)])  # tells nothing: no /props, no /tokenize
    try:
        client = LLMClient(server.url, "m", cache=False)
        check_fits(ITEMS, client)  # the context is unknown: nothing to check against
        with pytest.raises(InputError, match=r"line 75, id 'long-2': the text is 4\d tokens long \(a tiktoken estimate\)"):
            check_fits(ITEMS, client, reserve_tokens=0, limit=38)
    finally:
        server.close()
