"""Plain helpers shared by the captioning tests: a seeded test signal and a real chat-completions server.

Test modules import these from here (never from another test module); `conftest.py` wraps the server
in the `chat_server` fixture.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from swansphere.conventions import SAMPLE_RATE


def noise_bursts(seconds: float, seed: int) -> np.ndarray:
    """Seeded white-noise bursts, 200 ms on and 50 ms off, so every 1 s segment holds sound."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    on = (np.arange(n) % (SAMPLE_RATE // 4)) < SAMPLE_RATE // 5
    return 0.1 * rng.standard_normal(n) * on


class ChatServer:
    """A real chat-completions server on 127.0.0.1 that captions from the trajectory it was sent.

    The model name picks the behaviour: "broken" answers 500, "garbled" a body that is not JSON,
    "empty" no choices, "slow" waits 1 s; any other name answers in the OpenAI shape.
    """

    def __init__(self) -> None:
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path != "/v1/chat/completions":
                    return self._answer(404, {"error": {"message": f"no route {self.path}"}})
                status, answer = server.respond(body)
                return self._answer(status, answer)

            def _answer(self, status: int, answer: dict | bytes) -> None:
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting ("slow")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def respond(self, body: dict) -> tuple[int, dict | bytes]:
        model, messages = body.get("model"), body.get("messages")
        roles = [m.get("role") for m in messages] if isinstance(messages, list) else None
        if not isinstance(model, str) or roles != ["system", "user"]:
            return 400, {"error": {"message": "want a model and [system, user] messages"}}
        if model == "broken":
            return 500, {"error": {"message": "model crashed"}}
        if model == "garbled":
            return 200, b"<html>not json"
        if model == "empty":
            return 200, {"choices": []}
        if model == "slow":
            time.sleep(1.0)
        scene = self.trajectory_in(messages[1]["content"])
        source = scene["sources"][0]
        points = source["trajectory"]
        caption = f"A {source['class']} at azimuth {points[0]['azimuth']:.0f}, {len(points)} points."
        message = {"role": "assistant", "content": caption}
        return 200, {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    @staticmethod
    def trajectory_in(content: str) -> dict:
        """The trajectory JSON document inside the user message."""
        return json.JSONDecoder().raw_decode(content, content.index("{"))[0]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
