import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { NTFY_ERRORS, startNtfyServer, type NtfyServer } from "./ntfy-server.ts";
import { withServer } from "./with-server.ts";

const TOKEN = "tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2";

async function publishJSON(server: NtfyServer, body: unknown, headers: Record<string, string> = {}, method = "POST") {
  const res = await fetch(`${server.url}/`, { method, body: typeof body === "string" ? body : JSON.stringify(body), headers });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

function errorBody(spec: { code: number; http: number; error: string; link?: string }, detail?: string) {
  const body: Record<string, unknown> = { code: spec.code, http: spec.http, error: detail ? `${spec.error}; ${detail}` : spec.error };
  if (spec.link) body.link = spec.link;
  return `${JSON.stringify(body)}\n`;
}

test("the error catalogue is ntfy's (server/errors.go)", () => {
  // Pinned as literals: these are the bodies kfp-sync's notify client has to recognise.
  expect(Object.values(NTFY_ERRORS).map((e) => [e.code, e.http, e.error])).toEqual([
    [40000, 400, "invalid request"],
    [40001, 400, "e-mail notifications are not enabled"],
    [40007, 400, "invalid priority parameter"],
    [40008, 400, "invalid since parameter"],
    [40009, 400, "invalid request: topic invalid"],
    [40010, 400, "invalid request: topic name is not allowed"],
    [40011, 400, "invalid message: message must be UTF-8 encoded"],
    [40013, 400, "invalid request: attachment URL is invalid"],
    [40014, 400, "invalid request: attachments not allowed"],
    [40018, 400, "invalid request: actions invalid"],
    [40021, 400, "invalid request: icon URL is invalid"],
    [40024, 400, "invalid request: request body must be valid JSON"],
    [40032, 400, "invalid request: calling is disabled"],
    [40101, 401, "unauthorized"],
    [40301, 403, "forbidden"],
    [40401, 404, "page not found"],
    [41301, 413, "attachment too large, or bandwidth limit reached"],
    [41303, 413, "JSON body too large"],
    [42901, 429, "limit reached: too many requests"],
    [42909, 429, "limit reached: too many auth failures"],
    [50001, 500, "internal server error"],
  ]);
  expect(NTFY_ERRORS.priorityInvalid.link).toBe("https://ntfy.sh/docs/publish/#message-priority");
  expect(NTFY_ERRORS.unauthorized.link).toBe("https://ntfy.sh/docs/publish/#authentication");
  expect(NTFY_ERRORS.tooManyRequests.link).toBe("https://ntfy.sh/docs/publish/#limitations");
});

describe("JSON publish to the root URL", () => {
  let server: NtfyServer;
  beforeAll(async () => (server = await startNtfyServer()));
  afterAll(() => server.stop());

  test("answers with the message JSON and records the publish", async () => {
    const body = {
      topic: "kfp-sync",
      title: "3 pipelines uploaded",
      message: "  train, eval, serve  \n",
      priority: 4,
      tags: ["white_check_mark", "kfp"],
      click: "https://kfp.example.com/#/pipelines",
      actions: [{ action: "view", label: "Open KFP", url: "https://kfp.example.com" }],
    };
    const before = Math.floor(Date.now() / 1000);
    const res = await publishJSON(server, body, { "Content-Type": "application/json" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.text.endsWith("}\n")).toBe(true);
    const m = JSON.parse(res.text);
    expect(Object.keys(m)).toEqual(["id", "time", "expires", "event", "topic", "title", "message", "priority", "tags", "click", "actions"]);
    expect(m.id).toMatch(/^[A-Za-z0-9]{12}$/);
    expect(m.time).toBeGreaterThanOrEqual(before);
    expect(m.expires).toBe(m.time + 12 * 3600);
    expect(m).toMatchObject({ event: "message", topic: "kfp-sync", title: body.title, message: "train, eval, serve", priority: 4, tags: body.tags, click: body.click });
    expect(m.actions).toEqual([{ id: expect.stringMatching(/^[A-Za-z0-9]{10}$/), action: "view", label: "Open KFP", clear: false, url: "https://kfp.example.com" }]);

    const rec = server.published.at(-1)!;
    expect(rec).toMatchObject({ topic: "kfp-sync", title: body.title, message: "train, eval, serve", priority: 4, tags: body.tags, click: body.click });
    expect(rec.actions).toEqual(m.actions);
    expect(rec.raw).toBe(JSON.stringify(body));
    expect(rec.headers["content-type"]).toBe("application/json");
  });

  test("PUT works too; a missing message becomes 'triggered'; markdown sets content_type", async () => {
    const res = await publishJSON(server, { topic: "t1", markdown: true }, {}, "PUT");
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toMatchObject({ topic: "t1", message: "triggered", content_type: "text/markdown" });
  });

  test("keys match case-insensitively, unknown keys are ignored, priority 0 means unset", async () => {
    const res = await publishJSON(server, { Topic: "t2", MESSAGE: "hi", priority: 0, whatever: [1] });
    expect(res.status).toBe(200);
    const m = JSON.parse(res.text);
    expect(m).toMatchObject({ topic: "t2", message: "hi" });
    expect(m.priority).toBeUndefined();
  });

  test("http action: method upper-cased, clear kept, headers and body passed", async () => {
    const action = { action: "HTTP", label: "Retry", url: "https://ci/retry", method: "put", clear: true, headers: { "X-A": "1" }, body: "{}" };
    const m = JSON.parse((await publishJSON(server, { topic: "t3", actions: [action] })).text);
    expect(m.actions[0]).toMatchObject({ action: "http", label: "Retry", clear: true, url: "https://ci/retry", method: "PUT", headers: { "X-A": "1" }, body: "{}" });
  });

  test.each([
    ["not JSON", "{topic:", NTFY_ERRORS.jsonInvalid],
    ["empty body", "", NTFY_ERRORS.jsonInvalid],
    ["an array", "[]", NTFY_ERRORS.jsonInvalid],
    ["priority as a word", JSON.stringify({ topic: "t", priority: "high" }), NTFY_ERRORS.jsonInvalid],
    ["priority not an integer", JSON.stringify({ topic: "t", priority: 4.5 }), NTFY_ERRORS.jsonInvalid],
    ["tags as a string", JSON.stringify({ topic: "t", tags: "a,b" }), NTFY_ERRORS.jsonInvalid],
    ["markdown as a string", JSON.stringify({ topic: "t", markdown: "yes" }), NTFY_ERRORS.jsonInvalid],
    ["action clear as a string", JSON.stringify({ topic: "t", actions: [{ action: "view", label: "l", url: "u", clear: "yes" }] }), NTFY_ERRORS.jsonInvalid],
    ["no topic", JSON.stringify({ message: "m" }), NTFY_ERRORS.topicInvalid],
    ["null", "null", NTFY_ERRORS.topicInvalid],
    ["a topic with a slash", JSON.stringify({ topic: "a/b" }), NTFY_ERRORS.topicInvalid],
    ["a 65-character topic", JSON.stringify({ topic: "x".repeat(65) }), NTFY_ERRORS.topicInvalid],
    ["a reserved topic", JSON.stringify({ topic: "docs" }), NTFY_ERRORS.topicDisallowed],
    ["priority 6", JSON.stringify({ topic: "t", priority: 6 }), NTFY_ERRORS.priorityInvalid],
    ["priority -1", JSON.stringify({ topic: "t", priority: -1 }), NTFY_ERRORS.priorityInvalid],
    ["an e-mail (no SMTP)", JSON.stringify({ topic: "t", email: "a@b.c" }), NTFY_ERRORS.emailDisabled],
    ["a call (no Twilio)", JSON.stringify({ topic: "t", call: "yes" }), NTFY_ERRORS.phoneCallsDisabled],
    ["an attach that is no URL", JSON.stringify({ topic: "t", attach: "file.txt" }), NTFY_ERRORS.attachmentURLInvalid],
    ["an icon that is no URL", JSON.stringify({ topic: "t", icon: "icon.png" }), NTFY_ERRORS.iconURLInvalid],
  ])("rejects %s with ntfy's error", async (_, body, spec) => {
    const before = server.published.length;
    const res = await publishJSON(server, body);
    expect(res.status).toBe(spec.http);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.text).toBe(errorBody(spec));
    expect(server.published.length).toBe(before);
  });

  test.each([
    ["4 actions", Array.from({ length: 4 }, (_, i) => ({ action: "view", label: `l${i}`, url: "https://x" })), "only 3 actions allowed"],
    ["an unknown action", [{ action: "open", label: "l", url: "https://x" }], "parameter 'action' cannot be 'open', valid values are 'view', 'broadcast' and 'http'"],
    ["no label", [{ action: "view", url: "https://x" }], "parameter 'label' is required"],
    ["a view without url", [{ action: "view", label: "l" }], "parameter 'url' is required for action 'view'"],
    ["a GET with a body", [{ action: "http", label: "l", url: "https://x", method: "get", body: "b" }], "parameter 'body' cannot be set if method is GET"],
  ])("rejects %s as 40018 with the reason", async (_, actions, detail) => {
    const res = await publishJSON(server, { topic: "t", actions });
    expect(res.status).toBe(400);
    expect(res.text).toBe(errorBody(NTFY_ERRORS.actionsInvalid, detail));
  });

  test("3 actions are fine", async () => {
    const actions = [
      { action: "view", label: "a", url: "https://x" },
      { action: "broadcast", label: "b" },
      { action: "http", label: "c", url: "https://y" },
    ];
    const res = await publishJSON(server, { topic: "t", actions });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text).actions.map((a: { action: string }) => a.action)).toEqual(["view", "broadcast", "http"]);
  });

  test("a message of 4095 bytes is accepted; 4096 bytes (counted in UTF-8) is an attachment, refused here", async () => {
    const ok = await publishJSON(server, { topic: "t", message: `${"é".repeat(2047)}a` });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.text).message).toBe(`${"é".repeat(2047)}a`);
    const over = await publishJSON(server, { topic: "t", message: "é".repeat(2048) });
    expect(over.status).toBe(400);
    expect(over.text).toBe(errorBody(NTFY_ERRORS.attachmentsDisallowed));
  });

  test("a JSON body over 8192 bytes is 413", async () => {
    const res = await publishJSON(server, { topic: "t", message: "a".repeat(8200) });
    expect(res.status).toBe(413);
    expect(res.text).toBe(errorBody(NTFY_ERRORS.jsonBodyTooLarge));
  });

  test("an Authorization header is ignored when the server has no auth", async () => {
    const res = await publishJSON(server, { topic: "t" }, { Authorization: "Bearer tk_nonsense" });
    expect(res.status).toBe(200);
  });

  test("unknown routes are 404 40401; health is up", async () => {
    const res = await fetch(`${server.url}/a/b/c`, { method: "POST", body: "x" });
    expect(res.status).toBe(404);
    expect(await res.text()).toBe(errorBody(NTFY_ERRORS.notFound));
    const health = await fetch(`${server.url}/v1/health`);
    expect(await health.json()).toEqual({ healthy: true });
  });

  test("every request is logged with its answer", async () => {
    const n = server.requests.length;
    await publishJSON(server, { topic: "logged", message: "m" }, { "X-Trace": "1" });
    await publishJSON(server, "{");
    const [ok, bad] = server.requests.slice(n);
    expect(ok).toMatchObject({ method: "POST", path: "/", status: 200, body: JSON.stringify({ topic: "logged", message: "m" }) });
    expect(ok!.headers["x-trace"]).toBe("1");
    expect(bad).toMatchObject({ status: 400, body: "{" });
  });
});

describe("classic publish to /{topic}", () => {
  let server: NtfyServer;
  beforeAll(async () => (server = await startNtfyServer()));
  afterAll(() => server.stop());

  test("body is the message; X-Title, X-Priority, X-Tags, X-Click, Actions headers apply", async () => {
    const res = await fetch(`${server.url}/kfp_runs`, {
      method: "POST",
      body: "Pipeline uploaded\n",
      headers: {
        "X-Title": "kfp-sync",
        "X-Priority": "high",
        "X-Tags": "rocket, kfp,,",
        "X-Click": "https://kfp",
        Actions: `view, Open, https://kfp, clear=true; http, "Re-run, now", https://ci, method=post, headers.X-Token=abc`,
      },
    });
    expect(res.status).toBe(200);
    const m = (await res.json()) as { actions: unknown[] };
    expect(m).toMatchObject({ topic: "kfp_runs", title: "kfp-sync", message: "Pipeline uploaded", priority: 4, tags: ["rocket", "kfp"], click: "https://kfp" });
    expect(m.actions).toMatchObject([
      { action: "view", label: "Open", url: "https://kfp", clear: true },
      { action: "http", label: "Re-run, now", url: "https://ci", method: "POST", headers: { "X-Token": "abc" }, clear: false },
    ]);
    expect(server.published.at(-1)).toMatchObject({ topic: "kfp_runs", title: "kfp-sync", priority: 4, raw: "Pipeline uploaded\n" });
  });

  test("short header names, query parameters and RFC 2047 titles", async () => {
    const res = await fetch(`${server.url}/t?title=${encodeURIComponent("from query")}&p=2`, { method: "PUT", body: "" });
    expect(await res.json()).toMatchObject({ title: "from query", priority: 2, message: "triggered" });
    const encoded = await fetch(`${server.url}/t`, { method: "POST", body: "x", headers: { Title: "=?UTF-8?B?w4RwZmVs?=", Tags: "=?UTF-8?Q?=C3=84pfel?=" } });
    expect(await encoded.json()).toMatchObject({ title: "Äpfel", tags: ["Äpfel"] });
  });

  test("GET /{topic}/publish works like a webhook", async () => {
    const res = await fetch(`${server.url}/hook/trigger?message=${encodeURIComponent("done")}`);
    expect(await res.json()).toMatchObject({ topic: "hook", message: "done" });
  });

  test("errors: bad priority 40007, bad actions 40018, bad path 404, non-UTF-8 body is an attachment", async () => {
    const prio = await fetch(`${server.url}/t`, { method: "POST", body: "x", headers: { "X-Priority": "6" } });
    expect([prio.status, await prio.text()]).toEqual([400, errorBody(NTFY_ERRORS.priorityInvalid)]);
    const act = await fetch(`${server.url}/t`, { method: "POST", body: "x", headers: { Actions: "view, Open" } });
    expect(await act.text()).toBe(errorBody(NTFY_ERRORS.actionsInvalid, "parameter 'url' is required for action 'view'"));
    const path = await fetch(`${server.url}/bad.topic`, { method: "POST", body: "x" });
    expect([path.status, await path.text()]).toEqual([404, errorBody(NTFY_ERRORS.notFound)]);
    const binary = await fetch(`${server.url}/t`, { method: "POST", body: new Uint8Array([0xff, 0xfe]) });
    expect([binary.status, await binary.text()]).toEqual([400, errorBody(NTFY_ERRORS.attachmentsDisallowed)]);
    const external = await fetch(`${server.url}/t`, { method: "POST", body: new Uint8Array([0xff]), headers: { Attach: "https://x/f.txt" } });
    expect([external.status, await external.text()]).toEqual([400, errorBody(NTFY_ERRORS.messageNotUTF8)]);
  });
});

describe("ntfy.sh-like server with attachments", () => {
  test("a long message becomes a text attachment that can be downloaded", async () => {
    await withServer(startNtfyServer({ attachments: true }), async (server) => {
      const long = "line\n".repeat(1000);
      const res = await publishJSON(server, { topic: "t", title: "Long", message: long });
      expect(res.status).toBe(200);
      const m = JSON.parse(res.text);
      expect(m.message).toBe("You received a file: attachment.txt");
      expect(m.attachment).toMatchObject({ name: "attachment.txt", type: "text/plain; charset=utf-8", size: long.length, url: `${server.url}/file/${m.id}.txt` });
      expect(m.attachment.expires).toBe(m.time + 3 * 3600);
      expect(await (await fetch(m.attachment.url)).text()).toBe(long);
    });
  });
});

describe("access control", () => {
  let server: NtfyServer;
  beforeAll(async () => (server = await startNtfyServer({ token: TOKEN, basic: { user: "kfp", password: "s3cret" } })));
  afterAll(() => server.stop());
  const basic = (user: string, password: string) => `Basic ${btoa(`${user}:${password}`)}`;

  test.each([
    ["no credentials → 403", {}, 403],
    ["an unsupported scheme → 403", { Authorization: "Token abc" }, 403],
    ["a wrong token → 401", { Authorization: "Bearer tk_wrong" }, 401],
    ["a lower-case bearer → 401 (ntfy parses it as Basic)", { Authorization: `bearer ${TOKEN}` }, 401],
    ["a wrong password → 401", { Authorization: basic("kfp", "nope") }, 401],
    ["the token → 200", { Authorization: `Bearer ${TOKEN}` }, 200],
    ["the user → 200", { Authorization: basic("kfp", "s3cret") }, 200],
    ["the token as a Basic password with no user → 200", { Authorization: basic("", TOKEN) }, 200],
  ] as const)("%s", async (_, headers, status) => {
    const res = await publishJSON(server, { topic: "secure" }, headers);
    expect(res.status).toBe(status);
    if (status === 401) expect(res.text).toBe(errorBody(NTFY_ERRORS.unauthorized));
    if (status === 403) expect(res.text).toBe(errorBody(NTFY_ERRORS.forbidden));
  });

  test("the token in ?auth= works as in ntfy", async () => {
    const auth = Buffer.from(`Bearer ${TOKEN}`).toString("base64url");
    const res = await fetch(`${server.url}/secure?auth=${auth}`, { method: "POST", body: "x" });
    expect(res.status).toBe(200);
  });

  test("bad credentials are refused before the body is read; a bad body before anonymity is", async () => {
    expect((await publishJSON(server, "{", { Authorization: "Bearer tk_wrong" })).status).toBe(401);
    expect((await publishJSON(server, "{")).text).toBe(errorBody(NTFY_ERRORS.jsonInvalid));
  });
});

describe("failNext", () => {
  let server: NtfyServer;
  beforeAll(async () => (server = await startNtfyServer()));
  afterAll(() => server.stop());

  test("429 is ntfy's 42901 body with no Retry-After, as often as asked, then success", async () => {
    server.failNext(429, 2);
    for (let i = 0; i < 2; i++) {
      const res = await publishJSON(server, { topic: "t" });
      expect(res.status).toBe(429);
      expect(res.headers.get("retry-after")).toBeNull();
      expect(res.text).toBe(errorBody(NTFY_ERRORS.tooManyRequests));
    }
    expect((await publishJSON(server, { topic: "t" })).status).toBe(200);
  });

  test("401 and 500 carry ntfy bodies; a gateway status gets a plain page", async () => {
    server.failNext(401);
    server.failNext(500);
    server.failNext(503);
    expect((await publishJSON(server, { topic: "t" })).text).toBe(errorBody(NTFY_ERRORS.unauthorized));
    expect((await publishJSON(server, { topic: "t" })).text).toBe(errorBody(NTFY_ERRORS.internalError));
    const gateway = await publishJSON(server, { topic: "t" });
    expect([gateway.status, gateway.headers.get("content-type"), gateway.text]).toEqual([503, "text/plain", "503 Service Unavailable\n"]);
  });

  test("failures are logged but not published; health checks do not use them up", async () => {
    const published = server.published.length;
    server.failNext(500);
    expect((await fetch(`${server.url}/v1/health`)).status).toBe(200);
    const res = await publishJSON(server, { topic: "t", message: "lost" });
    expect(res.status).toBe(500);
    expect(server.published.length).toBe(published);
    expect(server.requests.at(-1)).toMatchObject({ status: 500, body: JSON.stringify({ topic: "t", message: "lost" }) });
  });
});

describe("CLI", () => {
  test("prints the URL on stdout and each publish on stderr", async () => {
    const proc = Bun.spawn([process.execPath, `${import.meta.dir}/ntfy-server.ts`, "--port", "0", "--token", TOKEN], { stdout: "pipe", stderr: "pipe" });
    try {
      const reader = proc.stdout.getReader();
      let out = "";
      while (!out.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`ntfy-server exited before printing its URL: ${await new Response(proc.stderr).text()}`);
        out += new TextDecoder().decode(value);
      }
      const url = out.trim();
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const res = await fetch(`${url}/`, { method: "POST", body: JSON.stringify({ topic: "cli", title: "Hello", message: "from CLI" }), headers: { Authorization: `Bearer ${TOKEN}` } });
      expect(res.status).toBe(200);
    } finally {
      proc.kill("SIGTERM");
      await proc.exited;
    }
    const err = await new Response(proc.stderr).text();
    expect(err).toContain(`POST / -> 200 cli "Hello" "from CLI"`);
  });
});

describe("beyond the recorded contract", () => {
  const reader = { name: "reader", password: "r-pass", access: { "ci-*": "read-only" as const } };
  const writer = { name: "writer", password: "w-pass", access: { "ci-*": "read-write" as const } };
  const basic = (user: string, password: string) => `Basic ${btoa(`${user}:${password}`)}`;

  test("HTML-sensitive characters and U+2028 are escaped as Go's json.Encoder writes them", async () => {
    await withServer(startNtfyServer(), async (server) => {
      const res = await publishJSON(server, { topic: "t", message: "a<b>&c\u2028d" });
      expect(res.text).toContain(String.raw`"message":"a\u003cb\u003e\u0026c\u2028d"`);
      expect(JSON.parse(res.text).message).toBe("a<b>&c\u2028d");
    });
  });

  test("a wildcard grant covers matching topics only; the poll honours since and cache=no", async () => {
    await withServer(startNtfyServer({ users: [reader, writer] }), async (server) => {
      const post = (topic: string, message: string, extra: Record<string, string> = {}) =>
        fetch(`${server.url}/${topic}`, { method: "POST", body: message, headers: { Authorization: basic("writer", "w-pass"), ...extra } });
      expect((await post("other", "x")).status).toBe(403);
      const first = (await (await post("ci-a", "first")).json()) as { id: string; time: number };
      await post("ci-a", "not cached", { Cache: "no" });
      await post("ci-a", "second");
      const poll = async (query: string) => {
        const res = await fetch(`${server.url}/ci-a/json?poll=1${query}`, { headers: { Authorization: basic("reader", "r-pass") } });
        return { status: res.status, messages: (await res.text()).split("\n").filter(Boolean).map((l) => JSON.parse(l).message ?? JSON.parse(l).code) };
      };
      expect(await poll("")).toEqual({ status: 200, messages: ["first", "second"] });
      expect(await poll(`&since=${first.id}`)).toEqual({ status: 200, messages: ["second"] });
      expect(await poll(`&since=${first.time}`)).toEqual({ status: 200, messages: ["first", "second"] });
      expect(await poll("&since=10m")).toEqual({ status: 200, messages: ["first", "second"] });
      expect(await poll("&since=none")).toEqual({ status: 200, messages: [] });
      expect(await poll("&since=yesterday")).toEqual({ status: 400, messages: [40008] });
      const denied = await fetch(`${server.url}/ci-a/json?poll=1`, { headers: { Authorization: basic("writer", "nope") } });
      expect(denied.status).toBe(401);
    });
  });

  test("ntfy's default limits: 60 requests then 429/42901, one more every 5 s; 30 failed logins then 429/42909", async () => {
    let clock = Date.now();
    await withServer(startNtfyServer({ users: [writer], now: () => clock }), async (server) => {
      const post = (auth = basic("writer", "w-pass")) => publishJSON(server, { topic: "ci-x" }, { Authorization: auth });
      for (let i = 0; i < 60; i++) expect((await post()).status).toBe(200);
      const limited = await post();
      expect([limited.status, limited.text]).toEqual([429, errorBody(NTFY_ERRORS.tooManyRequests)]);
      clock += 5000;
      expect((await post()).status).toBe(200);
      expect((await post()).status).toBe(429);
      for (let i = 0; i < 30; i++) expect((await post(basic("writer", "wrong"))).status).toBe(401);
      const blocked = await post();
      expect([blocked.status, blocked.text]).toEqual([429, errorBody(NTFY_ERRORS.tooManyAuthFailures)]);
      clock += 60_000;
      expect((await post(basic("writer", "wrong"))).status).toBe(401);
    });
  });
});
