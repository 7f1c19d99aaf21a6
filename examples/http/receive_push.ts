// Receive Herald push calls in TypeScript: verify the Standard Webhooks signature with the
// `standardwebhooks` package, read the CloudEvent with the `cloudevents` package, answer.
//
//   npm install
//   HERALD_PUSH_SECRET=whsec_… npx tsx receive_push.ts                 # listens on :8080
//   herald push add send-welcome --on user.signup --url http://127.0.0.1:8080/ --secret-file whsec.txt
//   herald serve --push --allow-private-targets                         # a local target
//
// 2xx acks; 429/503 with Retry-After retry after that delay; 5xx retries with backoff;
// `herald-no-retry: true` or another 4xx dead-letters at once. `webhook-id` is the same on
// every retry of an event: use it to deduplicate side effects.
import { createServer } from "node:http";
import { HTTP } from "cloudevents";
import { Webhook } from "standardwebhooks";

const secret = process.env.HERALD_PUSH_SECRET;
if (!secret) throw new Error("set HERALD_PUSH_SECRET to the function's whsec_ secret");
const webhook = new Webhook(secret);

createServer(async (request, response) => {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks).toString("utf8");
  const headers = Object.fromEntries(
    Object.entries(request.headers).map(([name, value]) => [name, String(value)]),
  );
  try {
    webhook.verify(body, headers);
  } catch {
    response.writeHead(401).end();
    return;
  }
  const event = HTTP.toEvent({ headers, body });
  const single = Array.isArray(event) ? event[0] : event;
  const data = single.data as { email?: string };
  console.log(`${single.type} ${single.id} attempt ${headers["herald-attempt"]}:`, data);
  if (!data.email) {
    // Retrying cannot help: dead-letter it at once.
    response.writeHead(400, { "herald-no-retry": "true" }).end();
    return;
  }
  // ... send the welcome e-mail, keyed by headers["webhook-id"] ...
  response.writeHead(204).end();
}).listen(Number(process.env.PORT ?? 8080));
