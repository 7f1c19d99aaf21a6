"""A push receiver for Herald's push functions, scripted per event: it verifies every call
with the `standardwebhooks` package, reads it with the `cloudevents` package, and answers
by the event's `plan` field:

    ok            200
    fail-twice    500 on the first two calls, then 200
    rate-limited  429 with Retry-After: 1 on the first call, then 200
    no-retry      400 with herald-no-retry: true
    slow          sleeps 3 s (past the function's timeout)

Usage: python push_receiver.py SECRET
Prints the port, then one JSON line per call:
{"id", "webhook_id", "attempt", "verified", "answer"}.
"""

import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from standardwebhooks.webhooks import Webhook

webhook = Webhook(sys.argv[1])
calls = Counter()
lock = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            webhook.verify(body, headers)
            verified = True
        except Exception:
            verified = False
        event = from_http_event(HTTPMessage(headers=headers, body=body))
        plan = event.get_data()["plan"]
        with lock:
            calls[event.get_id()] += 1
            count = calls[event.get_id()]
        status, extra = 200, {}
        if not verified:
            status = 401
        elif plan == "fail-twice" and count <= 2:
            status = 500
        elif plan == "rate-limited" and count == 1:
            status, extra = 429, {"Retry-After": "1"}
        elif plan == "no-retry":
            status, extra = 400, {"herald-no-retry": "true"}
        elif plan == "slow":
            time.sleep(3)
        line = {
            "id": event.get_id(),
            "type": event.get_type(),
            "webhook_id": headers.get("webhook-id"),
            "attempt": int(headers.get("herald-attempt", "0")),
            "verified": verified,
            "answer": status,
            "time": time.time(),
        }
        with lock:  # one whole line per call, whatever the threads
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        try:
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        except (BrokenPipeError, ConnectionResetError):
            pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
