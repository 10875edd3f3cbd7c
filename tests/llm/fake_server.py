"""A scripted OpenAI-compatible server on 127.0.0.1 for client tests, with the faults a real
endpoint shows: 429 with Retry-After, 500s, slow answers, no answer at all (``NEVER``), a reply
that is not JSON (``BadJSON``), and dying mid-run (``die_after``)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NEVER = float("inf")  # as a delay: the answer never comes (until the server is closed)


class BadJSON(str):
    """A payload sent as it is, e.g. ``BadJSON('{"id": "x", "choi')``: a 200 that is not JSON."""


def completion(top: dict[str, float], ids: dict[str, int] | None = None) -> dict:
    """A llama-server-shaped answer; ``ids`` gives token ids as llama-server does (else none)."""
    def entry(t):
        return {"token": t, "logprob": top[t], **({"id": ids[t]} if ids else {})}
    content = [{**entry(max(top, key=top.get)), "top_logprobs": [entry(t) for t in top]}]
    return {"id": "x", "object": "text_completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "text": content[0]["token"], "finish_reason": "length",
                         "logprobs": {"content": content}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}


class FakeServer:
    """``script``: list of (status, body, delay[, headers]) answered in order to completion
    requests; the last one repeats. ``body`` may be a function of the request body (returning a
    body, or (status, body)). ``routes``: other paths ("/props", "/tokenize") answered by a
    function of the request body (None for a GET). ``die_after``: after answering that many
    completion requests the server stops listening (connections are then refused).

    ``requests``: the completion request bodies, in order; ``times``: when each arrived."""

    def __init__(self, script, *, routes=None, die_after=None):
        self.script, self.requests, self.times = list(script), [], []
        self.routes, self.die_after = dict(routes or {}), die_after
        self.released = threading.Event()  # set by close(): NEVER answers end
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._route(None)

            def _route(self, body):
                path = self.path.split("?")[0]
                if path not in server.routes:
                    return self._send(404, {"error": {"message": f"no {path}"}})
                self._send(200, server.routes[path](body))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.path.endswith("completions"):
                    return self._route(body)
                with server.lock:
                    server.requests.append(body)
                    server.times.append(time.monotonic())
                    n = len(server.requests)
                if server.die_after is not None and n > server.die_after:
                    self.close_connection = True  # dying: the connection drops without an answer
                    return
                status, payload, delay, *headers = server.script[min(n, len(server.script)) - 1]
                if callable(payload):
                    payload = payload(body)
                    if isinstance(payload, tuple):  # (status, body): the answer picks its status
                        status, payload = payload
                if delay == NEVER:
                    server.released.wait()
                    return
                time.sleep(delay)
                self._send(status, payload, *headers)
                if server.die_after is not None and n >= server.die_after:
                    threading.Thread(target=server.close).start()

            def _send(self, status, payload, headers=None):
                data = payload.encode() if isinstance(payload, BadJSON) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._closed = False
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        with self.lock:
            if self._closed:
                return
            self._closed = True
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_completion(top: dict[str, float], ids: dict[str, int] | None = None) -> dict:
    """The same answer in the chat shape."""
    reply = completion(top, ids)
    choice = reply["choices"][0]
    reply["object"] = "chat.completion"
    reply["choices"] = [{"index": 0, "finish_reason": "length", "logprobs": choice["logprobs"],
                         "message": {"role": "assistant", "content": choice["text"]}}]
    return reply
