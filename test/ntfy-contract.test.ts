/**
 * The recorded answers of a real ntfy 2.13.0 (test/contracts/ntfy-2.13.0/), replayed against the
 * imitation in test/ntfy-server.ts, one test per case, in the recorded order.
 *
 * The imitation is configured as the recorded server was (users, deny-all, attachments on "main"
 * and off on "attachments-off", 12 h cache, request bucket 10 / 1 s, auth-failure bucket 30 / 1 min).
 * Requests go out on a raw socket, as the recorder sent them: a fresh connection, only Host,
 * Content-Length and the recorded headers, the body byte for byte. Answers are compared on status,
 * content type, every response header and the body field by field, with the recording's
 * placeholders standing for "any value of that kind".
 *
 * Time: both servers run on a clock this file owns. The recorder waited for ntfy's buckets; here
 * the clock is moved instead (one replenish interval before each request of an ordinary case, a
 * full bucket before the rate-limit group) and stands still inside the rate-limit and
 * auth-failure groups, so bucket counts are exact and nothing depends on how busy the machine is.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { startNtfyServer, type NtfyServer } from "./ntfy-server.ts";

interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
  body_bytes?: number;
  body_base64?: string;
}
interface RecordedCase {
  name: string;
  shows: string;
  server: "main" | "attachments-off";
  request: RecordedRequest;
  response: {
    status: number;
    content_type: string;
    headers: Record<string, string>;
    body?: unknown;
    body_text?: string;
    body_ends_with_newline?: boolean;
  };
  delivered?: {
    request: RecordedRequest;
    status: number;
    content_type: string;
    messages: unknown[];
    attachment_fetch?: {
      request: RecordedRequest;
      status: number;
      content_type: string;
      body_bytes: number;
      body_is_the_sent_message: boolean;
    };
  };
  publishes_accepted_before_429?: number;
  failed_logins_answered_401_before_429?: { earlier_cases: number; in_a_row_here: number; total: number };
}

const CONTRACT = path.join(import.meta.dir, "contracts", "ntfy-2.13.0", "cases.json");
const CASES: RecordedCase[] = JSON.parse(fs.readFileSync(CONTRACT, "utf8")).cases;

/**
 * Cases the imitation deliberately does not reproduce, with the reason. Empty: every recorded
 * case is replayed and must pass.
 */
const NOT_REPRODUCED: Record<string, string> = {};

/** The recorded server's limits (README.md of the contract). */
const REQUEST_LIMIT = { burst: 10, replenishMs: 1000 };
const AUTH_FAILURE_LIMIT = { burst: 30, replenishMs: 60_000 };

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const random = (n: number) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => ALNUM[b % ALNUM.length]).join("");
const CREDENTIALS: Record<string, string> = {
  CI_TOKEN: `tk_${random(29)}`,
  CI_PASSWORD: random(20),
  READER_PASSWORD: random(20),
  // 21 characters: "Basic base64(tk_bot:password)" is then 46 bytes, whose base64 needs padding, as the
  // recorded password's did (auth-query-padded-base64).
  TKBOT_PASSWORD: random(21),
};

/** Request placeholders: credentials, then `<base64:…>` / `<base64url-raw:…>`, innermost first. */
function resolve(text: string): string {
  let out = text.replace(/<(CI_TOKEN|CI_PASSWORD|READER_PASSWORD|TKBOT_PASSWORD)>/g, (_, name: string) => CREDENTIALS[name]!);
  for (;;) {
    const next = out.replace(/<(base64|base64url-raw):([^<>]*)>/, (_, kind: string, inner: string) =>
      Buffer.from(inner, "utf8").toString(kind === "base64" ? "base64" : "base64url"),
    );
    if (next === out) return out;
    out = next;
  }
}

// ─── A raw HTTP/1.1 client: exactly the bytes the recorder sent, every header of the answer ─────

interface RawResponse {
  status: number;
  headers: [string, string][];
  body: Buffer;
}

function header(res: RawResponse, name: string): string | undefined {
  return res.headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1];
}

/** Parses a complete response out of `buf`, or returns undefined while it is incomplete. */
function parseResponse(buf: Buffer, method: string): RawResponse | undefined {
  const end = buf.indexOf("\r\n\r\n");
  if (end < 0) return undefined;
  const [statusLine, ...lines] = buf.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine!)?.[1]);
  const headers = lines.map((l) => {
    const colon = l.indexOf(":");
    return [l.slice(0, colon), l.slice(colon + 1).trim()] as [string, string];
  });
  const res = { status, headers, body: Buffer.alloc(0) };
  let rest = buf.subarray(end + 4);
  if (method === "HEAD" || status === 204 || status === 304) return res;
  if (header(res, "transfer-encoding")?.toLowerCase() === "chunked") {
    const chunks: Buffer[] = [];
    for (;;) {
      const lineEnd = rest.indexOf("\r\n");
      if (lineEnd < 0) return undefined;
      const size = parseInt(rest.subarray(0, lineEnd).toString("latin1"), 16);
      if (size === 0) {
        if (rest.indexOf("\r\n\r\n", lineEnd) < 0 && rest.subarray(lineEnd).toString() !== "\r\n\r\n") return undefined;
        return { ...res, body: Buffer.concat(chunks) };
      }
      if (rest.length < lineEnd + 2 + size + 2) return undefined;
      chunks.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      rest = rest.subarray(lineEnd + 2 + size + 2);
    }
  }
  const length = Number(header(res, "content-length") ?? NaN);
  if (Number.isNaN(length) || rest.length < length) return undefined;
  return { ...res, body: rest.subarray(0, length) };
}

function send(baseURL: string, method: string, target: string, headers: [string, string][], body?: Buffer): Promise<RawResponse> {
  const { hostname, port } = new URL(baseURL);
  const head = [`${method} ${target} HTTP/1.1`, `Host: ${hostname}:${port}`, ...headers.map(([n, v]) => `${n}: ${v}`)];
  if (body) head.push(`Content-Length: ${body.length}`);
  // Header values go out as UTF-8, which is what "sent as raw UTF-8 bytes" means in the recording.
  const bytes = Buffer.concat([Buffer.from(`${head.join("\r\n")}\r\n\r\n`, "utf8"), body ?? Buffer.alloc(0)]);
  return new Promise((resolvePromise, reject) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const socket = net.connect(Number(port), hostname, () => socket.write(bytes));
    const finish = () => {
      const res = parseResponse(buf, method);
      if (res && !done) {
        done = true;
        socket.destroy();
        resolvePromise(res);
      }
      return res;
    };
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      finish();
    });
    socket.on("end", () => {
      if (!finish() && !done) reject(new Error(`incomplete answer to ${method} ${target}: ${JSON.stringify(buf.toString("latin1").slice(0, 300))}`));
    });
    socket.on("error", (e) => !done && reject(e));
  });
}

function requestOf(r: RecordedRequest): { target: string; headers: [string, string][]; body?: Buffer } {
  const headers = Object.entries(r.headers).map(([n, v]) => [n, resolve(v.replace(/ {2}\(sent as raw UTF-8 bytes\)$/, ""))] as [string, string]);
  const body = r.body_base64 !== undefined ? Buffer.from(r.body_base64, "base64") : r.body !== undefined ? Buffer.from(r.body, "utf8") : undefined;
  return { target: resolve(r.path), headers, body };
}

// ─── Comparison with the response placeholders ──────────────────────────────────────────────────

interface Context {
  baseURL: string;
  /** The clock's second when the request was answered: what `<time>` must be. */
  second: number;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const HTTP_DATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/**
 * Lists where `actual` differs from `recorded`. `<id>` and `<action-id>` are ids of their length;
 * `<time>` is the clock's second; `<time+N>` is this message's time plus N; inside a string,
 * `<base-url>` is the server's URL and `<id>` this message's id.
 */
function differences(recorded: unknown, actual: unknown, ctx: Context, at = "body", message?: Record<string, unknown>): string[] {
  const own = message ?? (typeof actual === "object" && actual !== null && !Array.isArray(actual) && "time" in actual ? (actual as Record<string, unknown>) : undefined);
  const bad = (why: string) => [`${at}: ${why} (recorded ${JSON.stringify(recorded)}, got ${JSON.stringify(actual)})`];
  if (recorded === "<id>") return typeof actual === "string" && /^[A-Za-z0-9]{12}$/.test(actual) ? [] : bad("not a 12-character id");
  if (recorded === "<action-id>") return typeof actual === "string" && /^[A-Za-z0-9]{10}$/.test(actual) ? [] : bad("not a 10-character action id");
  if (recorded === "<time>") return actual === ctx.second ? [] : bad(`not the message's Unix time ${ctx.second}`);
  const plus = typeof recorded === "string" ? /^<time\+(\d+)>$/.exec(recorded) : null;
  if (plus) {
    const time = own?.time;
    return typeof time === "number" && actual === time + Number(plus[1]) ? [] : bad(`not time + ${plus[1]}`);
  }
  if (typeof recorded === "string" && /<(base-url|id)>/.test(recorded)) {
    const pattern = escapeRegExp(recorded).replaceAll("<base-url>", escapeRegExp(ctx.baseURL)).replaceAll("<id>", escapeRegExp(String(own?.id)));
    return typeof actual === "string" && new RegExp(`^${pattern}$`).test(actual) ? [] : bad("does not match");
  }
  if (Array.isArray(recorded)) {
    if (!Array.isArray(actual) || actual.length !== recorded.length) return bad("not an array of that length");
    return recorded.flatMap((r, i) => differences(r, actual[i], ctx, `${at}[${i}]`, message ?? own));
  }
  if (typeof recorded === "object" && recorded !== null) {
    if (typeof actual !== "object" || actual === null || Array.isArray(actual)) return bad("not an object");
    const keys = Object.keys(recorded);
    // Go writes struct fields in declaration order; so must the imitation.
    if (JSON.stringify(Object.keys(actual)) !== JSON.stringify(keys)) return bad(`keys ${JSON.stringify(Object.keys(actual))}`);
    return keys.flatMap((k) => differences((recorded as Record<string, unknown>)[k], (actual as Record<string, unknown>)[k], ctx, `${at}.${k}`, message ?? own));
  }
  return Object.is(recorded, actual) ? [] : bad("differs");
}

function responseDifferences(rec: RecordedCase["response"], res: RawResponse, ctx: Context): string[] {
  const out: string[] = [];
  if (res.status !== rec.status) out.push(`status ${res.status}, recorded ${rec.status}`);
  if (header(res, "content-type") !== rec.content_type) out.push(`content type ${header(res, "content-type")}, recorded ${rec.content_type}`);
  const names = (h: string[]) => JSON.stringify(h.map((n) => n.toLowerCase()).sort());
  if (names(res.headers.map(([n]) => n)) !== names(Object.keys(rec.headers))) {
    out.push(`headers ${names(res.headers.map(([n]) => n))}, recorded ${names(Object.keys(rec.headers))}`);
  }
  const text = res.body.toString("utf8");
  for (const [name, value] of Object.entries(rec.headers)) {
    const got = header(res, name);
    if (value === "<date>") {
      if (!got || !HTTP_DATE.test(got)) out.push(`${name}: ${got} is no HTTP date`);
    } else if (name.toLowerCase() === "content-length" && JSON.stringify(rec.body).includes("<base-url>")) {
      // The recorded length counts the recording server's URL; ours has another port.
      if (got !== String(res.body.length)) out.push(`Content-Length ${got} for ${res.body.length} bytes`);
    } else if (got !== value) out.push(`${name}: ${got}, recorded ${value}`);
  }
  if (rec.body_text !== undefined) {
    if (text !== rec.body_text) out.push(`body ${JSON.stringify(text)}, recorded ${JSON.stringify(rec.body_text)}`);
  } else if (rec.content_type.startsWith("application/x-ndjson")) {
    const lines = text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
    out.push(...differences(rec.body, lines, ctx));
  } else {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return [...out, `body is not JSON: ${JSON.stringify(text.slice(0, 200))}`];
    }
    out.push(...differences(rec.body, parsed, ctx));
  }
  if (rec.body_ends_with_newline !== undefined && text.endsWith("\n") !== rec.body_ends_with_newline) out.push("newline at the end of the body differs");
  return out;
}

// ─── Replay ──────────────────────────────────────────────────────────────────────────────────────

describe("ntfy 2.13.0 contract, replayed against test/ntfy-server.ts", () => {
  let clockMs = Date.now();
  const now = () => clockMs;
  /** What the recorder waited for; here the clock moves instead. */
  const advance = (ms: number) => (clockMs += ms);
  const servers: Partial<Record<RecordedCase["server"], NtfyServer>> = {};
  /** The last message each server accepted on gitea-ci: the subscriber polls for what came after. */
  const lastId: Partial<Record<RecordedCase["server"], string>> = {};
  let failedLogins = 0;
  let firstFailedLoginAt: number | undefined;

  beforeAll(async () => {
    for (const [name, attachments] of [["main", true], ["attachments-off", false]] as const) {
      servers[name] = await startNtfyServer({
        users: [
          { name: "ci", password: CREDENTIALS.CI_PASSWORD!, tokens: [CREDENTIALS.CI_TOKEN!], access: { "gitea-ci": "read-write" } },
          { name: "reader", password: CREDENTIALS.READER_PASSWORD!, access: { "gitea-ci": "read-only" } },
          { name: "tk_bot", password: CREDENTIALS.TKBOT_PASSWORD!, access: { "gitea-ci": "read-write" } },
        ],
        defaultAccess: "deny-all",
        attachments,
        requestLimit: REQUEST_LIMIT,
        authFailureLimit: AUTH_FAILURE_LIMIT,
        now,
      });
    }
  });
  afterAll(async () => {
    for (const server of Object.values(servers)) await server!.stop();
  });

  async function exchange(c: RecordedCase, r: RecordedRequest) {
    const server = servers[c.server]!;
    const { target, headers, body } = requestOf(r);
    const second = Math.floor(clockMs / 1000);
    const res = await send(server.url, r.method, target, headers, body);
    const authenticated = headers.some(([n]) => n.toLowerCase() === "authorization") || /[?&]auth=/.test(target);
    if (res.status === 401 && authenticated) {
      failedLogins++;
      firstFailedLoginAt ??= clockMs;
    }
    return { res, ctx: { baseURL: server.url, second }, server };
  }

  /** The read-only subscriber's poll and, for an attachment, the unauthenticated download. */
  async function checkDelivered(c: RecordedCase, published: Record<string, unknown>) {
    const d = c.delivered!;
    const since = lastId[c.server] ?? "all";
    lastId[c.server] = String(published.id);
    advance(REQUEST_LIMIT.replenishMs);
    const poll = { ...d.request, path: d.request.path.replace("<previous-id>", since) };
    const { res, ctx } = await exchange(c, poll);
    expect(res.status, "poll status").toBe(d.status);
    expect(header(res, "content-type"), "poll content type").toBe(d.content_type);
    const lines = res.body
      .toString("utf8")
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((m) => m.id === published.id);
    // The poll is answered later than the publish: <time> there is the message's own time.
    const messageCtx = { ...ctx, second: published.time as number };
    expect(differences(d.messages, lines, messageCtx, "delivered")).toEqual([]);

    const fetch = d.attachment_fetch;
    if (fetch) {
      const url = String((published.attachment as Record<string, unknown>).url);
      advance(REQUEST_LIMIT.replenishMs);
      const file = await exchange(c, { ...fetch.request, path: url.slice(ctx.baseURL.length) });
      expect(file.res.status, "attachment status").toBe(fetch.status);
      expect(header(file.res, "content-type"), "attachment content type").toBe(fetch.content_type);
      expect(file.res.body.length, "attachment size").toBe(fetch.body_bytes);
      const sent = c.request.path === "/" ? Buffer.from(String(JSON.parse(c.request.body!).message), "utf8") : requestOf(c.request).body!;
      expect(file.res.body.equals(sent), "attachment is the message sent").toBe(fetch.body_is_the_sent_message);
    }
  }

  async function replay(c: RecordedCase) {
    const group = c.name.startsWith("rate-limit") ? "rate" : c.name === "auth-failure-limit-429" || c.name === "auth-failure-limit-blocks-valid-token" ? "auth" : "ordinary";
    if (c.request.body_bytes !== undefined) expect(requestOf(c.request).body!.length, "body as recorded").toBe(c.request.body_bytes);

    let result: Awaited<ReturnType<typeof exchange>>;
    if (c.publishes_accepted_before_429 !== undefined) {
      // A full bucket, then the same publish back to back until ntfy refuses one.
      advance(REQUEST_LIMIT.burst * REQUEST_LIMIT.replenishMs);
      let accepted = 0;
      for (;;) {
        result = await exchange(c, c.request);
        if (result.res.status !== 200 || accepted > 100) break;
        accepted++;
        lastId[c.server] = JSON.parse(result.res.body.toString("utf8")).id;
      }
      expect(accepted, "publishes accepted before the 429").toBe(c.publishes_accepted_before_429);
    } else if (c.failed_logins_answered_401_before_429) {
      const recorded = c.failed_logins_answered_401_before_429;
      expect(failedLogins, "failed logins in the earlier cases").toBe(recorded.earlier_cases);
      for (let i = 0; ; i++) {
        result = await exchange(c, c.request);
        if (result.res.status !== 401 || i > 100) break;
      }
      // The bucket holds 30 and gets one back a minute: the recording counted 31 over its run.
      const refills = Math.floor((clockMs - (firstFailedLoginAt ?? clockMs)) / AUTH_FAILURE_LIMIT.replenishMs);
      expect(failedLogins, "failed logins answered 401 before the 429").toBeGreaterThanOrEqual(AUTH_FAILURE_LIMIT.burst);
      expect(failedLogins).toBeLessThanOrEqual(AUTH_FAILURE_LIMIT.burst + refills);
    } else {
      // The rate-limited cases need the bucket still empty, "after-replenish" one interval later.
      if (group === "ordinary" || c.name === "rate-limit-after-replenish") advance(REQUEST_LIMIT.replenishMs);
      result = await exchange(c, c.request);
    }

    expect(responseDifferences(c.response, result!.res, result!.ctx)).toEqual([]);
    if (c.delivered) {
      expect(c.response.status, "a delivered case is a 200 publish").toBe(200);
      await checkDelivered(c, JSON.parse(result!.res.body.toString("utf8")));
    }
  }

  test("the contract is the one recorded: 147 cases with unique names, each replayed below", () => {
    expect(CASES.length).toBe(147);
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
    for (const [name, reason] of Object.entries(NOT_REPRODUCED)) {
      expect(CASES.some((c) => c.name === name), name).toBe(true);
      expect(reason.length, name).toBeGreaterThan(10);
    }
  });

  for (const c of CASES) {
    const title = `${c.name}: ${c.shows.length > 110 ? `${c.shows.slice(0, 107)}...` : c.shows}`;
    if (NOT_REPRODUCED[c.name]) test.skip(`${title} [not reproduced: ${NOT_REPRODUCED[c.name]}]`, () => {});
    else test(title, () => replay(c));
  }
});
