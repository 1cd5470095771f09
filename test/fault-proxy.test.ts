import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { createServer } from "node:net";
import { startFaultProxy, type FaultProxy } from "./fault-proxy.ts";
import { withServer } from "./with-server.ts";

/** What the target saw of each request. */
interface Seen {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: Uint8Array;
}

const BIG = new Uint8Array(4000).map((_, i) => i % 251);

let target: ReturnType<typeof Bun.serve>;
let proxy: FaultProxy;
const seen: Seen[] = [];

beforeAll(async () => {
  target = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(req) {
      const url = new URL(req.url);
      seen.push({ method: req.method, url: url.pathname + url.search, headers: Object.fromEntries(req.headers), body: new Uint8Array(await req.arrayBuffer()) });
      if (url.pathname === "/big") return new Response(BIG, { headers: { "Content-Type": "application/octet-stream" } });
      if (url.pathname === "/created") {
        const headers = new Headers({ "Content-Type": "application/json", "X-Run-Id": "r-1" });
        headers.append("Set-Cookie", "a=1");
        headers.append("Set-Cookie", "b=2");
        return new Response(JSON.stringify({ id: "p-1" }), { status: 201, headers });
      }
      if (url.pathname === "/stream") {
        const parts = ["one,", "two,", "three"];
        return new Response(new ReadableStream({ pull: (c) => (parts.length ? c.enqueue(new TextEncoder().encode(parts.shift())) : c.close()) }));
      }
      if (url.pathname === "/gzip") return new Response(Bun.gzipSync(new TextEncoder().encode("squeezed")), { headers: { "Content-Encoding": "gzip" } });
      return Response.json({ ok: true, path: url.pathname });
    },
  });
  proxy = await startFaultProxy(`http://127.0.0.1:${target.port}`);
});

afterAll(async () => {
  await proxy.stop();
  await target.stop(true);
});

afterEach(() => {
  proxy.clear();
  seen.length = 0;
  proxy.injected.length = 0;
});

const seconds = async (f: () => Promise<unknown>) => {
  const start = performance.now();
  await f();
  return (performance.now() - start) / 1000;
};

describe("forwarding", () => {
  test("method, path, query, headers and body reach the target verbatim", async () => {
    const res = await fetch(`${proxy.url}/apis/v2beta1/pipelines?filter=%7B%22a%22%3A1%7D&x=1`, {
      method: "PATCH",
      headers: { Authorization: "Bearer t", "X-Custom": "v", "Content-Type": "application/json" },
      body: '{"display_name":"p"}',
    });
    expect(res.status).toBe(200);
    const [s] = seen;
    expect(s!.method).toBe("PATCH");
    expect(s!.url).toBe("/apis/v2beta1/pipelines?filter=%7B%22a%22%3A1%7D&x=1");
    expect(s!.headers).toMatchObject({ authorization: "Bearer t", "x-custom": "v", "content-type": "application/json" });
    expect(s!.headers.host).toBe(new URL(proxy.url).host); // Host is passed on as the client sent it
    expect(new TextDecoder().decode(s!.body)).toBe('{"display_name":"p"}');
  });

  test("a multipart upload arrives byte for byte", async () => {
    const form = new FormData();
    form.append("uploadfile", new File([BIG, "\r\n--not-a-boundary\r\n"], "pipeline.yaml", { type: "application/x-yaml" }));
    form.append("name", "train");
    const sent = new Request("http://x/", { method: "POST", body: form });
    const contentType = sent.headers.get("content-type")!;
    const bytes = new Uint8Array(await sent.arrayBuffer());
    const res = await fetch(`${proxy.url}/apis/v2beta1/pipelines/upload?name=train`, { method: "POST", body: bytes, headers: { "Content-Type": contentType } });
    expect(res.status).toBe(200);
    expect(seen[0]!.headers["content-type"]).toBe(contentType);
    expect(seen[0]!.body).toEqual(bytes);
    const received = await new Request("http://x/", { method: "POST", body: seen[0]!.body, headers: { "Content-Type": contentType } }).formData();
    expect(new Uint8Array(await (received.get("uploadfile") as File).arrayBuffer()).subarray(0, BIG.length)).toEqual(BIG);
  });

  test("status, headers (repeated ones too) and body come back verbatim", async () => {
    const res = await fetch(`${proxy.url}/created`, { method: "POST" });
    expect(res.status).toBe(201);
    expect(res.headers.get("x-run-id")).toBe("r-1");
    expect(res.headers.getSetCookie()).toEqual(["a=1", "b=2"]);
    expect(await res.json()).toEqual({ id: "p-1" });
    expect(new Uint8Array(await (await fetch(`${proxy.url}/big`)).arrayBuffer())).toEqual(BIG);
    const streamed = await fetch(`${proxy.url}/stream`);
    expect(await streamed.text()).toBe("one,two,three");
  });

  test("encoded bodies are passed on, not decoded", async () => {
    const res = await fetch(`${proxy.url}/gzip`);
    expect(res.headers.get("content-encoding")).toBe("gzip");
    expect(await res.text()).toBe("squeezed"); // fetch decodes it, so the proxy must not have
  });

  test("a target that is down is answered 502", async () => {
    const port = await closedPort();
    await withServer(startFaultProxy(`http://127.0.0.1:${port}`), async (dead) => {
      const res = await fetch(`${dead.url}/x`);
      expect(res.status).toBe(502);
    });
  });
});

describe("faults", () => {
  test("reset: the connection dies with no response and the target never hears of it", async () => {
    await withServer(startFaultProxy(`http://127.0.0.1:${target.port}`), async (fresh) => { // no pooled connection to it yet
      fresh.add({ fault: { kind: "reset" } });
      const err = await fetch(`${fresh.url}/apis/v2beta1/healthz`).catch((e: Error & { code?: string }) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as { code?: string }).code).toBe("ECONNRESET");
      expect(seen).toHaveLength(0);
      expect(fresh.injected).toEqual([{ rule: { fault: { kind: "reset" } }, method: "GET", path: "/apis/v2beta1/healthz" }]);
    });
  });

  test("Bun's fetch resends a GET once when a reused connection is reset; a POST it does not", async () => {
    // Bun 1.4 treats a reset on a pooled keep-alive connection as a stale connection and resends
    // idempotent requests on a new one, so a single reset there is invisible to the caller, and a
    // dropped PUT reaches the target twice. Reliability tests need times >= 2, or POST.
    await (await fetch(`${proxy.url}/warm`)).text();
    seen.length = 0;
    proxy.add({ times: 1, fault: { kind: "reset" } });
    expect((await fetch(`${proxy.url}/get`)).status).toBe(200);
    expect([proxy.injected.length, seen.length]).toEqual([1, 1]);

    proxy.add({ times: 1, fault: { kind: "reset" } });
    const err = await fetch(`${proxy.url}/post`, { method: "POST", body: "x" }).catch((e: Error & { code?: string }) => e.code);
    expect(err).toBe("ECONNRESET");
    expect([proxy.injected.length, seen.length]).toEqual([2, 1]);
  });

  test("status: answers in place of the target, with the given body", async () => {
    proxy.add({ times: 1, fault: { kind: "status", status: 503, body: '{"error":"upstream connect error","code":14}' } });
    proxy.add({ fault: { kind: "status", status: 502 } });
    const first = await fetch(`${proxy.url}/a`, { method: "POST", body: BIG });
    expect(first.status).toBe(503);
    expect(first.headers.get("content-type")).toBe("application/json");
    expect(await first.json()).toEqual({ error: "upstream connect error", code: 14 });
    const second = await fetch(`${proxy.url}/b`);
    expect([second.status, second.headers.get("content-type"), await second.text()]).toEqual([502, "text/plain", "502 Bad Gateway\n"]);
    expect(seen).toHaveLength(0);
  });

  test("times: a rule is used up, then requests pass; rules apply in order added", async () => {
    proxy.add({ times: 2, fault: { kind: "status", status: 503 } });
    proxy.add({ times: 1, fault: { kind: "status", status: 504 } });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await fetch(`${proxy.url}/x`)).status);
    expect(statuses).toEqual([503, 503, 504, 200]);
    expect(proxy.injected.map((i) => (i.rule.fault as { status: number }).status)).toEqual([503, 503, 504]);
    expect(seen).toHaveLength(1);
  });

  test("method and path narrow a rule; others pass through", async () => {
    proxy.add({ method: "post", path: /\/upload\b/, fault: { kind: "status", status: 500 } });
    expect((await fetch(`${proxy.url}/pipelines/upload`)).status).toBe(200); // GET: not matched
    expect((await fetch(`${proxy.url}/pipelines/list`, { method: "POST" })).status).toBe(200); // other path
    expect((await fetch(`${proxy.url}/pipelines/upload?x=1`, { method: "POST" })).status).toBe(500);
    expect((await fetch(`${proxy.url}/pipelines/upload`, { method: "POST" })).status).toBe(500); // no times: stays
    expect(proxy.injected.map((i) => i.path)).toEqual(["/pipelines/upload?x=1", "/pipelines/upload"]);
  });

  test("clear() removes every rule", async () => {
    proxy.add({ fault: { kind: "reset" } });
    proxy.clear();
    expect((await fetch(`${proxy.url}/x`)).status).toBe(200);
  });

  test("stall: the answer comes after the delay; a client that gives up first is never forwarded", async () => {
    proxy.add({ times: 1, fault: { kind: "stall", ms: 300 } });
    const elapsed = await seconds(async () => expect((await fetch(`${proxy.url}/slow`)).status).toBe(200));
    expect(elapsed).toBeGreaterThanOrEqual(0.29);
    expect(seen).toHaveLength(1);

    proxy.add({ times: 1, fault: { kind: "stall", ms: 400 } });
    const err = await fetch(`${proxy.url}/slow`, { signal: AbortSignal.timeout(100) }).catch((e: Error) => e);
    expect((err as Error).name).toBe("TimeoutError");
    await Bun.sleep(450);
    expect(seen).toHaveLength(1);
  });

  test("slow-body: headers at once, the body at the given rate, intact", async () => {
    proxy.add({ fault: { kind: "slow-body", bytesPerSecond: 8000 } });
    const start = performance.now();
    const res = await fetch(`${proxy.url}/big`);
    const headersAfter = (performance.now() - start) / 1000;
    const body = new Uint8Array(await res.arrayBuffer());
    const total = (performance.now() - start) / 1000;
    expect(res.status).toBe(200);
    expect(total).toBeGreaterThanOrEqual(0.4); // 4000 bytes at 8000 B/s, the first slice sent at once
    expect(total - headersAfter).toBeGreaterThanOrEqual(0.4); // the wait was in the body, not before the headers
    expect(body).toEqual(BIG);
  });

  test("truncate: the status and headers arrive, the body breaks off", async () => {
    proxy.add({ fault: { kind: "truncate", bytes: 1000 } });
    const res = await fetch(`${proxy.url}/big`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-length")).toBe(String(BIG.length));
    const err = await res.arrayBuffer().catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect(seen).toHaveLength(1);
  });

  test("drop-response: the target handles the write, the client only sees a reset", async () => {
    proxy.add({ method: "POST", fault: { kind: "drop-response" } });
    const err = await fetch(`${proxy.url}/apis/v2beta1/pipelines`, { method: "POST", body: '{"display_name":"p"}' }).catch((e: Error & { code?: string }) => e);
    expect((err as { code?: string }).code).toBe("ECONNRESET");
    expect(seen).toHaveLength(1);
    expect(new TextDecoder().decode(seen[0]!.body)).toBe('{"display_name":"p"}');
  });
});

test("stop() ends the proxy and its open connections", async () => {
  const p = await startFaultProxy(`http://127.0.0.1:${target.port}`);
  p.add({ fault: { kind: "stall", ms: 10_000 } });
  const pending = fetch(`${p.url}/x`).catch((e: Error) => e);
  await Bun.sleep(50);
  await p.stop();
  expect(await pending).toBeInstanceOf(Error);
  expect(await fetch(`${p.url}/x`).catch((e: Error & { code?: string }) => e.code)).toBe("ECONNREFUSED");
});

/** A port nothing listens on: bind one, then close it. */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as { port: number };
  await new Promise((r) => srv.close(r));
  return port;
}
