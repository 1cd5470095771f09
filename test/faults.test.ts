/**
 * Reliability: kfp-sync runs unattended on every push. Faults are injected between it and the
 * KFP-faithful server by a proxy on loopback; every run must end with each pipeline in exactly one
 * of created / versioned / unchanged / failed, and nothing on the server lost, duplicated or deleted.
 * The counters at the bottom are printed for the README's reliability figures.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, EXAMPLES, FIXTURES, ROOT, cleanEnv, examplesCopy, processesIn, run, scratch, type RunResult, type Summary } from "./helpers";
import { startFaultProxy, type FaultProxy, type FaultRule } from "./fault-proxy";
import { startKfpServer, type KfpServer } from "./kfp-server";
import { startNtfyServer, type NtfyServer } from "./ntfy-server";

const tally = { faults: 0, runs: 0, pipelines: 0, lost: 0 };
const ACTIONS = new Set(["created", "versioned", "unchanged", "failed"]);

let kfp: KfpServer;
let proxy: FaultProxy;
beforeAll(async () => {
  kfp = await startKfpServer();
  proxy = await startFaultProxy(kfp.url);
});
afterAll(async () => {
  await proxy.stop();
  await kfp.stop();
  console.log(`reliability: ${tally.faults} faults injected, ${tally.runs} runs, ${tally.pipelines} pipeline outcomes checked, ${tally.lost} lost`);
});
beforeEach(() => {
  kfp.reset();
  proxy.clear();
  proxy.injected.length = 0;
});

const UPLOAD = /^\/apis\/v2beta1\/pipelines\/upload\?/;
const UPLOAD_VERSION = /^\/apis\/v2beta1\/pipelines\/upload_version\?/;
const BY_NAME = /^\/apis\/v2beta1\/pipelines\/names\//;

/** Count a run for the README's figures: every pipeline must end in exactly one known outcome. */
function tallied(stdout: string): Summary {
  const summary = JSON.parse(stdout) as Summary;
  tally.runs++;
  for (const p of summary.pipelines) {
    tally.pipelines++;
    // A run that never reached a server (a dry run without a host) ends after compile; a dry run
    // that reached one ends there too, with its plan.
    const allowed = summary.server && !summary.dryRun ? ACTIONS : new Set(["compiled", "failed"]);
    const outcome = summary.server && summary.dryRun && p.state === "compiled" && !p.plan ? "compiled without a plan" : p.state;
    if (!allowed.has(outcome)) tally.lost++;
    expect(allowed.has(outcome), `${p.file}: ${outcome}`).toBe(true);
  }
  return summary;
}

/** Sync through the proxy, then check the invariants that must hold whatever was injected. */
async function syncThrough(dir: string, rules: FaultRule[], args: string[] = []): Promise<RunResult> {
  for (const rule of rules) proxy.add(rule);
  const r = await run(["--host", proxy.url, "--http-timeout", "1", "--retries", "3", "--out-dir", path.join(dir, ".out"), ...args], { cwd: dir });
  tally.faults += proxy.injected.length;
  const summary = tallied(r.stdout);
  const state = kfp.state();
  const names = state.pipelines.map((p) => p.name);
  expect(new Set(names).size).toBe(names.length); // no duplicate pipelines
  expect(kfp.requests.filter((q) => q.method === "DELETE")).toEqual([]); // nothing deleted
  // Every pipeline reported created/versioned/unchanged is really on the server.
  for (const p of summary.pipelines.filter((x) => ["created", "versioned", "unchanged"].includes(x.state))) {
    expect(state.versions.some((v) => v.pipeline_version_id === p.versionId), `${p.file} on server`).toBe(true);
  }
  return r;
}

describe("network faults", () => {
  test("connection resets on reads: retried with backoff, then success", async () => {
    const r = await syncThrough(examplesCopy(), [{ method: "GET", path: BY_NAME, times: 3, fault: { kind: "reset" } }]);
    expect(r.code).toBe(0);
    expect(proxy.injected.length).toBe(3);
    expect(r.json().counts.created).toBe(6);
  });

  test("a 503 burst on reads: retried, then success; a 503 that never ends: a clear failure, nothing written", async () => {
    const burst = await syncThrough(examplesCopy(), [{ method: "GET", path: /healthz/, times: 3, fault: { kind: "status", status: 503, body: '{"code":14,"message":"unavailable"}' } }]);
    expect(burst.code).toBe(0);
    expect(burst.stderr).toMatch(/HTTP 503.*retrying in/);

    kfp.reset();
    proxy.clear();
    const forever = await syncThrough(examplesCopy(), [{ method: "GET", fault: { kind: "status", status: 503 } }], ["--retries", "2"]);
    expect(forever.code).toBe(1);
    expect(forever.json().pipelines[0]!.error.message).toContain("HTTP 503");
    expect(forever.json().pipelines[0]!.error.message).toContain("retry later");
    expect(kfp.requests.length).toBe(0);
  });

  test("a read that stalls past the timeout is retried; a truncated JSON body is retried", async () => {
    const r = await syncThrough(examplesCopy(), [
      { method: "GET", path: /healthz/, times: 1, fault: { kind: "stall", ms: 2500 } },
      { method: "GET", path: BY_NAME, times: 2, fault: { kind: "truncate", bytes: 20 } },
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("no answer within 1 s");
    expect(r.json().counts.created).toBe(6);
  });

  test("a write whose answer is lost (response dropped after the server acted): checked by a read, not sent again", async () => {
    const r = await syncThrough(examplesCopy(), [{ method: "POST", path: UPLOAD, times: 2, fault: { kind: "drop-response" } }]);
    expect(r.code).toBe(0);
    expect(r.json().counts.created).toBe(6);
    expect(kfp.state().pipelines.length).toBe(6);
    expect(kfp.requests.filter((q) => q.method === "POST").length).toBe(6); // no second upload for the two lost answers
  });

  test("a write that stalls past the timeout and never reached the server: read shows it missing, sent once more", async () => {
    const r = await syncThrough(examplesCopy(), [{ method: "POST", path: UPLOAD, times: 1, fault: { kind: "stall", ms: 6000 } }], ["evaluation_pipeline.py"]);
    expect(r.code).toBe(0);
    expect(r.json().pipelines[0]!.state).toBe("created");
    expect(kfp.state().pipelines.length).toBe(1);
  });

  test("a write that lands only after its timeout: the second send's 409 is settled by a read, no duplicate", async () => {
    // First send: times out on our side (4 s), lands at 4.5 s. Second send: held 1 s, so it lands after it: 409.
    const r = await syncThrough(examplesCopy(), [
      { method: "POST", path: UPLOAD, times: 1, fault: { kind: "late", ms: 4500 } },
      { method: "POST", path: UPLOAD, times: 1, fault: { kind: "stall", ms: 1000 } },
    ], ["evaluation_pipeline.py"]);
    expect(kfp.requests.filter((q) => q.method === "POST").map((q) => q.status)).toEqual([200, 409]);
    expect(r.code).toBe(0);
    expect(r.json().pipelines[0]!.state).toBe("created");
    expect(kfp.state().pipelines.length).toBe(1);
    expect(kfp.state().versions.length).toBe(1);
  });

  test("a lost answer on a new version: the version is found by a read, not uploaded twice", async () => {
    const dir = examplesCopy();
    await syncThrough(dir, [], ["evaluation_pipeline.py"]);
    const src = path.join(dir, "evaluation_pipeline.py");
    fs.writeFileSync(src, fs.readFileSync(src, "utf8").replace(/(: float = )([0-9.]+)/, (_, h, n) => `${h}${Number(n) / 2}`));
    const r = await syncThrough(dir, [{ method: "POST", path: UPLOAD_VERSION, times: 1, fault: { kind: "drop-response" } }], ["evaluation_pipeline.py", "--version-tag", "v20260101-000000"]);
    expect(r.code).toBe(0);
    expect(r.json().pipelines[0]!.state).toBe("versioned");
    expect(kfp.state().versions.length).toBe(2);
  });

  test("a slow upload answer still completes; a reset before a write reaches the server is retried after a read", async () => {
    const r = await syncThrough(examplesCopy(), [
      { method: "POST", path: UPLOAD, times: 1, fault: { kind: "slow-body", bytesPerSecond: 200 } },
      { method: "POST", path: UPLOAD, times: 1, fault: { kind: "reset" } },
    ]);
    expect(r.code).toBe(0);
    expect(r.json().counts.created).toBe(6);
    expect(kfp.state().pipelines.length).toBe(6);
  });

  test("connection refused: every pipeline fails with one clear message, nothing hangs", async () => {
    const r = await run(["--host", "http://127.0.0.1:9", "--retries", "1", "--out-dir", scratch()], { cwd: examplesCopy() });
    expect(r.code).toBe(1);
    expect(tallied(r.stdout).counts.failed).toBe(6);
    expect(r.stderr).toContain("connection refused");
  });
});

describe("concurrency", () => {
  test("four syncs of the same repository at once: one pipeline per name, at most one new version per changed pipeline", async () => {
    const dir = examplesCopy();
    const four = () => Promise.all(Array.from({ length: 4 }, () => run(["--host", kfp.url, "--version-tag", "v20260301-120000", "--out-dir", scratch()], { cwd: dir })));
    for (const r of await four()) {
      expect(r.code, r.stderr).toBe(0);
      tallied(r.stdout);
    }
    expect(kfp.state().pipelines.length).toBe(6);
    expect(kfp.state().versions.length).toBe(6);
    // One pipeline changes; four syncs of that commit race again.
    const src = path.join(dir, "evaluation_pipeline.py");
    fs.writeFileSync(src, fs.readFileSync(src, "utf8").replace(/(: float = )([0-9.]+)/, (_, h, n) => `${h}${Number(n) / 2}`));
    const second = await four();
    for (const r of second) tallied(r.stdout);
    const actions = second.map((r) => r.json().pipelines.find((p) => p.file === "evaluation_pipeline.py")!.state);
    expect(actions.filter((a) => a === "versioned").length).toBe(1);
    expect(actions.filter((a) => a === "unchanged").length).toBe(3);
    for (const r of second) expect(r.code).toBe(0);
    expect(kfp.state().versions.length).toBe(7);
  });
});

describe("bad pipeline files among good ones", () => {
  test("each bad file fails with its cause, every good pipeline in the same run is uploaded, exit 1", async () => {
    // The huge file takes several seconds on a loaded machine: a generous per-file timeout.
    const r = await run(["--host", kfp.url, "--timeout", "25", "--out-dir", scratch(), path.join(FIXTURES, "bad"), EXAMPLES], { cwd: ROOT });
    expect(r.code).toBe(1);
    const s = tallied(r.stdout);
    const good = s.pipelines.filter((p) => p.file.startsWith("examples/"));
    expect(good.map((p) => p.state)).toEqual(Array(6).fill("created"));
    const huge = s.pipelines.find((p) => p.file.endsWith("huge_pipeline.py"))!;
    expect(huge.state).toBe("failed");
    expect(huge.error.message).toContain("at most 32 MiB");
    expect(s.pipelines.find((p) => p.file.endsWith("bad_name_pipeline.py"))!.state).toBe("created"); // kfp renames it to bad-name-with-spaces
    for (const p of s.pipelines) expect(p.error?.stage === "compile" ? p.state === "failed" : ACTIONS.has(p.state), p.file).toBe(true);
  });
});

describe("secrets", () => {
  const KFP_TOKEN = "kfp-secret-token-aaaa1111";
  const KFP_COOKIE = "authservice_session=cookie-secret-bbbb2222";
  const NTFY_TOKEN = "tk_ntfysecretcccc3333";

  test("token, cookie and ntfy token appear in no output on any failure path", async () => {
    const ntfy = await startNtfyServer({ token: NTFY_TOKEN });
    const authed = await startKfpServer({ token: KFP_TOKEN });
    const multi = await startKfpServer({ multiUser: true });
    try {
      const dir = examplesCopy();
      fs.writeFileSync(path.join(dir, "broken_pipeline.py"), `# ${KFP_TOKEN} is not here\nx(:\n`.replace(KFP_TOKEN, "token"));
      const paths: [string, string[], Record<string, string>][] = [
        ["wrong token (401)", ["--host", authed.url], { KFP_TOKEN: "wrong-token-dddd4444" }],
        ["server errors", ["--host", kfp.url], {}],
        ["unreachable", ["--host", "http://127.0.0.1:9", "--retries", "0"], {}],
        ["multi-user, no namespace", ["--host", multi.url], {}],
        ["bad host", ["--host", "nota url"], {}],
        ["ntfy 401", ["--host", kfp.url], { NTFY_TOKEN: "tk_wrongeeee5555" }],
        ["verbose", ["--host", authed.url, "--verbose"], {}],
        ["dry run", ["--host", authed.url, "--dry-run", "--verbose"], {}],
      ];
      kfp.failNext(/POST/, 500, 3);
      for (const [what, args, env] of paths) {
        const outputs = path.join(scratch(), "out");
        const stepSummary = path.join(scratch(), "summary.md");
        const before = ntfy.requests.length;
        const r = await run([...args, "--out-dir", scratch()], {
          cwd: dir,
          env: { KFP_TOKEN, KFP_COOKIE, NTFY_TOKEN, NTFY_URL: `${ntfy.url}/ci`, GITHUB_OUTPUT: outputs, GITHUB_STEP_SUMMARY: stepSummary, GITHUB_ACTIONS: "true", ...env },
        });
        if (r.stdout) tallied(r.stdout);
        else tally.runs++;
        expect(r.code, what).not.toBe(0);
        const texts = [r.stdout, r.stderr, fs.existsSync(outputs) ? fs.readFileSync(outputs, "utf8") : "", fs.existsSync(stepSummary) ? fs.readFileSync(stepSummary, "utf8") : "", ...ntfy.requests.slice(before).map((q) => q.body)];
        for (const secret of [KFP_TOKEN, "cookie-secret-bbbb2222", NTFY_TOKEN, "wrong-token-dddd4444", "tk_wrongeeee5555"]) {
          for (const text of texts) expect(text.includes(secret), `${what}: ${secret} leaked`).toBe(false);
        }
      }
    } finally {
      await ntfy.stop();
      await authed.stop();
      await multi.stop();
    }
  });
});

describe("signals", () => {
  async function startAndSignal(args: string[], cwd: string, ready: RegExp, signal: "SIGINT" | "SIGTERM") {
    const proc = Bun.spawn([BIN, ...args], { cwd, env: cleanEnv(), stdout: "pipe", stderr: "pipe" });
    const stdout = new Response(proc.stdout).text();
    let stderr = "";
    const reader = proc.stderr.getReader();
    const decoder = new TextDecoder();
    while (!ready.test(stderr)) {
      const { value, done } = await reader.read();
      if (done) break;
      stderr += decoder.decode(value);
    }
    proc.kill(signal);
    const rest = (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        stderr += decoder.decode(value);
      }
    })();
    const code = await proc.exited;
    await rest;
    const out = await stdout;
    tallied(out);
    return { code, stdout: out, stderr };
  }

  test("SIGINT during compile: children ended, summary still printed, exit 130", async () => {
    const dir = scratch({ "spin_pipeline.py": "import time\nwhile True:\n    time.sleep(0.1)  # kfp-sync-signal-test\n" });
    fs.copyFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), path.join(dir, "a_pipeline.py"));
    const r = await startAndSignal(["--dry-run", "--timeout", "60"], dir, /a_pipeline\.py → /, "SIGINT");
    expect(r.code).toBe(130);
    const s = JSON.parse(r.stdout);
    expect(s.interrupted).toBe("SIGINT");
    expect(s.pipelines.find((p: any) => p.file === "a_pipeline.py").state).toBe("compiled");
    expect(s.pipelines.find((p: any) => p.file === "spin_pipeline.py").error.message).toContain("interrupted");
    await Bun.sleep(200);
    expect(processesIn(dir)).toEqual([]);
  });

  test("SIGINT while a request hangs: cut off at once, not after timeouts and retries", async () => {
    proxy.add({ method: "GET", path: /healthz/, fault: { kind: "stall", ms: 20_000 } });
    const dir = examplesCopy();
    const started = performance.now();
    const r = await startAndSignal(["--host", proxy.url, "--out-dir", scratch(), "evaluation_pipeline.py"], dir, /evaluation_pipeline\.py → /, "SIGINT");
    expect(r.code).toBe(130);
    expect(performance.now() - started).toBeLessThan(10_000);
    const s = JSON.parse(r.stdout);
    expect(s.interrupted).toBe("SIGINT");
    expect(s.pipelines[0].error.message).toContain("interrupted");
  });

  test("SIGTERM during upload: uploads in flight are cut off and reported, the server matches the report, exit 143", async () => {
    // Every upload takes 1.5 s, so the signal surely lands while the first four are in flight.
    proxy.add({ method: "POST", path: UPLOAD, fault: { kind: "stall", ms: 1500 } });
    const dir = examplesCopy();
    const r = await startAndSignal(["--host", proxy.url, "--out-dir", scratch()], dir, /KFP server/, "SIGTERM");
    expect(r.code).toBe(143);
    const s = JSON.parse(r.stdout);
    expect(s.interrupted).toBe("SIGTERM");
    for (const p of s.pipelines) expect(ACTIONS.has(p.state), p.file).toBe(true);
    const created = s.pipelines.filter((p: any) => p.state === "created").length;
    expect(kfp.state().pipelines.length).toBe(created);
    expect(s.pipelines.some((p: any) => p.error?.message.includes("interrupted"))).toBe(true);
  });
});
