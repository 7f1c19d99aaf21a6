"""Receive Herald push calls in Python: verify the Standard Webhooks signature with the
`standardwebhooks` package, read the CloudEvent with the `cloudevents` package, answer.

    .venv/bin/pip install cloudevents==2.2.0 standardwebhooks==1.1.0
    HERALD_PUSH_SECRET=whsec_… .venv/bin/python receive_push.py      # listens on :8080
    herald push add send-welcome --on user.signup --url http://127.0.0.1:8080/ \\
        --secret-file whsec.txt
    herald serve --push --allow-private-targets                       # a local target

2xx acks; 429/503 with Retry-After retry after that delay; 5xx retries with backoff;
`herald-no-retry: true` or another 4xx dead-letters at once. `webhook-id` is the same on
every retry of an event: use it to deduplicate side effects.
"""

import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["HERALD_PUSH_SECRET"])


class Receiver(BaseHTTPRequestHandler):
    def answer(self, status, headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            webhook.verify(body, headers)
        except WebhookVerificationError:
            return self.answer(401)
        event = from_http_event(HTTPMessage(headers=headers, body=body))
        data = event.get_data()
        print(f"{event.get_type()} {event.get_id()} attempt {headers['herald-attempt']}: {data}")
        if not data.get("email"):
            # Retrying cannot help: dead-letter it at once.
            return self.answer(400, {"herald-no-retry": "true"})
        # ... send the welcome e-mail, keyed by headers["webhook-id"] ...
        self.answer(204)


HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Receiver).serve_forever()
