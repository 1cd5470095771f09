/**
 * A fault-injecting HTTP proxy on loopback, for the reliability suite.
 *
 * It forwards every request to the target verbatim (method, path and query, raw headers including
 * Host, body bytes — multipart uploads included) and relays the answer verbatim, unless a rule
 * matches; then it injects that rule's fault instead. Rules are tried in the order added; a rule
 * with `times` is used up after that many hits, one without stays until clear().
 *
 * Faults:
 *   reset          TCP RST at once; no response, the target never sees the request
 *   status         answer with this status and body; the target never sees the request
 *   stall          wait `ms`, then forward (a client that gives up first is never forwarded)
 *   late           take the whole request, wait `ms`, then forward it even if the client gave up:
 *                  a write that lands after the client's timeout
 *   slow-body      forward; send the headers at once, then the body at `bytesPerSecond`
 *   truncate       forward; announce the full Content-Length, send `bytes` of the body, close
 *   drop-response  forward and let the target answer, then RST the client: a write whose answer is lost
 * A target that is down is answered 502, like any reverse proxy.
 */
import http from "node:http";
import type { Socket } from "node:net";

export type Fault =
  | { kind: "reset" }
  | { kind: "status"; status: number; body?: string }
  | { kind: "stall"; ms: number }
  | { kind: "late"; ms: number }
  | { kind: "slow-body"; bytesPerSecond: number }
  | { kind: "truncate"; bytes: number }
  | { kind: "drop-response" /* forward the request to the target, then reset the client connection: a write whose answer is lost */ };

export interface FaultRule {
  /** Matches case-insensitively; any method when absent. */
  method?: string;
  /** Tested against the path with its query string; any path when absent. */
  path?: RegExp;
  /** How many matching requests this rule hits; every one until clear() when absent. */
  times?: number;
  fault: Fault;
}

export interface FaultProxy {
  url: string;
  add(rule: FaultRule): void;
  clear(): void;
  /** Each fault injected, in order. */
  injected: { rule: FaultRule; method: string; path: string }[];
  stop(): Promise<void>;
}

export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const base = new URL(target);
  const basePath = base.pathname.replace(/\/$/, "");
  const rules: { rule: FaultRule; left: number }[] = [];
  const injected: FaultProxy["injected"] = [];
  const sockets = new Set<Socket>();
  const closing = new AbortController();

  function take(method: string, path: string): FaultRule | undefined {
    const i = rules.findIndex(({ rule }) => {
      if (rule.method && rule.method.toUpperCase() !== method) return false;
      if (rule.path) {
        rule.path.lastIndex = 0; // a /g or /y regexp would otherwise remember the last match
        if (!rule.path.test(path)) return false;
      }
      return true;
    });
    const entry = rules[i];
    if (!entry) return undefined;
    if (--entry.left <= 0) rules.splice(i, 1);
    return entry.rule;
  }

  /** Sends the request on with its raw headers and streams its body; resolves with the answer's head. */
  function forward(req: http.IncomingMessage): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const headers = req.rawHeaders as unknown as http.OutgoingHttpHeaders; // node:http takes the flat [name, value, ...] list as is
      const out = http.request({ host: base.hostname, port: base.port || 80, method: req.method, path: basePath + req.url, headers }, resolve);
      out.on("error", reject);
      req.on("error", (e) => out.destroy(e));
      req.pipe(out);
    });
  }

  async function readAll(res: http.IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  /** The target's headers, but declaring the length of the whole (buffered) body. */
  function withLength(rawHeaders: string[], length: number): string[] {
    const headers: string[] = [];
    for (let i = 0; i < rawHeaders.length; i += 2) {
      if (/^(content-length|transfer-encoding)$/i.test(rawHeaders[i]!)) continue;
      headers.push(rawHeaders[i]!, rawHeaders[i + 1]!);
    }
    return [...headers, "Content-Length", String(length)];
  }

  function reset(socket: Socket) {
    socket.resetAndDestroy();
  }

  const sleep = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)), { once: true });
    });

  async function serve(req: http.IncomingMessage, res: http.ServerResponse) {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const rule = take(method, path);
    if (rule) injected.push({ rule, method, path });
    const fault = rule?.fault;

    if (fault?.kind === "reset") return reset(req.socket);
    if (fault?.kind === "status") {
      req.resume(); // let the client finish sending before it reads the answer
      await new Promise((r) => req.on("end", r));
      const body = fault.body ?? `${fault.status} ${http.STATUS_CODES[fault.status] ?? "Error"}\n`;
      const json = /^\s*[[{]/.test(body);
      res.writeHead(fault.status, { "Content-Type": json ? "application/json" : "text/plain", "Content-Length": Buffer.byteLength(body) });
      return res.end(body);
    }
    if (fault?.kind === "late") {
      const body = await readAll(req);
      await sleep(fault.ms, closing.signal);
      const up = await new Promise<http.IncomingMessage>((resolve, reject) => {
        const headers = req.rawHeaders as unknown as http.OutgoingHttpHeaders;
        const out = http.request({ host: base.hostname, port: base.port || 80, method: req.method, path: basePath + req.url, headers }, resolve);
        out.on("error", reject);
        out.end(body);
      });
      const answer = await readAll(up);
      if (res.destroyed) return;
      res.writeHead(up.statusCode!, up.statusMessage, withLength(up.rawHeaders, answer.length));
      return res.end(answer);
    }
    if (fault?.kind === "stall") {
      const gone = new AbortController();
      res.on("close", () => gone.abort());
      await sleep(fault.ms, AbortSignal.any([gone.signal, closing.signal]));
    }

    let up: http.IncomingMessage;
    try {
      up = await forward(req);
    } catch (e) {
      if (res.headersSent || res.destroyed) return;
      res.writeHead(502, { "Content-Type": "text/plain" });
      return res.end(`502 Bad Gateway: ${(e as Error).message}\n`);
    }

    if (!fault || fault.kind === "stall") {
      res.writeHead(up.statusCode!, up.statusMessage, up.rawHeaders);
      up.pipe(res);
      return;
    }
    const body = await readAll(up);
    if (fault.kind === "drop-response") return reset(req.socket);
    res.writeHead(up.statusCode!, up.statusMessage, withLength(up.rawHeaders, body.length));
    if (fault.kind === "truncate") {
      res.write(body.subarray(0, fault.bytes), () => req.socket.destroy());
      return;
    }
    const tick = 50;
    const step = Math.max(1, Math.floor((fault.bytesPerSecond * tick) / 1000));
    for (let at = 0; at < body.length; at += step) {
      if (res.destroyed) return;
      res.write(body.subarray(at, at + step));
      if (at + step < body.length) await sleep(tick, closing.signal);
    }
    res.end();
  }

  const server = http.createServer((req, res) => {
    serve(req, res).catch(() => {
      if (!res.destroyed) res.destroy();
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };

  return {
    url: `http://127.0.0.1:${port}`,
    injected,
    add(rule) {
      rules.push({ rule, left: rule.times ?? Infinity });
    },
    clear() {
      rules.length = 0;
    },
    async stop() {
      closing.abort();
      const closed = new Promise((resolve) => server.close(resolve));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
