// Send a Herald event over HTTP from TypeScript with the `cloudevents` package and fetch,
// through `herald serve --gateway`: one in binary mode, then a batch (all or nothing).
//
//   npm install            # cloudevents, tsx
//   herald keys create --name ts-example           # prints hrld_… once
//   HERALD_GATEWAY=http://127.0.0.1:8288 HERALD_TOKEN=hrld_… npx tsx send_event.ts
import { randomUUID } from "node:crypto";
import { CloudEvent, HTTP } from "cloudevents";

const gateway = process.env.HERALD_GATEWAY ?? "http://127.0.0.1:8288";
const token = process.env.HERALD_TOKEN;
if (!token) throw new Error("set HERALD_TOKEN to a token from `herald keys create`");

const signup = (email: string) =>
  new CloudEvent({
    id: `signup-${randomUUID()}`, // the dedup id: send the same id again to retry safely
    type: "user.signup",
    source: "urn:example:service:typescript",
    datacontenttype: "application/json",
    data: { user_id: randomUUID(), email, plan: null },
  });

async function post(headers: Record<string, string>, body: string) {
  const response = await fetch(`${gateway}/v1/events`, {
    method: "POST",
    headers: { ...headers, authorization: `Bearer ${token}` },
    body,
  });
  // 202 {"accepted":[…]}, or an RFC 9457 problem (400 with JSON paths; 429/503 Retry-After).
  console.log(response.status, JSON.stringify(await response.json()));
}

// Binary mode: ce-* headers and the JSON data as the body.
const binary = HTTP.binary(signup("ada@example.com"));
await post(binary.headers as Record<string, string>, binary.body as string);

// A batch: every event is validated before any is stored.
const batch = [signup("grace@example.com"), signup("alan@example.com")];
await post(
  { "content-type": "application/cloudevents-batch+json" },
  JSON.stringify(batch.map((event) => event.toJSON())),
);
