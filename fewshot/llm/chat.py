"""Few-shot prompts for chat models: the demos as conversation turns.

Chat models are prompted with each demo as a user turn (its text) and an assistant turn (its
label), as LangChain's ``FewShotChatMessagePromptTemplate`` does; the label is then scored from
the assistant's answer to the last user turn.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ..data import Example


class TemplateLike(Protocol):
    instruction: str
    query: str


def chat_messages(template: TemplateLike, demos: Sequence[Example], query: str,
                  labels: Sequence[str] = ()) -> list[dict[str, str]]:
    """System: the instruction; then per demo, user: the template's query part with the demo's
    text, assistant: its label; last, user: the query. The query part (not the demo part) frames
    each user turn, so demos and query read alike and the label is left to the assistant.

    >>> from fewshot.prompts import Template
    >>> t = Template(instruction="Answer with one of: {labels}.", demo="Text: {text}\\nLabel: {label}",
    ...              query="Text: {text}\\nLabel:")
    >>> for m in chat_messages(t, [Example("1", "good", "pos")], "fine", ["pos", "neg"]):
    ...     print(m)
    {'role': 'system', 'content': 'Answer with one of: pos, neg.'}
    {'role': 'user', 'content': 'Text: good\\nLabel:'}
    {'role': 'assistant', 'content': 'pos'}
    {'role': 'user', 'content': 'Text: fine\\nLabel:'}
    """
    messages = []
    if template.instruction:
        messages.append({"role": "system", "content": template.instruction.format(labels=", ".join(labels))})
    for demo in demos:
        messages.append({"role": "user", "content": template.query.format(text=demo.text).strip()})
        messages.append({"role": "assistant", "content": "" if demo.label is None else str(demo.label)})
    messages.append({"role": "user", "content": template.query.format(text=query).strip()})
    return messages
