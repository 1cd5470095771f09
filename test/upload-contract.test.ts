/**
 * Stage 3, upload, held to what the real KFP 2.17.0 API server does (the recorded contract,
 * test/contracts/kfp-apiserver-2.17.0/): query escaping, limits, answers that are not the API's,
 * multi-user sharing and identity, same-second versions, version skew, specs uploaded by others.
 * The binary runs against test/kfp-server.ts; where a case needs a gateway in front of KFP (a login
 * page, a redirect, a proxy's `{}`), a small loopback stand-in forwards everything else to it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import YAML from "yaml";
import { fingerprintOf, serverFingerprint } from "../kfp-sync.ts";
import { EXAMPLES, run, scratch, withServer } from "./helpers";
import { startKfpServer, type KfpServer } from "./kfp-server";

// The specs are read where the contract keeps them, so the test cannot drift from a copy of them.
const CONTRACT = path.join(import.meta.dir, "contracts/kfp-apiserver-2.17.0/specs");
const CASES = path.join(import.meta.dir, "contracts/kfp-apiserver-2.17.0/cases.json");
const writes = (server: KfpServer) => server.requests.filter((r) => r.method !== "GET");
const sync = (dir: string, host: string, args: string[] = [], env: Record<string, string> = {}) =>
  run(["--host", host, "--out-dir", path.join(dir, ".out"), "--retries", "0", ...args], { cwd: dir, env });

/** A stand-in for the gateway in front of KFP: `answer` may reply itself; anything else goes on to `upstream`. */
async function gatewayTo(upstream: KfpServer, answer: (req: Request, url: URL) => Response | undefined | Promise<Response | undefined>) {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const url = new URL(req.url);
      const own = await answer(req, url);
      if (own) return own;
      const body = req.method === "GET" ? undefined : await req.arrayBuffer();
      const res = await fetch(`${upstream.url}${url.pathname}${url.search}`, { method: req.method, headers: req.headers, body, redirect: "manual" });
      return new Response(await res.arrayBuffer(), { status: res.status, headers: res.headers });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, stop: () => server.stop(true) };
}

const html = (body: string, status = 200) => new Response(body, { status, headers: { "content-type": "text/html; charset=utf-8" } });
const jsonAnswer = (body: unknown, status = 200, type = "application/json") => new Response(JSON.stringify(body), { status, headers: { "content-type": type } });
const DEX_LOGIN = `<!DOCTYPE html><html><head><title>dex</title></head><body><h2>Log in to Your Account</h2><form method="post" action="/dex/auth/local/login"></form></body></html>`;
const KFP_UI = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Kubeflow Pipelines</title></head><body><div id="root"></div><script src="/static/js/main.js"></script></body></html>`;

/** A pipeline whose description holds everything a query can mangle. */
const ESCAPES = `Fetch; chunk & embed + index # 100% a=b%3B "double" 'single' back\\\\slash\\nnext line\\ttab café 日本 🚀 end`;
const escapesPipeline = (n: number) => `from kfp import dsl

@dsl.component(base_image="python:3.11-slim")
def echo(n: int) -> int:
    return n

@dsl.pipeline(name="escapes", description="""${ESCAPES}""")
def escapes(n: int = ${n}):
    echo(n=n)
`;

describe("query values reach the server byte for byte", () => {
  let server: KfpServer;
  beforeAll(async () => {
    server = await startKfpServer();
  });
  afterAll(() => server.stop());

  test("; & + # % = quotes, backslashes, newlines, tabs, non-ASCII and emoji, on upload and upload_version", async () => {
    server.reset();
    const file = "odd;name&x+y#z%25=w_pipeline.py";
    const dir = scratch({ [file]: escapesPipeline(1) });
    const runUrl = "https://ci.example/o/r/actions/runs/7?attempt=1&x=a;b#frag";
    const first = await sync(dir, server.url, ["--version-tag", "v20260101-000000"], { KFP_SYNC_RUN_URL: runUrl });
    expect(first.code, first.stderr).toBe(0);
    expect(first.json().pipelines[0]!.state).toBe("created");
    const compiled = YAML.parse(fs.readFileSync(path.join(dir, ".out", file.replace(/\.py$/, ".yaml")), "utf8"));
    const described = compiled.pipelineInfo.description as string;
    expect(described).toContain("Fetch; chunk & embed + index # 100% a=b%3B");
    const stored = server.state().pipelines[0]!;
    expect(stored.description!.startsWith(`${described}\n\n`)).toBe(true);
    expect(stored.description).toContain(`from ${file} · `);
    expect(stored.description).toContain(`run ${runUrl} · `);

    // A change: the version's description carries the file and run link, byte for byte too.
    fs.writeFileSync(path.join(dir, file), escapesPipeline(2));
    const second = await sync(dir, server.url, ["--version-tag", "v20260101-000001"], { KFP_SYNC_RUN_URL: runUrl });
    expect(second.code, second.stderr).toBe(0);
    expect(second.json().pipelines[0]!.state).toBe("versioned");
    const version = server.state().versions.find((v) => v.name === "v20260101-000001")!;
    expect(version.description).toContain(`from ${file} · `);
    expect(version.description).toContain(`run ${runUrl} · `);
    for (const r of writes(server)) expect(r.status, `${r.path} ${JSON.stringify(r.query)}`).toBe(200);

    const third = await sync(dir, server.url, [], { KFP_SYNC_RUN_URL: runUrl });
    expect(third.json().pipelines[0]!.state).toBe("unchanged");
    expect(writes(server).length).toBe(2);
  });

  test("document_ingestion (a description with ';') is created, then unchanged", async () => {
    server.reset();
    const dir = scratch({ "document_ingestion_pipeline.py": { from: path.join(EXAMPLES, "document_ingestion_pipeline.py") } });
    const first = await sync(dir, server.url);
    expect(first.code, first.stderr).toBe(0);
    expect(first.json().pipelines[0]!.state).toBe("created");
    expect(server.state().pipelines[0]!.description).toContain("for RAG; log the run");
    const second = await sync(dir, server.url);
    expect(second.json().pipelines[0]!.state).toBe("unchanged");
    expect(writes(server).length).toBe(1);
  });

  test("limits as the server counts them: a long description is cut with a note, a long tag value cut, a namespace counted in bytes", async () => {
    server.reset();
    const long = "x".repeat(150_000); // no API limit, but far more than a request line should carry
    const src = escapesPipeline(1).replace(`description="""${ESCAPES}"""`, `description="${long}"`);
    const dir = scratch({ "long_pipeline.py": src });
    const sha256Commit = "ab".repeat(32); // a SHA-256 repository's commit: 64 characters, the limit is 63
    const r = await sync(dir, server.url, [], { GITHUB_SHA: sha256Commit });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain("description cut to");
    expect(r.stderr).toContain(`tag value "${sha256Commit}" cut to 63 bytes`);
    const stored = server.state().pipelines[0]!;
    expect(encodeURIComponent(stored.description!).length).toBeLessThanOrEqual(6 * 1024);
    expect(stored.description).toContain("[cut by kfp-sync: 150000 bytes is more than a request line can carry]");
    expect(stored.description).toMatch(/kfp-sync spec sha256:[0-9a-f]{64}$/);
    expect(stored.tags!.commit).toBe(sha256Commit.slice(0, 63));
    // The fingerprint survived the cut: nothing to do on the next run.
    const again = await sync(dir, server.url, [], { GITHUB_SHA: sha256Commit });
    expect(again.json().pipelines[0]!.state).toBe("unchanged");
    expect(writes(server).length).toBe(1);

    // 22 characters, 66 bytes: the server's 63 counts bytes.
    const ns = await sync(dir, server.url, ["--namespace", "日".repeat(22)]);
    expect(ns.code).toBe(2);
    expect(ns.stderr).toContain("--namespace/KFP_NAMESPACE is 66 bytes; the server allows 63");
    expect(writes(server).length).toBe(1);
  });
});

describe("every answer is checked before it is believed", () => {
  let kfp: KfpServer;
  beforeAll(async () => {
    kfp = await startKfpServer();
  });
  afterAll(() => kfp.stop());
  const TOKEN = "kfp-secret-token-5a4b3c2d1e";
  const two = () =>
    scratch({
      "evaluation_pipeline.py": { from: path.join(EXAMPLES, "evaluation_pipeline.py") },
      "vllm_tuning_pipeline.py": { from: path.join(EXAMPLES, "vllm_tuning_pipeline.py") },
    });

  const cases: [string, (req: Request, url: URL) => Response | undefined, RegExp][] = [
    ["healthz answered by a login page", (_req, url) => (url.pathname.endsWith("/healthz") ? html(DEX_LOGIN) : undefined), /reach the KFP API \(healthz\): the server answered with a login page \(HTTP 200\): the credentials were not accepted; check KFP_TOKEN\/KFP_COOKIE/],
    ["a name lookup redirected to Dex", (_req, url) => (url.pathname.includes("/names/") ? new Response(null, { status: 302, headers: { location: "/dex/auth?client_id=kubeflow-oidc-authservice&state=abc" } }) : undefined), /look up pipeline [a-z-]+: the server redirected to a login page \(\/dex\/auth\): the credentials were not accepted/],
    ["a name lookup answered {}", (_req, url) => (url.pathname.includes("/names/") ? jsonAnswer({}) : undefined), /look up pipeline [a-z-]+: the server answered \{\}, which is not a pipeline \(no pipeline_id\)/],
    ["KFP_HOST at the KFP UI (HTML for every path)", () => html(KFP_UI), /the server answered with a web page \(HTTP 200\), not the KFP API: --host\/KFP_HOST most likely points at the KFP UI/],
    ["the UI's healthz JSON, not ml-pipeline's", (_req, url) => (url.pathname.endsWith("/healthz") ? jsonAnswer({ apiServerReady: true, frontendTagName: "2.17.0" }) : undefined), /which is not ml-pipeline's healthz: --host\/KFP_HOST most likely points at the KFP UI or a proxy/],
  ];
  for (const [name, answer, message] of cases) {
    test(`a read: ${name} → stop before any write, exit 2, say what happened`, async () => {
      kfp.reset();
      const gw = await gatewayTo(kfp, answer);
      try {
        const r = await sync(two(), gw.url, [], { KFP_TOKEN: TOKEN });
        expect(r.code, r.stderr).toBe(2);
        expect(r.stderr).toMatch(message);
        expect(r.stdout + r.stderr).not.toContain(TOKEN);
        expect(writes(kfp)).toEqual([]);
      } finally {
        await gw.stop();
      }
    });
  }

  test("a write answered {} or by a login page: a failed pipeline that says so, never 'created'", async () => {
    for (const [reply, message] of [
      [() => jsonAnswer({}), /create pipeline [a-z-]+: the server answered \{\}, which is not a created pipeline \(no pipeline_id\): the write is not confirmed/],
      [() => html(DEX_LOGIN), /create pipeline [a-z-]+: the server answered with a login page \(HTTP 200\): the credentials were not accepted/],
      [() => new Response(null, { status: 302, headers: { location: "https://login.example/oauth2/start?rd=%2F" } }), /create pipeline [a-z-]+: the server redirected to a login page \(https:\/\/login.example\/oauth2\/start\)/],
    ] as const) {
      kfp.reset();
      const gw = await gatewayTo(kfp, (req, url) => (req.method === "POST" && url.pathname.endsWith("/upload") ? reply() : undefined));
      try {
        const r = await sync(scratch({ "evaluation_pipeline.py": { from: path.join(EXAMPLES, "evaluation_pipeline.py") } }), gw.url);
        expect(r.code, r.stderr).toBe(1);
        const p = r.json().pipelines[0]!;
        expect(p.state).toBe("failed");
        expect(p.pipelineId).toBeUndefined();
        expect(p.error.message).toMatch(message);
      } finally {
        await gw.stop();
      }
    }
  });
});

describe("multi-user: shared pipelines, identity", () => {
  // The stock 2.17 server (REQUIRE_NAMESPACE_FOR_PIPELINES unset) takes a pipeline without namespace as shared.
  let kfp: KfpServer;
  beforeAll(async () => {
    kfp = await startKfpServer({ multiUser: true, requireNamespace: false });
  });
  afterAll(() => kfp.stop());
  const one = () => scratch({ "evaluation_pipeline.py": { from: path.join(EXAMPLES, "evaluation_pipeline.py") } });

  test("--shared creates a shared pipeline beside a namespaced one of the same name, then unchanged; KFP_SHARED too", async () => {
    kfp.reset();
    const dir = one();
    const inTeam = await sync(dir, kfp.url, ["--namespace", "team-a"], { KFP_TOKEN: "team-a-member-token" }); // an identity, as the real server needs
    expect(inTeam.code, inTeam.stderr).toBe(0);
    const shared = await sync(dir, kfp.url, ["--shared"]);
    expect(shared.code, shared.stderr).toBe(0);
    expect(shared.json().pipelines[0]!.state).toBe("created");
    const upload = writes(kfp).at(-1)!;
    expect(upload.path).toBe("/apis/v2beta1/pipelines/upload");
    expect(upload.query.namespace).toBeUndefined();
    const byNs = kfp.state().pipelines.map((p) => p.namespace ?? "(shared)").sort();
    expect(byNs).toEqual(["(shared)", "team-a"]);
    const again = await sync(dir, kfp.url, [], { KFP_SHARED: "1" });
    expect(again.code, again.stderr).toBe(0);
    expect(again.json().pipelines[0]!.state).toBe("unchanged");
    expect(kfp.state().versions.length).toBe(2);

    const both = await sync(dir, kfp.url, ["--shared", "--namespace", "team-a"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("--shared/KFP_SHARED and --namespace/KFP_NAMESPACE exclude each other");
  });

  test("--shared on a server that requires a namespace: said as such, nothing written", async () => {
    await withServer(startKfpServer({ multiUser: true, requireNamespace: true }), async (strict) => {
      const r = await sync(one(), strict.url, ["--shared"]);
      expect(r.code).toBe(1);
      expect(r.json().pipelines[0]!.error.message).toContain("this server allows no shared pipelines (REQUIRE_NAMESPACE_FOR_PIPELINES): use --namespace/KFP_NAMESPACE instead of --shared");
      expect(writes(strict)).toEqual([]);
    });
  });

  const recorded401 = {
    code: 16,
    message: "Failed to get a pipeline with name model-evaluation and namespace team-a. Check error stack.: Failed to fetch a pipeline due to authorization error. Check if you have read permission to namespace team-a: Failed to access pipeline . Check if you have access to namespace team-a: Unauthenticated: Failed to check authorization. User identity is empty in the request header: Unauthenticated: Request header error: there is no user identity header.: Request header error: there is no user identity header.",
    details: [{ "@type": "type.googleapis.com/google.rpc.Status", code: 16, message: "Failed to check authorization. User identity is empty in the request header" }],
  };
  const recorded403 = {
    code: 7,
    message: "Failed to get a pipeline with name model-evaluation and namespace team-a. Check error stack.: ... PermissionDenied: User 'denied@example.com' is not authorized with reason:  (request: &ResourceAttributes{Namespace:team-a,Verb:get}): Unauthorized access",
    details: [{ "@type": "type.googleapis.com/google.rpc.Status", code: 7, message: "User 'denied@example.com' is not authorized with reason:  (request: &ResourceAttributes{Namespace:team-a,Verb:get})" }],
  };

  test("no identity → the server's own 401 sentence; a refused one → 403 said as such; no write follows", async () => {
    for (const [status, body, says] of [
      [401, recorded401, /HTTP 401 — Failed to check authorization\. User identity is empty in the request header \(no identity reached the server/],
      [403, recorded403, /HTTP 403 — User 'denied@example\.com' is not authorized .* \(the server knows who you are and refused/],
    ] as const) {
      kfp.reset();
      const gw = await gatewayTo(kfp, (_req, url) => (url.pathname.includes("/names/") ? jsonAnswer(body, status) : undefined));
      try {
        const r = await sync(one(), gw.url, ["--namespace", "team-a"]);
        expect(r.code).toBe(1);
        const p = r.json().pipelines[0]!;
        expect(p.error.message).toMatch(says);
        expect(p.error.message).not.toContain("Check error stack");
        expect(writes(kfp)).toEqual([]);
      } finally {
        await gw.stop();
      }
    }
  });

  test("the upload routes' bare 400 'Failed to create a pipeline' with no credentials: the identity advice", async () => {
    kfp.reset();
    const refused = { error_message: "Failed to create a pipeline", error_details: "Failed to create a pipeline\ngithub.com/kubeflow/pipelines/backend/src/apiserver/server.(*PipelineUploadServer).ServeHTTP" };
    // The real server refuses an identity-less name lookup first (401); this gateway lets the lookup
    // through as "not found" (the recorded get-pipeline-by-name-missing shape) so the upload's 400 is reached.
    const missing = { code: 5, message: "Failed to get a pipeline with name model-evaluation and namespace team-a. Check error stack.: ResourceNotFoundError", details: [] };
    const gw = await gatewayTo(kfp, (req, url) =>
      req.method === "POST" && url.pathname.endsWith("/upload")
        ? jsonAnswer(refused, 400, "text/plain; charset=utf-8")
        : url.pathname.includes("/pipelines/names/")
          ? jsonAnswer(missing, 404, "application/json")
          : undefined,
    );
    try {
      const r = await sync(one(), gw.url, ["--namespace", "team-a"]);
      expect(r.code).toBe(1);
      expect(r.json().pipelines[0]!.error.message).toContain("HTTP 400 — Failed to create a pipeline: no identity was sent, and in multi-user mode the upload routes refuse that with this 400");
      const withToken = await sync(one(), gw.url, ["--namespace", "team-a", "--token", "some-token-value"]);
      expect(withToken.json().pipelines[0]!.error.message).toContain("check that your identity may create pipelines in namespace team-a");
    } finally {
      await gw.stop();
    }
  });
});

describe("the newest second of versions, and version skew", () => {
  let kfp: KfpServer;
  beforeAll(async () => {
    kfp = await startKfpServer({ version: "2.17.0" });
  });
  afterAll(() => kfp.stop());

  /**
   * The real server stores whole seconds and orders same-second versions by random id: serve the
   * real newest version together with a twin of the same second, in a chosen order.
   */
  const tied = (twin: (v: Record<string, any>) => Record<string, any>, twinFirst: boolean) => async (_req: Request, url: URL) => {
    if (!/\/versions$/.test(url.pathname) || url.searchParams.get("page_token")) return undefined;
    const res = await fetch(`${kfp.url}${url.pathname}?sort_by=created_at%20desc&page_size=1`);
    const newest = ((await res.json()) as { pipeline_versions: Record<string, any>[] }).pipeline_versions[0]!;
    const second = `${newest.created_at.slice(0, 19)}Z`;
    const mine = { ...newest, created_at: second };
    const other = { ...twin(newest), created_at: second, pipeline_version_id: crypto.randomUUID(), name: "by-someone-else", display_name: "by-someone-else" };
    return jsonAnswer({ pipeline_versions: twinFirst ? [other, mine] : [mine, other], total_size: 2 });
  };
  const otherSpec = (v: Record<string, any>) => {
    const spec = structuredClone(v.pipeline_spec);
    spec.root.inputDefinitions.parameters.max_samples.defaultValue = 1;
    return { ...v, description: "uploaded by hand", pipeline_spec: spec };
  };
  const sameSpec = (v: Record<string, any>) => ({ ...v, description: "uploaded by hand" });

  for (const twinFirst of [false, true]) {
    test(`a same-second tie with another spec (${twinFirst ? "it" : "ours"} listed first): a new version, never 'unchanged'`, async () => {
      kfp.reset();
      const dir = scratch({ "evaluation_pipeline.py": { from: path.join(EXAMPLES, "evaluation_pipeline.py") } });
      expect((await sync(dir, kfp.url)).code).toBe(0);
      const gw = await gatewayTo(kfp, tied(otherSpec, twinFirst));
      try {
        const r = await sync(dir, gw.url, ["--version-tag", "v20260101-000001"]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.json().pipelines[0]!.state).toBe("versioned");
      } finally {
        await gw.stop();
      }
    });

    test(`a same-second tie with the same spec (${twinFirst ? "it" : "ours"} listed first): unchanged, no write`, async () => {
      kfp.reset();
      const dir = scratch({ "evaluation_pipeline.py": { from: path.join(EXAMPLES, "evaluation_pipeline.py") } });
      expect((await sync(dir, kfp.url)).code).toBe(0);
      const gw = await gatewayTo(kfp, tied(sameSpec, twinFirst));
      try {
        const r = await sync(dir, gw.url, ["--version-tag", "v20260101-000001"]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.json().pipelines[0]!.state).toBe("unchanged");
        expect(writes(kfp).length).toBe(1);
      } finally {
        await gw.stop();
      }
    });
  }

  test("kfp-sync never makes a tie itself: a version it adds lands in a later second than the newest one", async () => {
    kfp.reset();
    const dir = scratch({ "evaluation_pipeline.py": { from: path.join(EXAMPLES, "evaluation_pipeline.py") } });
    const file = path.join(dir, "evaluation_pipeline.py");
    const source = fs.readFileSync(file, "utf8");
    // Create, then two changes and a re-sync back to back: each sync takes well under a second.
    const actions: string[] = [];
    for (const [i, samples] of ["2000", "2001", "2002", "2002"].entries()) {
      fs.writeFileSync(file, source.replace("max_samples: int = 2000", `max_samples: int = ${samples}`));
      const r = await sync(dir, kfp.url, ["--version-tag", `v20260101-00000${i}`]);
      expect(r.code, r.stderr).toBe(0);
      actions.push(r.json().pipelines[0]!.state);
    }
    expect(actions).toEqual(["created", "versioned", "versioned", "unchanged"]);
    const seconds = kfp.state().versions.map((v) => v.created_at);
    expect(seconds.length).toBe(3);
    expect(new Set(seconds).size).toBe(3);
  });

  test("a 2.17.0 server with the 2.17.3 SDK: same minor release, no skew warning", async () => {
    kfp.reset();
    const r = await sync(scratch({ "evaluation_pipeline.py": { from: path.join(EXAMPLES, "evaluation_pipeline.py") } }), kfp.url);
    expect(r.code).toBe(0);
    expect(r.json().server.version).toBe("2.17.0");
    expect(r.stderr).not.toMatch(/behind|older than/);
  });
});

describe("a version uploaded by someone else (no kfp-sync marker) of the same spec is unchanged", () => {
  const read = (name: string) => fs.readFileSync(path.join(CONTRACT, name), "utf8");
  // The pipeline_spec the real server returned for a spec, re-marshalled ("1e-4" → 0.0001, "0o17" → 15,
  // 9007199254740992.0 → 9007199254740992, the {pipeline_spec, platform_spec} wrapper): cases get-version-*.
  const answer = (spec: string) => {
    const recorded = (JSON.parse(fs.readFileSync(CASES, "utf8")) as Array<{ name: string; response: { body: { pipeline_spec: any } } }>).find((c) => c.name === `get-version-${spec}`);
    if (!recorded) throw new Error(`the recorded contract has no case get-version-${spec}`);
    return recorded.response.body.pipeline_spec;
  };
  const compiled = (name: string) => {
    const docs = YAML.parseAllDocuments(read(name)).map((d) => d.toJS());
    return fingerprintOf(docs[0], docs[1]);
  };

  test("the recorded specs: as compiled, as PyYAML reads them, as the server returns them — one fingerprint", () => {
    for (const spec of ["defaults", "platform"]) {
      const local = compiled(`${spec}.yaml`);
      expect(serverFingerprint(answer(spec)), `${spec}: server`).toBe(local);
      expect(serverFingerprint(JSON.parse(read(`${spec}.as-parsed.json`))), `${spec}: PyYAML`).toBe(local);
    }
    // The server's numbers stand for the strings kfp meant ("1e-4" → 0.0001, "0o17" → 15) …
    const server = answer("defaults");
    expect(server.root.inputDefinitions.parameters.lr.defaultValue).toBe(0.0001);
    // … but a real change of a default is still a change.
    server.root.inputDefinitions.parameters.lr.defaultValue = 0.001;
    expect(serverFingerprint(server)).not.toBe(compiled("defaults.yaml"));
  });

  test("end to end: the compiled spec uploaded by a plain multipart POST, then kfp-sync: unchanged", async () => {
    await withServer(startKfpServer(), async (kfp) => {
      const dir = scratch({ "defaults_pipeline.py": { from: path.join(CONTRACT, "sources/defaults_pipeline.py") } });
      const dry = await run(["--dry-run", "--out-dir", path.join(dir, ".out")], { cwd: dir });
      expect(dry.code, dry.stderr).toBe(0);
      const form = new FormData();
      form.append("uploadfile", new Blob([fs.readFileSync(path.join(dir, ".out/defaults_pipeline.yaml"))]), "contract-defaults.yaml");
      const res = await fetch(`${kfp.url}/apis/v2beta1/pipelines/upload?name=contract-defaults`, { method: "POST", body: form });
      expect(res.status).toBe(200);
      const r = await sync(dir, kfp.url);
      expect(r.code, r.stderr).toBe(0);
      expect(r.json().pipelines[0]!.state).toBe("unchanged");
      expect(writes(kfp).length).toBe(1);
    });
  });
});

test("the kfp-kubernetes examples: the platform spec is uploaded, survives the round trip, re-syncs unchanged (with and without the marker)", async () => {
  await withServer(startKfpServer(), async (kfp) => {
    const files = ["qlora_pdf_pipeline.py", "vllm_tuning_pipeline.py", "dvd_transcription_pipeline.py"];
    const dir = scratch(Object.fromEntries(files.map((f) => [f, { from: path.join(EXAMPLES, f) }])));
    const first = await sync(dir, kfp.url);
    expect(first.code, first.stderr).toBe(0);
    expect(first.json().counts).toMatchObject({ created: 3, failed: 0 });
    const platforms = kfp.state().versions.map((v) => Object.keys((v.pipeline_spec as any).platform_spec.platforms.kubernetes.deploymentSpec.executors).sort());
    expect(platforms.sort()).toEqual([["exec-benchmark-config"], ["exec-extract-text", "exec-list-pdfs"], ["exec-transcribe"]]);
    const again = await sync(dir, kfp.url);
    expect(again.json().counts).toMatchObject({ unchanged: 3, failed: 0 });

    // Uploaded by someone else (no marker): the spec comparison alone, platform spec included.
    kfp.reset();
    for (const f of files) {
      const yaml = fs.readFileSync(path.join(dir, ".out", f.replace(/\.py$/, ".yaml")));
      const name = YAML.parseAllDocuments(yaml.toString())[0]!.toJS().pipelineInfo.name;
      const form = new FormData();
      form.append("uploadfile", new Blob([yaml]), `${name}.yaml`);
      expect((await fetch(`${kfp.url}/apis/v2beta1/pipelines/upload?name=${name}`, { method: "POST", body: form })).status).toBe(200);
    }
    const unmarked = await sync(dir, kfp.url);
    expect(unmarked.json().counts).toMatchObject({ unchanged: 3, failed: 0 });
    expect(writes(kfp).length).toBe(3);
  });
});
