"""Errors that reach the user as a clear message instead of a traceback."""

from __future__ import annotations


class FewshotError(Exception):
    """Base class for every error fewshot raises on purpose."""


class InputError(FewshotError):
    """Bad user input: a file, a field, a parameter. The CLI exits with code 2.

    >>> str(InputError("missing field 'text'", path="pool.jsonl", line=3, field="text"))
    "pool.jsonl, line 3, field 'text': missing field 'text'"
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message, self.path, self.line, self.field = message, path, line, field
        where = [p for p in (path, f"line {line}" if line else None,
                             f"field {field!r}" if field else None) if p]
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class LLMError(FewshotError):
    """The LLM endpoint failed in a way retries cannot fix (unreachable, wrong model, no logprobs)."""


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) turned into an exception, so ``with`` blocks unwind (servers
    stop, finished work stays cached) and the CLI can say what happened. Ctrl-C stays a plain
    KeyboardInterrupt.

    >>> import signal; Interrupted(signal.SIGTERM).exit_code
    143
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(self.signal_name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
