/**
 * The KFP API server a test talks to: the imitation (test/kfp-server.ts), fresh per call, or, when
 * KFP_TEST_HOST is set, that server (e.g. a port-forward to a cluster's ml-pipeline service), with
 * KFP_TEST_TOKEN and KFP_TEST_NAMESPACE. Tests that need the imitation's insides (failNext, options such as
 * a fake token or version) check `remote` and skip with a printed reason.
 */
import { createServer } from "node:http";
import { startKfpServer, type KfpServer, type KfpServerOptions, type Pipeline, type PipelineVersion, type RecordedRequest } from "./kfp-server";

export const REMOTE_HOST = process.env.KFP_TEST_HOST?.replace(/\/+$/, "") || undefined;
const REMOTE_TOKEN = process.env.KFP_TEST_TOKEN || undefined;
const REMOTE_NAMESPACE = process.env.KFP_TEST_NAMESPACE || undefined;

export interface KfpTarget {
  url: string;
  token?: string;
  namespace?: string;
  /** True when the tests run against KFP_TEST_HOST: not fresh, not ours to inspect or reset. */
  remote: boolean;
  /** The imitation, when not remote. */
  server?: KfpServer;
  stop(): Promise<void>;
}

/** The server as it is: the replay sends its own requests and sees every answer unchanged. */
export async function kfpTarget(opts: KfpServerOptions = {}): Promise<KfpTarget> {
  if (REMOTE_HOST) return { url: REMOTE_HOST, token: REMOTE_TOKEN, namespace: REMOTE_NAMESPACE, remote: true, stop: async () => {} };
  const server = await startKfpServer(opts);
  return { url: server.url, token: opts.token, remote: false, server, stop: () => server.stop() };
}

/** Says, on stderr, why a test does not run against KFP_TEST_HOST. */
export function skipReason(what: string, why: string): void {
  process.stderr.write(`skipped against KFP_TEST_HOST: ${what}: ${why}\n`);
}

/** True (after saying why) when a test needs the imitation and the suite runs against KFP_TEST_HOST: for test.skipIf. */
export function imitationOnly(what: string, why: string): boolean {
  if (!REMOTE_HOST) return false;
  skipReason(what, why);
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// For kfp-sync runs: the imitation, or KFP_TEST_HOST behind a renaming, recording proxy

export interface SyncTarget {
  url: string;
  remote: boolean;
  multiUser: boolean;
  /** Environment kfp-sync needs for this server (KFP_TOKEN, KFP_NAMESPACE from KFP_TEST_*). */
  env: Record<string, string>;
  /** Every request kfp-sync sent, as it sent it. */
  requests: RecordedRequest[];
  /** The pipelines and versions this test created (only those, on a shared server). */
  state(): Promise<{ pipelines: Pipeline[]; versions: PipelineVersion[] }>;
  /** A fresh start: on a shared server, a new name prefix, so earlier pipelines are out of sight. */
  reset(): void;
  stop(): Promise<void>;
  server?: KfpServer;
}

/**
 * Against KFP_TEST_HOST, kfp-sync talks to a loopback proxy that gives every pipeline name a prefix unique
 * to this run and scope (on the way in: upload names, lookups by name; on the way out: stripped from every
 * answer), so a cluster that already holds these pipelines, from users or earlier runs, looks empty to the
 * test, and nothing of theirs is read, changed or deleted. Everything else passes through byte for byte.
 */
export async function syncTarget(): Promise<SyncTarget> {
  if (!REMOTE_HOST) {
    const server = await startKfpServer();
    return {
      url: server.url, remote: false, multiUser: false, env: {}, requests: server.requests, server,
      state: async () => server.state(), reset: () => server.reset(), stop: () => server.stop(),
    };
  }
  const health = (await fetch(`${REMOTE_HOST}/apis/v2beta1/healthz`).then((r) => r.json())) as { multi_user?: boolean };
  const env: Record<string, string> = {};
  if (REMOTE_TOKEN) env.KFP_TOKEN = REMOTE_TOKEN;
  if (REMOTE_NAMESPACE) env.KFP_NAMESPACE = REMOTE_NAMESPACE;
  const requests: RecordedRequest[] = [];
  const newPrefix = () => `kfpsynctest-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}-`;
  let prefix = newPrefix();

  const server = createServer((incoming, outgoing) => {
    const chunks: Buffer[] = [];
    incoming.on("data", (c: Buffer) => chunks.push(c));
    incoming.on("end", async () => {
      const rawUrl = incoming.url ?? "/";
      const method = incoming.method ?? "GET";
      const body = Buffer.concat(chunks);
      const headers = new Headers();
      for (let i = 0; i < incoming.rawHeaders.length; i += 2) {
        const name = incoming.rawHeaders[i]!.toLowerCase();
        if (!["host", "connection", "content-length"].includes(name)) headers.append(name, incoming.rawHeaders[i + 1]!);
      }
      const [pathname, rawQuery = ""] = rawUrl.split("?", 2) as [string, string?];
      const record: RecordedRequest = { method, path: pathname, query: Object.fromEntries(new URLSearchParams(rawQuery)), headers: Object.fromEntries(headers.entries()), status: 0 };
      requests.push(record);
      if (/\/pipelines\/upload(_version)?$/.test(pathname)) {
        const form = await new Request("http://x/", { method, headers, body }).formData().catch(() => undefined);
        const file = form?.get("uploadfile");
        if (file instanceof File) Object.assign(record, { filename: file.name, body: await file.text() });
      }
      // Prefix pipeline names; the query is otherwise left exactly as kfp-sync wrote it.
      const renamed = pathname.endsWith("/pipelines/upload")
        ? rawQuery.split("&").map((pair) => (/^(name|display_name)=./.test(pair) ? pair.replace("=", `=${prefix}`) : pair)).join("&")
        : rawQuery;
      const path = pathname.replace(/\/pipelines\/names\//, `/pipelines/names/${encodeURIComponent(prefix)}`);
      try {
        const res = await fetch(`${REMOTE_HOST}${path}${renamed ? `?${renamed}` : ""}`, { method, headers, body: method === "GET" || method === "HEAD" ? undefined : body, redirect: "manual" });
        const text = (await res.text()).split(prefix).join("");
        record.status = res.status;
        const out: Record<string, string> = {};
        res.headers.forEach((v, k) => {
          if (!["content-length", "content-encoding", "transfer-encoding", "connection"].includes(k)) out[k] = v;
        });
        outgoing.writeHead(res.status, out);
        outgoing.end(text);
      } catch (e) {
        record.status = 502;
        outgoing.writeHead(502, { "content-type": "text/plain" });
        outgoing.end(`proxy to KFP_TEST_HOST failed: ${(e as Error).message}`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

  const api = async (path: string) => {
    const auth: Record<string, string> = REMOTE_TOKEN ? { authorization: `Bearer ${REMOTE_TOKEN}` } : {};
    const res = await fetch(`${REMOTE_HOST}/apis/v2beta1${path}`, { headers: auth });
    if (!res.ok) throw new Error(`GET ${path} at KFP_TEST_HOST: HTTP ${res.status} ${await res.text()}`);
    return JSON.parse((await res.text()).split(prefix).join("")) as Record<string, any>;
  };
  const all = async <T>(path: string, key: string): Promise<T[]> => {
    const items: T[] = [];
    let token = "";
    do {
      const page = await api(`${path}${path.includes("?") ? "&" : "?"}page_size=200${token ? `&page_token=${encodeURIComponent(token)}` : ""}`);
      items.push(...((page[key] ?? []) as T[]));
      token = page.next_page_token ?? "";
    } while (token);
    return items;
  };

  return {
    url, remote: true, multiUser: health.multi_user === true, env, requests,
    async state() {
      const filter = encodeURIComponent(JSON.stringify({ predicates: [{ key: "name", operation: "IS_SUBSTRING", string_value: prefix }] }));
      const namespace = REMOTE_NAMESPACE ? `&namespace=${encodeURIComponent(REMOTE_NAMESPACE)}` : "";
      // The filter matches the prefixed names; the answer comes back with the prefix stripped.
      const pipelines = await all<Pipeline>(`/pipelines?filter=${filter}${namespace}`, "pipelines");
      const versions: PipelineVersion[] = [];
      for (const p of pipelines) versions.push(...(await all<PipelineVersion>(`/pipelines/${p.pipeline_id}/versions`, "pipeline_versions")));
      return { pipelines, versions };
    },
    reset() {
      prefix = newPrefix();
      requests.length = 0;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
