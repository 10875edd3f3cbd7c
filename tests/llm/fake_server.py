"""A scripted OpenAI-compatible server on 127.0.0.1 for client tests (429s, 500s, slow answers)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
    """``script``: list of (status, body, delay) answered in order; the last one repeats."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                status, payload, delay = server.script[min(len(server.requests), len(server.script)) - 1]
                if callable(payload):
                    payload = payload(body)
                    if isinstance(payload, tuple):  # (status, body): the answer picks its status
                        status, payload = payload
                time.sleep(delay)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
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
