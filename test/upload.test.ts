/**
 * Stage 3, upload: the binary against the KFP-faithful server on loopback, or, with KFP_TEST_HOST set,
 * against that server through test/kfp-target.ts (names prefixed per test; tests that need the
 * imitation's insides are skipped with the reason printed).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { FIXTURES, examplesCopy, run, scratch, withServer } from "./helpers";
import { startKfpServer, type RecordedRequest } from "./kfp-server";
import { imitationOnly, syncTarget, type SyncTarget } from "./kfp-target";

const TAG = "v20260213-143022";
const writes = (server: { requests: RecordedRequest[] }) => server.requests.filter((r) => r.method !== "GET");
const sync = (dir: string, server: { url: string; env?: Record<string, string> }, args: string[] = [], env: Record<string, string> = {}) =>
  run(["--host", server.url, "--out-dir", path.join(dir, ".out"), ...args], { cwd: dir, env: { ...server.env, ...env } });

/** Change a pipeline's spec without changing its name: a new default for a parameter. */
function touch(dir: string, file: string) {
  const p = path.join(dir, file);
  const src = fs.readFileSync(p, "utf8");
  const changed = src.replace(/(def \w+\([^)]*?: int = )(\d+)/, (_, head, n) => `${head}${Number(n) + 1}`);
  expect(changed).not.toBe(src);
  fs.writeFileSync(p, changed);
}

describe("upload", () => {
  let server: SyncTarget;
  beforeAll(async () => {
    server = await syncTarget();
  });
  afterAll(() => server.stop());

  test("create, then unchanged with zero writes, then one new version, then --force", async () => {
    server.reset();
    const dir = examplesCopy();
    const first = await sync(dir, server, ["--version-tag", TAG], { GITHUB_SHA: "0123456789abcdef0123456789abcdef01234567" });
    expect(first.code).toBe(0);
    const s1 = first.json();
    expect(s1.counts).toMatchObject({ found: 6, compiled: 6, created: 6, versioned: 0, unchanged: 0, uploaded: 6, failed: 0 });
    expect(s1.server).toMatchObject({ host: server.url, multiUser: server.multiUser });
    const uploads = writes(server);
    expect(uploads.map((r) => r.path)).toEqual(Array(6).fill("/apis/v2beta1/pipelines/upload"));
    for (const r of uploads) {
      expect(r.filename).toBe(`${r.query.name}.yaml`);
      expect(r.body).toStartWith("# PIPELINE DEFINITION");
      expect(r.query.display_name).toBe(r.query.name);
    }
    const state = await server.state();
    expect(state.pipelines.map((p) => p.name).sort()).toEqual(s1.pipelines.map((p) => p.name).sort());
    for (const p of s1.pipelines) {
      expect(p.state).toBe("created");
      const version = state.versions.find((v) => v.pipeline_version_id === p.versionId)!;
      expect(version.pipeline_id).toBe(p.pipelineId);
      expect(p.url).toBe(`${server.url}/#/pipelines/details/${p.pipelineId}/version/${p.versionId}`);
    }

    // Same commit again: nothing to do, and nothing written.
    const before = server.requests.length;
    const second = await sync(dir, server);
    expect(second.code).toBe(0);
    expect(second.json().counts).toMatchObject({ unchanged: 6, uploaded: 0, failed: 0 });
    expect(writes(server).length).toBe(6);
    expect(server.requests.slice(before).every((r) => r.method === "GET")).toBe(true);

    // One pipeline changes: one new version named by the tag, the rest unchanged.
    touch(dir, "evaluation_pipeline.py");
    const third = await sync(dir, server, ["--version-tag", "v20260213-150000"], { GITHUB_SHA: "fedcba9876543210fedcba9876543210fedcba98", KFP_SYNC_RUN_URL: "https://gitea.example/t/p/actions/runs/7" });
    expect(third.code).toBe(0);
    const s3 = third.json();
    expect(s3.counts).toMatchObject({ versioned: 1, unchanged: 5, uploaded: 1 });
    const versioned = s3.pipelines.find((p) => p.state === "versioned")!;
    expect(versioned.file).toBe("evaluation_pipeline.py");
    expect(versioned.versionName).toBe("v20260213-150000");
    const upload = writes(server).at(-1)!;
    expect(upload.path).toBe("/apis/v2beta1/pipelines/upload_version");
    expect(upload.query).toMatchObject({ pipelineid: versioned.pipelineId, name: "v20260213-150000", display_name: "v20260213-150000" });
    expect(upload.query.description).toContain("commit fedcba9876543210fedcba9876543210fedcba98");
    expect(upload.query.description).toContain("run https://gitea.example/t/p/actions/runs/7");
    expect(upload.query.description).toMatch(/kfp-sync spec sha256:[0-9a-f]{64}/);
    expect(JSON.parse(upload.query.tags!)).toEqual({ "synced-by": "kfp-sync", commit: "fedcba9876543210fedcba9876543210fedcba98" });
    expect((await server.state()).versions.find((v) => v.name === "v20260213-150000")!.tags).toEqual({ "synced-by": "kfp-sync", commit: "fedcba9876543210fedcba9876543210fedcba98" });

    // --force: a new version of everything, even unchanged ones.
    const forced = await sync(dir, server, ["--force", "--version-tag", "v20260213-160000"]);
    expect(forced.json().counts).toMatchObject({ versioned: 6, unchanged: 0 });
    expect((await server.state()).pipelines.length).toBe(6);
    expect((await server.state()).versions.length).toBe(6 + 1 + 6);
  });

  test("dry run with a host: reads only, says what would change", async () => {
    server.reset();
    const dir = examplesCopy();
    await sync(dir, server, ["evaluation_pipeline.py", "vllm_tuning_pipeline.py"]);
    touch(dir, "evaluation_pipeline.py");
    const before = server.requests.length;
    const r = await sync(dir, server, ["--dry-run"]);
    expect(r.code).toBe(0);
    const plans = Object.fromEntries(r.json().pipelines.map((p) => [p.file, p.plan]));
    expect(plans).toEqual({
      "document_ingestion_pipeline.py": "create",
      "dvd_transcription_pipeline.py": "create",
      "evaluation_pipeline.py": "version",
      "qlora_pdf_pipeline.py": "create",
      "vllm_tuning_pipeline.py": "unchanged",
      "voice_cloning_pipeline.py": "create",
    });
    expect(r.json().counts).toMatchObject({ uploaded: 0, created: 0, versioned: 0, unchanged: 1 });
    expect(server.requests.slice(before).map((q) => q.method)).toEqual(expect.arrayContaining(["GET"]));
    expect(server.requests.slice(before).filter((q) => q.method !== "GET")).toEqual([]);
  });

  test("kfp's random key order in the YAML header (dict defaults): the same YAML every run, and no change", async () => {
    server.reset();
    const dir = scratch({ "dict_default_pipeline.py": { from: path.join(FIXTURES, "nondeterministic/dict_default_pipeline.py") } });
    const texts = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const r = await sync(dir, server);
      expect(r.code).toBe(0);
      expect(r.json().pipelines[0]!.state).toBe(i === 0 ? "created" : "unchanged");
      texts.add(fs.readFileSync(path.join(dir, ".out/dict_default_pipeline.yaml"), "utf8"));
    }
    // The compile is deterministic (issue 16): kfp alone would order the header's keys differently per process.
    expect(texts.size).toBe(1);
    expect(writes(server).length).toBe(1);
  });

  test.skipIf(imitationOnly("a server older than the SDK", "needs a server that says it is 2.16.0"))("a server older than the SDK: a warning, and no tags parameter (it predates 2.17)", async () => {
    await withServer(startKfpServer({ version: "2.16.0" }), async (old) => {
      const r = await sync(examplesCopy(), old, ["evaluation_pipeline.py"]);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain("the server (2.16.0) is a minor release behind the kfp SDK that compiled (2.17.3)");
      expect(r.stderr).toContain("it may refuse the compiled spec or ignore what it does not know");
      expect(r.json().server.version).toBe("2.16.0");
      expect(writes(old)[0]!.query.tags).toBeUndefined();
    });
  });

  test("--name-from file names pipelines after their files", async () => {
    server.reset();
    const dir = examplesCopy();
    const r = await sync(dir, server, ["--name-from", "file", "evaluation_pipeline.py"]);
    expect(r.code).toBe(0);
    expect(r.json().pipelines[0]!.name).toBe("evaluation-pipeline");
    expect((await server.state()).pipelines.map((p) => p.name)).toEqual(["evaluation-pipeline"]);
  });

  test("too large or badly named: refused locally with a clear message, nothing sent, the rest uploaded", async () => {
    server.reset();
    const dir = scratch({
      "huge_pipeline.py": { from: path.join(FIXTURES, "bad/huge_pipeline.py") },
      "ok_pipeline.py": { from: path.join(FIXTURES, "tricky/params_defaults_pipeline.py") },
    });
    const long = `${"x".repeat(130)}_pipeline.py`;
    fs.copyFileSync(path.join(FIXTURES, "tricky/components_and_pipeline_pipeline.py"), path.join(dir, long));
    const r = await sync(dir, server, ["--name-from", "file"]);
    expect(r.code).toBe(1);
    const byFile = Object.fromEntries(r.json().pipelines.map((p) => [p.file, p]));
    expect(byFile["huge_pipeline.py"].state).toBe("failed");
    expect(byFile["huge_pipeline.py"].error.message).toMatch(/compiled spec is 3\d\.\d MiB; the server accepts at most 32 MiB/);
    expect(byFile[long].error.message).toContain("the server allows 128");
    expect(byFile["ok_pipeline.py"].state).toBe("created");
    expect(writes(server).map((w) => w.query.name)).toEqual(["ok-pipeline"]);
  });
});

describe("upload: auth, namespaces and server errors", () => {
  const TOKEN = "kfp-test-token-9f8e7d6c5b4a";

  test.skipIf(imitationOnly("the bearer token is sent on every call", "needs a server that accepts only this test's own token"))("the bearer token is sent on every call and never printed", async () => {
    await withServer(startKfpServer({ token: TOKEN }), async (server) => {
      const dir = examplesCopy();
      const ok = await sync(dir, server, ["evaluation_pipeline.py"], { KFP_TOKEN: TOKEN });
      expect(ok.code).toBe(0);
      expect(server.requests.every((r) => r.headers.authorization === `Bearer ${TOKEN}`)).toBe(true);
      for (const text of [ok.stdout, ok.stderr]) expect(text).not.toContain(TOKEN);
      expect(ok.stderr).toContain("token from --token/KFP_TOKEN"); // where it came from, never what it is

      const verbose = await sync(dir, server, ["--verbose", "--token", TOKEN, "--force", "evaluation_pipeline.py"]);
      expect(verbose.code).toBe(0);
      expect(verbose.stderr).toContain("GET");
      for (const text of [verbose.stdout, verbose.stderr]) expect(text).not.toContain(TOKEN);

      // From a token file, as kfp.Client reads KF_PIPELINES_SA_TOKEN_PATH.
      const tokenFile = path.join(scratch(), "token");
      fs.writeFileSync(tokenFile, `${TOKEN}\n`);
      const fromFile = await sync(dir, server, ["evaluation_pipeline.py"], { KF_PIPELINES_SA_TOKEN_PATH: tokenFile });
      expect(fromFile.code).toBe(0);
      expect(fromFile.json().pipelines[0]!.state).toBe("unchanged");
      expect(fromFile.stderr).toContain(`token from ${tokenFile}`);

      const wrong = await sync(dir, server, ["evaluation_pipeline.py"], { KFP_TOKEN: "wrong-token-value" });
      expect(wrong.code).toBe(1);
      expect(wrong.json().pipelines[0]!.error.message).toContain("HTTP 401");
      expect(wrong.stderr).toContain("set KFP_TOKEN, KF_PIPELINES_SA_TOKEN_PATH or KFP_COOKIE");
      expect(wrong.stdout + wrong.stderr).not.toContain("wrong-token-value");
    });
  });

  test.skipIf(imitationOnly("KFP_COOKIE", "reads every request's headers, which only the imitation records"))("KFP_COOKIE: a bare value is sent as Dex's authservice_session cookie, never printed", async () => {
    await withServer(startKfpServer(), async (server) => {
      const r = await sync(examplesCopy(), server, ["evaluation_pipeline.py"], { KFP_COOKIE: "dex-session-value-1234" });
      expect(r.code).toBe(0);
      expect(r.stderr).toContain("cookie from KFP_COOKIE");
      for (const q of server.requests) {
        expect(q.headers.cookie).toBe("authservice_session=dex-session-value-1234");
        expect(q.headers.authorization).toBeUndefined();
      }
      expect(r.stdout + r.stderr).not.toContain("dex-session-value-1234");
    });
  });

  test.skipIf(imitationOnly("multi-user namespaces", "needs its own multi-user server with namespaces team-a"))("multi-user: the namespace goes with every call that takes one; without it, exit 2", async () => {
    await withServer(startKfpServer({ multiUser: true }), async (server) => {
      const dir = examplesCopy();
      const missing = await sync(dir, server);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("multi-user mode: choose where the pipelines go");
      expect(missing.stderr).toContain("--namespace/KFP_NAMESPACE");
      expect(missing.stderr).toContain("--shared/KFP_SHARED");
      expect(writes(server)).toEqual([]);

      // A namespaced pipeline needs an identity: a bearer token stands for one (TokenReview).
      const r = await sync(dir, server, ["evaluation_pipeline.py"], { KFP_NAMESPACE: "team-a", KFP_TOKEN: "team-a-editor-token" });
      expect(r.code).toBe(0);
      const ns = server.requests.filter((q) => /\/pipelines\/(names\/|upload$)|\/pipelines$/.test(q.path));
      expect(ns.length).toBeGreaterThanOrEqual(2);
      for (const q of ns) expect(q.query.namespace, `${q.method} ${q.path}`).toBe("team-a");
      expect((await server.state()).pipelines[0]!.namespace).toBe("team-a");
      touch(dir, "evaluation_pipeline.py");
      const v = await sync(dir, server, ["evaluation_pipeline.py", "--namespace", "team-a"], { KFP_TOKEN: "team-a-editor-token" });
      expect(v.json().pipelines[0]!.state).toBe("versioned");
    });
  });

  test.skipIf(imitationOnly("403, 409, 400 and 500 from the server", "injects faults (failNext), which only the imitation can"))("403, 409, 400 and 500 from the server: each reported clearly, the other pipelines go on", async () => {
    await withServer(startKfpServer(), async (server) => {
      const dir = examplesCopy();
      const cases: [number, string][] = [
        [403, "HTTP 403"],
        [400, "HTTP 400"],
        [500, "HTTP 500"],
      ];
      for (const [status, text] of cases) {
        server.reset();
        server.failNext(/POST \/apis\/v2beta1\/pipelines\/upload$/, status, 1);
        const r = await sync(dir, server, ["evaluation_pipeline.py", "vllm_tuning_pipeline.py"]);
        expect(r.code, String(status)).toBe(1);
        const s = r.json();
        const failed = s.pipelines.filter((p) => p.state === "failed");
        expect(failed.length, String(status)).toBe(1);
        expect(failed[0]!.error.message).toContain(text);
        expect(failed[0]!.error.message).toMatch(/create pipeline [a-z-]+: HTTP \d{3} — .+ \(.+\)/);
        expect(s.pipelines.filter((p) => p.state === "created").length).toBe(1);
        expect((await server.state()).pipelines.length).toBe(1);
      }
      // 409 on create: someone else created it in between; we look again and carry on as a version.
      server.reset();
      await sync(dir, server, ["evaluation_pipeline.py"]);
      touch(dir, "evaluation_pipeline.py");
      server.failNext(/GET \/apis\/v2beta1\/pipelines\/names\//, 404, 1);
      const raced = await sync(dir, server, ["evaluation_pipeline.py", "--version-tag", TAG]);
      expect(raced.code).toBe(0);
      expect(raced.json().pipelines[0]!.state).toBe("versioned");
      // 409 on a version name that exists with another spec: reported, nothing overwritten.
      touch(dir, "evaluation_pipeline.py");
      const clash = await sync(dir, server, ["evaluation_pipeline.py", "--version-tag", TAG]);
      expect(clash.code).toBe(1);
      expect(clash.json().pipelines[0]!.error.message).toContain(`a different version named ${TAG} already exists`);
      expect((await server.state()).versions.filter((v) => v.name === TAG).length).toBe(1);
    });
  });

  test("an unreachable server: every pipeline fails with one clear message, exit 1", async () => {
    const dir = examplesCopy();
    const r = await run(["--host", "http://127.0.0.1:9", "--retries", "1", "--out-dir", scratch()], { cwd: dir });
    expect(r.code).toBe(1);
    const s = r.json();
    expect(s.counts).toMatchObject({ compiled: 6, failed: 6 });
    expect(s.pipelines[0]!.error.message).toContain("connection refused by http://127.0.0.1:9");
  });

  test.skipIf(imitationOnly("a flaky read is retried", "injects faults (failNext), which only the imitation can"))("a flaky read is retried with backoff and the sync succeeds", async () => {
    await withServer(startKfpServer(), async (server) => {
      const dir = examplesCopy();
      server.failNext(/GET \/apis\/v2beta1\/healthz/, 503, 2);
      server.failNext(/GET \/apis\/v2beta1\/pipelines\/names\//, 502, 1);
      const r = await sync(dir, server, ["evaluation_pipeline.py"]);
      expect(r.code).toBe(0);
      expect(r.stderr).toMatch(/HTTP 503.*retrying in/);
      expect(r.stderr).toMatch(/HTTP 502.*retrying in/);
      expect(r.json().pipelines[0]!.state).toBe("created");
    });
  });

  test("two syncs at once: one pipeline per name, nothing duplicated", async () => {
    const server = await syncTarget();
    try {
      const dir = examplesCopy();
      const [a, b] = await Promise.all([sync(dir, server, ["--version-tag", TAG]), sync(dir, server, ["--version-tag", TAG])]);
      for (const r of [a, b]) expect(r.code, r.stderr).toBe(0);
      const names = (await server.state()).pipelines.map((p) => p.name);
      expect(names.length).toBe(6);
      expect(new Set(names).size).toBe(6);
      expect((await server.state()).versions.length).toBe(6);
      const actions = [...a.json().pipelines, ...b.json().pipelines].map((p) => p.state);
      expect(actions.filter((x) => x === "created").length).toBe(6);
      expect(actions.filter((x) => x === "unchanged").length).toBe(6);
    } finally {
      await server.stop();
    }
  });
});

describe("upload: what counts as a change", () => {
  test("zeros, empty strings and list elements in defaults are real changes", async () => {
    const server = await syncTarget();
    try {
      const pipeline = (xs: string, flag: string) => `from typing import List
from kfp import dsl

@dsl.component(base_image="python:3.11-slim")
def show(xs: List[int], flag: str) -> str:
    return f"{xs} {flag}"

@dsl.pipeline(name="zeros")
def zeros(xs: List[int] = ${xs}, flag: str = ${flag}):
    show(xs=xs, flag=flag)
`;
      const dir = scratch({ "zeros_pipeline.py": pipeline("[0, 1, 2]", '""') });
      const steps: [string, string, string][] = [
        ["[0, 1, 2]", '""', "created"],
        ["[1, 2]", '""', "versioned"],
        ["[1, 2]", '"x"', "versioned"],
        ["[1, 2]", '"x"', "unchanged"],
      ];
      for (const [i, [xs, flag, action]] of steps.entries()) {
        // created_at has whole seconds: versions of one second tie, and a tie is never "unchanged"
        // (upload-contract.test.ts covers that). Here each version gets a second of its own.
        if (i > 0) await Bun.sleep(1100);
        fs.writeFileSync(path.join(dir, "zeros_pipeline.py"), pipeline(xs, flag));
        const r = await sync(dir, server, ["--version-tag", `v2026010${i}-000000`]);
        expect(r.json().pipelines[0]!.state, `${xs} ${flag}`).toBe(action);
      }
    } finally {
      await server.stop();
    }
  });
});

test("two files with one pipeline name: both refused with the other named, the rest uploaded", async () => {
  const server = await syncTarget();
  try {
    const src = fs.readFileSync(path.join(FIXTURES, "tricky/params_defaults_pipeline.py"), "utf8");
    const dir = scratch({ "a_pipeline.py": src, "b_pipeline.py": src.replace(/: int = (\d+)/, (_, n) => `: int = ${Number(n) + 1}`) });
    fs.copyFileSync(path.join(FIXTURES, "tricky/components_and_pipeline_pipeline.py"), path.join(dir, "c_pipeline.py"));
    const r = await sync(dir, server);
    expect(r.code).toBe(1);
    const byFile = Object.fromEntries(r.json().pipelines.map((p) => [p.file, p]));
    expect(byFile["a_pipeline.py"].error.message).toContain('pipeline name "params-defaults" is also the name of b_pipeline.py');
    expect(byFile["b_pipeline.py"].error.message).toContain("is also the name of a_pipeline.py");
    expect(byFile["c_pipeline.py"].state).toBe("created");
    expect((await server.state()).pipelines.map((p) => p.name)).toEqual(["components-and-pipeline"]);
  } finally {
    await server.stop();
  }
});
