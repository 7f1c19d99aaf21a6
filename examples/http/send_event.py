"""Send a Herald event over HTTP from Python, with the `cloudevents` package (binary mode)
and with the Inngest SDK (its event API), through `herald serve --gateway`.

    python -m venv .venv && .venv/bin/pip install cloudevents==2.2.0 inngest==0.5.19 requests
    herald keys create --name python-example        # prints hrld_… once
    HERALD_GATEWAY=http://127.0.0.1:8288 HERALD_TOKEN=hrld_… .venv/bin/python send_event.py
"""

import os
import uuid

import inngest
import requests
from cloudevents.core.bindings import http
from cloudevents.core.v1.event import CloudEvent

gateway = os.environ.get("HERALD_GATEWAY", "http://127.0.0.1:8288")
token = os.environ["HERALD_TOKEN"]

# CloudEvents, binary mode: the attributes travel as ce-* headers, the data as the body.
event = CloudEvent(
    attributes={
        "id": f"signup-{uuid.uuid4()}",  # the dedup id: send the same id again to retry safely
        "type": "user.signup",
        "source": "urn:example:service:python",
        "datacontenttype": "application/json",
    },
    data={"user_id": str(uuid.uuid4()), "email": "ada@example.com", "plan": None},
)
message = http.to_binary_event(event)
response = requests.post(
    f"{gateway}/v1/events",
    headers={**message.headers, "Authorization": f"Bearer {token}"},
    data=message.body,
    timeout=10,
)
# 202 with {"accepted": [{"id", "type", "seq", "duplicate", "dataschema"}]}, or an RFC 9457
# problem document: 400 lists each violation with its JSON path; 429 and 503 say Retry-After.
print(response.status_code, response.json())

# The Inngest SDK, unchanged: the gateway is its event API, the Herald token its event key.
client = inngest.Inngest(
    app_id="python-example",
    event_api_base_url=gateway,
    event_key=token,
    is_production=True,
)
ids = client.send_sync(
    inngest.Event(
        name="user.signup",
        data={"user_id": str(uuid.uuid4()), "email": "grace@example.com", "plan": "pro"},
    )
)
print("inngest ids", ids)
