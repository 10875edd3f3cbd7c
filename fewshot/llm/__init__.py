"""LLM access: one client for OpenAI-compatible endpoints, and a local llama.cpp server."""

from .chat import chat_messages
from .client import LLMClient
from .scoring import LabelScores
from .server import LocalServer, llm_endpoint

__all__ = ["LLMClient", "LabelScores", "LocalServer", "chat_messages", "llm_endpoint"]
