"""Sends events to a Herald gateway with real clients: the `cloudevents` package (binary,
structured and batch modes) and the `inngest` package (its /e/{key} event API).

Usage: python send_events.py GATEWAY_URL TOKEN RUN_ID
Prints one JSON line per request: {"mode", "status", "body"} (inngest: {"mode", "ids"}).
"""

import json
import sys

import requests
from cloudevents.core.bindings import http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

import inngest

url, token, run = sys.argv[1], sys.argv[2], sys.argv[3]
events_url = f"{url}/v1/events"
auth = {"Authorization": f"Bearer {token}"}


def event(n):
    return CloudEvent(
        attributes={
            "id": f"{run}-ce-{n}",
            "type": "user.signup",
            "source": "urn:example:python",
            "subject": f"user-{n}",
            "datacontenttype": "application/json",
        },
        data={"email": f"user{n}@example.com", "plan": None},
    )


def report(mode, response):
    print(json.dumps({"mode": mode, "status": response.status_code, "body": response.json()}))


message = http.to_binary_event(event(0))
report("binary", requests.post(events_url, headers={**message.headers, **auth}, data=message.body))

message = http.to_structured_event(event(1))
report("structured", requests.post(events_url, headers={**message.headers, **auth}, data=message.body))

fmt = JSONFormat()
batch = b"[" + b",".join(fmt.write(event(n)) for n in (2, 3)) + b"]"
headers = {"Content-Type": "application/cloudevents-batch+json", **auth}
report("batch", requests.post(events_url, headers=headers, data=batch))

client = inngest.Inngest(
    app_id="herald-gateway-test",
    event_api_base_url=url,
    event_key=token,
    is_production=True,
)
ids = client.send_sync(
    [
        inngest.Event(name="user.signup", data={"email": "inngest4@example.com"}),
        inngest.Event(name="user.signup", data={"email": "inngest5@example.com"}, id=f"{run}-in-5"),
    ]
)
print(json.dumps({"mode": "inngest", "ids": ids}))
