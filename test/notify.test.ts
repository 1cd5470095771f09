/** Stage 4, notify: the binary against the ntfy-faithful server on loopback. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { buildNotification, fitList, publish, unreadableNtfyAuth, type Summary } from "../kfp-sync.ts";
import { BIN, cleanEnv, EXAMPLES, examplesCopy, run, scratch, withServer } from "./helpers";
import { startFaultProxy } from "./fault-proxy";
import { startNtfyServer } from "./ntfy-server";
import { usePeers } from "./with-server.ts";

const NTFY_TOKEN = "tk_notifysecret0123456789abcdef";
const RUN_ENV = { GITHUB_SERVER_URL: "https://gitea.example/", GITHUB_REPOSITORY: "ml/pipelines", GITHUB_RUN_NUMBER: "42", GITHUB_RUN_ID: "9001", GITEA_ACTIONS: "true", KFP_SYNC_GITEA_VERSION: "1.25.3" };

describe("notify", () => {
  const peers = usePeers({ ntfy: { token: NTFY_TOKEN } });
  const sync = (dir: string, args: string[] = [], env: Record<string, string> = {}) =>
    run(["--host", peers.kfp.url, "--out-dir", scratch(), "--version-tag", "v20260213-143022", ...args], {
      cwd: dir,
      env: { NTFY_URL: `${peers.ntfy.url}/gitea-ci`, NTFY_TOKEN, ...RUN_ENV, ...env },
    });

  test("success: counts, version tag, run link and KFP link; default priority; token sent, never echoed", async () => {
    const r = await sync(examplesCopy());
    expect(r.code).toBe(0);
    expect(peers.ntfy.published.length).toBe(1);
    const note = peers.ntfy.published[0]!;
    expect(note.topic).toBe("gitea-ci");
    expect(note.title).toBe("ml/pipelines: kfp-sync ok, 6 uploaded");
    expect(note.message).toContain("compiled 6 · uploaded 6 (created 6, versioned 0) · unchanged 0 · failed 0");
    expect(note.message).toContain("version v20260213-143022");
    expect(note.message).toContain("run: https://gitea.example/ml/pipelines/actions/runs/42");
    expect(note.message).toContain(`kubeflow: ${peers.kfp.url}/#/pipelines`);
    // Sent, not left to ntfy's default: a dropped priority would also read as 3 on the server.
    expect(JSON.parse(note.raw).priority).toBe(3);
    expect(note.tags).toEqual(["white_check_mark", "kubeflow"]);
    expect(note.click).toBe("https://gitea.example/ml/pipelines/actions/runs/42");
    expect(note.headers.authorization).toBe(`Bearer ${NTFY_TOKEN}`);
    expect(note.headers["content-type"]).toContain("application/json");
    for (const text of [r.stdout, r.stderr, note.raw]) expect(text).not.toContain(NTFY_TOKEN);
  });

  test("partial failure: high priority, warning tag, the failed names; non-ASCII survives", async () => {
    const dir = examplesCopy();
    fs.writeFileSync(path.join(dir, "café_pipeline.py"), "def broken(:\n");
    const r = await sync(dir);
    expect(r.code).toBe(1);
    const note = peers.ntfy.published[0]!;
    expect(note.title).toBe("ml/pipelines: kfp-sync: 1 of 7 pipelines failed");
    expect(note.priority).toBe(4);
    expect(note.tags).toContain("warning");
    expect(note.message).toContain("failed: café_pipeline.py");
    expect(note.message).toContain("failed 1");
  });

  test("total failure: every name listed, cut to ntfy's 4,096 bytes with 'and N more'", async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 45; i++) files[`${"very_long_pipeline_file_name_for_the_team_".repeat(2)}${String(i).padStart(2, "0")}_pipeline.py`] = "syntax error here\n";
    const r = await sync(scratch(files), ["--jobs", "2"]);
    expect(r.code).toBe(1);
    const note = peers.ntfy.published[0]!;
    expect(note.title).toBe("ml/pipelines: kfp-sync failed: all 45 pipelines");
    expect(Buffer.byteLength(note.message!)).toBeLessThan(4096);
    const more = /and (\d+) more/.exec(note.message!);
    expect(more).not.toBeNull();
    const listed = (note.message!.match(/_pipeline\.py/g) ?? []).length;
    expect(listed + Number(more![1])).toBe(45);
  });

  test("best effort: 401, 500 and an unreachable ntfy are warnings, the sync still succeeds", async () => {
    for (const status of [401, 500]) {
      peers.ntfy.failNext(status);
      const r = await sync(examplesCopy(), ["evaluation_pipeline.py"]);
      expect(r.code, String(status)).toBe(0);
      expect(r.stderr).toContain(`notification not sent: HTTP ${status}`);
      expect(r.stderr).toContain("the sync itself is unaffected");
      expect(r.json().problems.map((p) => p.stage)).toEqual(["notify"]);
    }
    const gone = await sync(examplesCopy(), ["evaluation_pipeline.py"], { NTFY_URL: "http://127.0.0.1:9/gitea-ci" });
    expect(gone.code).toBe(0);
    expect(gone.stderr).toContain("notification not sent");
    // --ntfy-required turns it into a failed run.
    peers.ntfy.failNext(401);
    const required = await sync(examplesCopy(), ["evaluation_pipeline.py", "--ntfy-required"]);
    expect(required.code).toBe(1);
    expect(required.stderr).toContain("check NTFY_TOKEN");
    expect(required.stdout + required.stderr).not.toContain(NTFY_TOKEN);
  });

  test("429: backs off and publishes once ntfy lets it", async () => {
    peers.ntfy.failNext(429, 2);
    const r = await sync(examplesCopy(), ["evaluation_pipeline.py"]);
    expect(r.code).toBe(0);
    expect(peers.ntfy.requests.filter((q) => q.status === 429).length).toBe(2);
    expect(peers.ntfy.published.length).toBe(1);
    expect(r.stderr).toContain("notified");
  });

  test("user:password is sent as Basic auth", async () => {
    await withServer(startNtfyServer({ basic: { user: "ci", password: "pa55-word-xyz" } }), async (basic) => {
      const r = await sync(examplesCopy(), ["evaluation_pipeline.py"], { NTFY_URL: `${basic.url}/gitea-ci`, NTFY_TOKEN: "ci:pa55-word-xyz" });
      expect(r.code).toBe(0);
      expect(basic.published.length).toBe(1);
      expect(r.stdout + r.stderr).not.toContain("pa55-word-xyz");
    });
  });

  test("--dry-run prints the notification it would send and sends nothing", async () => {
    const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: EXAMPLES, env: { NTFY_URL: `${peers.ntfy.url}/gitea-ci`, NTFY_TOKEN, ...RUN_ENV } });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`dry run: would notify ${peers.ntfy.url}/gitea-ci`);
    expect(r.stderr).toContain('"topic": "gitea-ci"');
    expect(peers.ntfy.requests.length).toBe(0);
  });

  test("no NTFY_URL (or the secret is empty, as an unset one reaches the job): no notification, and the log says so once", async () => {
    const r = await run(["--host", peers.kfp.url, "--out-dir", scratch(), "evaluation_pipeline.py"], { cwd: examplesCopy(), env: { NTFY_URL: "" } });
    expect(r.code).toBe(0);
    expect(r.stderr.match(/notification/g)).toEqual(["notification"]);
    expect(r.stderr).toContain("ℹ no --ntfy-url/NTFY_URL: no notification is sent");
    // An empty NTFY_URL is no URL, not a bad one: no usage error, no notify problem.
    expect(r.json().problems).toEqual([]);
  });

  test("priority goes as a JSON integer (ntfy refuses names and strings in JSON)", async () => {
    const dir = examplesCopy();
    fs.writeFileSync(path.join(dir, "broken_pipeline.py"), "def broken(:\n");
    await sync(dir);
    expect(peers.ntfy.published[0]!.raw).toContain('"priority":4');
    await sync(examplesCopy(), ["evaluation_pipeline.py"]);
    expect(peers.ntfy.published[1]!.raw).toContain('"priority":3');
  });

  test("file names full of quotes, backslashes and control characters: the whole JSON request stays under ntfy's 8,192 bytes", async () => {
    // One byte each in the message, two (" and \\) or six (\u001b) in the JSON body: a budget on
    // the message alone lets the body pass 8,192 bytes, which real ntfy refuses with 413.
    const files: Record<string, string> = {};
    for (let i = 0; i < 40; i++) files[`${'"\\\x1b'.repeat(20)}${String(i).padStart(2, "0")}_pipeline.py`] = "syntax error here\n";
    const r = await sync(scratch(files), ["--jobs", "2"]);
    expect(r.code).toBe(1);
    expect(r.stderr).not.toContain("notification not sent");
    expect(peers.ntfy.published.length).toBe(1);
    const note = peers.ntfy.published[0]!;
    expect(Buffer.byteLength(note.raw)).toBeLessThanOrEqual(8191);
    expect(Buffer.byteLength(note.message!)).toBeLessThan(4096);
    const more = /and (\d+) more/.exec(note.message!);
    expect(more).not.toBeNull();
    const listed = (note.message!.match(/_pipeline\.py/g) ?? []).length;
    expect(listed).toBeGreaterThan(0);
    expect(listed + Number(more![1])).toBe(40);
  });

  test("user:password is Basic even when the user name starts with tk_", async () => {
    await withServer(startNtfyServer({ basic: { user: "tk_bot", password: "bot-pa55-word" } }), async (basic) => {
      const r = await sync(examplesCopy(), ["evaluation_pipeline.py"], { NTFY_URL: `${basic.url}/gitea-ci`, NTFY_TOKEN: "tk_bot:bot-pa55-word" });
      expect(r.code).toBe(0);
      expect(basic.published.length).toBe(1);
      expect(basic.published[0]!.headers.authorization).toBe(`Basic ${Buffer.from("tk_bot:bot-pa55-word").toString("base64")}`);
      expect(r.stdout + r.stderr).not.toContain("bot-pa55-word");
    });
  });

  test("?auth= that ntfy can read (base64url, no padding, of the whole header) publishes and is never printed", async () => {
    const auth = Buffer.from(`Bearer ${NTFY_TOKEN}`).toString("base64url");
    const r = await sync(examplesCopy(), ["evaluation_pipeline.py"], { NTFY_URL: `${peers.ntfy.url}/gitea-ci?auth=${auth}`, NTFY_TOKEN: "" });
    expect(r.code).toBe(0);
    expect(peers.ntfy.published.length).toBe(1);
    expect(r.stderr).toContain(`notified ${peers.ntfy.url}/gitea-ci`);
    for (const secret of [auth, NTFY_TOKEN]) expect(r.stdout + r.stderr).not.toContain(secret);
  });

  test("?auth= that ntfy cannot read is refused before any upload, says how to write it, never echoes it", async () => {
    const basicHeader = `Basic ${Buffer.from("tk_bot:bot-pa55-word").toString("base64")}`; // needs padding
    const cases: [string, string][] = [
      [Buffer.from(basicHeader).toString("base64"), "= padding"],
      [Buffer.from(`Bearer ${NTFY_TOKEN}>>>?`).toString("base64").replace(/=+$/, ""), "standard base64"],
      [NTFY_TOKEN, "does not decode to an Authorization value"],
    ];
    for (const [value, why] of cases) {
      const r = await sync(examplesCopy(), [], { NTFY_URL: `${peers.ntfy.url}/gitea-ci?auth=${encodeURIComponent(value)}`, NTFY_TOKEN: "" });
      expect(r.code, why).toBe(2);
      expect(r.stderr).toContain("ntfy cannot read its auth= parameter");
      expect(r.stderr).toContain(why);
      expect(r.stderr).toContain("base64url without padding");
      expect(r.stdout + r.stderr).not.toContain(value);
      expect(r.stdout + r.stderr).not.toContain(encodeURIComponent(value));
      expect(peers.kfp.state().pipelines.length).toBe(0);
    }
    expect(peers.ntfy.requests.length).toBe(0);
  });

  test("NTFY_URL errors name the ntfy options and repeat no credentials", async () => {
    const withUser = await sync(examplesCopy(), [], { NTFY_URL: `http://ci:url-pa55-word@127.0.0.1:1/gitea-ci` });
    expect(withUser.code).toBe(2);
    expect(withUser.stderr).toContain("NTFY_TOKEN");
    expect(withUser.stderr).not.toContain("KFP_COOKIE");
    expect(withUser.stderr).not.toContain("url-pa55-word");
    const auth = Buffer.from(`Bearer ${NTFY_TOKEN}`).toString("base64url");
    const noTopic = await sync(examplesCopy(), [], { NTFY_URL: `${peers.ntfy.url}/?auth=${auth}` });
    expect(noTopic.code).toBe(2);
    expect(noTopic.stderr).toContain("must end with a topic name");
    expect(noTopic.stderr).not.toContain(auth);
  });

  test("429 with 42909 (too many failed logins from this address) is not retried and says why", async () => {
    await withServer(startNtfyServer({ token: NTFY_TOKEN }), async (limited) => {
      // What a runner meets after a wrong NTFY_TOKEN was tried 30 times from its address.
      for (let i = 0; i < 30; i++) {
        const res = await fetch(limited.url, { method: "POST", headers: { Authorization: "Bearer tk_wrong000000000000000000000000" }, body: '{"topic":"gitea-ci"}' });
        expect(res.status).toBe(401);
      }
      const r = await sync(examplesCopy(), ["evaluation_pipeline.py"], { NTFY_URL: `${limited.url}/gitea-ci` });
      expect(r.code).toBe(0);
      const sent = limited.requests.filter((q) => q.headers.authorization === `Bearer ${NTFY_TOKEN}`);
      expect(sent.map((q) => q.status)).toEqual([429]);
      expect(r.stderr).toContain("HTTP 429 — limit reached: too many auth failures");
      expect(r.stderr).toContain("earlier credentials from this address were refused");
      expect(r.stderr).toContain("wait a minute");
      expect(r.stderr).not.toContain("gave up");
    });
  });

  test("--ntfy-required and a failed notification: the last line says the run failed and why", async () => {
    peers.ntfy.failNext(401);
    const r = await sync(examplesCopy(), ["evaluation_pipeline.py", "--ntfy-required"]);
    expect(r.code).toBe(1);
    const last = r.stderr.trimEnd().split("\n").at(-1)!;
    expect(last).toStartWith("✖ run failed, --ntfy-required: notification not sent: HTTP 401");
    // Without --ntfy-required the same failure leaves a green last line.
    peers.ntfy.failNext(401);
    const optional = await sync(examplesCopy(), ["evaluation_pipeline.py"]);
    expect(optional.code).toBe(0);
    expect(optional.stderr.trimEnd().split("\n").at(-1)!).toStartWith("✔ 1/1 compiled");
  });

  /** A run with one pipeline that compiles and one that never ends; SIGTERM once `ready` holds. */
  async function interrupted(env: Record<string, string> = {}, ready?: () => boolean) {
    const dir = scratch({ "spin_pipeline.py": "import time\nwhile True:\n    time.sleep(0.1)\n" });
    fs.copyFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), path.join(dir, "a_pipeline.py"));
    const args = ["--host", peers.kfp.url, "--out-dir", scratch(), "--version-tag", "v20260213-143022", "--timeout", "60"];
    if (ready) args.push("a_pipeline.py");
    const proc = Bun.spawn([BIN, ...args], { cwd: dir, env: cleanEnv({ NTFY_URL: `${peers.ntfy.url}/gitea-ci`, NTFY_TOKEN, ...RUN_ENV, ...env }), stdout: "pipe", stderr: "pipe" });
    const stdout = new Response(proc.stdout).text();
    const reader = proc.stderr.getReader();
    const decoder = new TextDecoder();
    let stderr = "";
    if (ready) while (!ready() && proc.exitCode === null) await Bun.sleep(20);
    else {
      while (!/a_pipeline\.py → /.test(stderr)) {
        const { value, done } = await reader.read();
        if (done) break;
        stderr += decoder.decode(value);
      }
    }
    proc.kill("SIGTERM");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      stderr += decoder.decode(value);
    }
    return { code: await proc.exited, stderr, summary: JSON.parse(await stdout) as Summary };
  }

  test("SIGTERM: one final notification says the run was interrupted", async () => {
    const r = await interrupted();
    expect(r.code).toBe(143);
    expect(peers.ntfy.published.length).toBe(1);
    const note = peers.ntfy.published[0]!;
    expect(note.title).toBe("ml/pipelines: kfp-sync interrupted (SIGTERM)");
    expect(note.message).toContain("interrupted by SIGTERM");
    expect(note.priority).toBe(4);
    expect(r.stderr).toContain(`notified ${peers.ntfy.url}/gitea-ci that the run was interrupted`);
    expect(r.summary.problems.filter((p) => p.stage === "notify")).toEqual([]);
  });

  test("SIGTERM while the notification hangs: cut off, then the final notification says the run was interrupted", async () => {
    await withServer(startFaultProxy(peers.ntfy.url), async (proxy) => {
      proxy.add({ method: "POST", times: 1, fault: { kind: "stall", ms: 60_000 } });
      const r = await interrupted({ NTFY_URL: `${proxy.url}/gitea-ci` }, () => proxy.injected.length === 1);
      expect(r.code).toBe(143);
      expect(r.summary.pipelines[0]!.state).toBe("created");
      expect(peers.ntfy.published.map((n) => n.title)).toEqual(["ml/pipelines: kfp-sync interrupted (SIGTERM)"]);
      expect(r.stderr).toContain("that the run was interrupted");
      expect(r.stderr).not.toContain("cannot reach");
    });
  });

  test("SIGTERM and ntfy refuses the final notification: reported as not sent, with ntfy's answer", async () => {
    peers.ntfy.failNext(500);
    const r = await interrupted();
    expect(r.code).toBe(143);
    expect(peers.ntfy.requests.length).toBe(1);
    const problems = r.summary.problems.filter((p) => p.stage === "notify").map((p) => p.message);
    expect(problems).toEqual(["the run was interrupted; notification not sent: HTTP 500 — internal server error"]);
    expect(r.stderr).not.toContain("cannot reach");
  });
});

describe("publish", () => {
  test("429 request limit: backs off 1, 2, 4 s and says how many requests it really sent", async () => {
    await withServer(startNtfyServer({ token: NTFY_TOKEN }), async (server) => {
      server.failNext(429, 10);
      const slept: number[] = [];
      const note = { topic: "gitea-ci", title: "t", message: "m", priority: 3, tags: [] };
      const error = await publish({ url: `${server.url}/gitea-ci`, token: NTFY_TOKEN, required: false }, note, 5000, undefined, async (ms) => void slept.push(ms)).catch((e: Error) => e);
      expect(slept).toEqual([1000, 2000, 4000]);
      expect(server.requests.length).toBe(4);
      expect((error as Error).message).toContain(`gave up after ${server.requests.length} tries`);
    });
  });

  test("no answer within the timeout is said as such, not as 'cannot reach'", async () => {
    const server = await startNtfyServer({ token: NTFY_TOKEN });
    const proxy = await startFaultProxy(server.url);
    try {
      proxy.add({ method: "POST", fault: { kind: "stall", ms: 60_000 } });
      const note = { topic: "gitea-ci", title: "t", message: "m", priority: 3, tags: [] };
      const error = await publish({ url: `${proxy.url}/gitea-ci`, token: NTFY_TOKEN, required: false }, note, 300).catch((e: Error) => e);
      expect((error as Error).message).toContain(`no answer from ${new URL(proxy.url).host} within 0.3 s`);
      expect(server.requests.length).toBe(0);
    } finally {
      await proxy.stop();
      await server.stop();
    }
  });
});

describe("?auth= as ntfy reads it (the recorded auth-query-* cases)", () => {
  const raw = (text: string) => Buffer.from(text).toString("base64url");
  const b64 = (text: string) => Buffer.from(text).toString("base64");
  test.each([
    ["Bearer token, base64url raw", raw("Bearer tk_0123456789abcdefghijklmnopqrs"), undefined],
    ["Basic user:password, base64url raw", raw(`Basic ${b64("ci:pass word")}`), undefined],
    ["lower-case basic (Go's BasicAuth ignores the case)", raw(`basic ${b64("ci:pw")}`), undefined],
    ["padded standard base64 (ntfy: 500)", b64(`Basic ${b64("tk_bot:bot-pa55-word")}`), "= padding"],
    ["lower-case bearer (ntfy: parsed as Basic, 401)", raw("bearer tk_0123456789abcdefghijklmnopqrs"), "does not decode"],
    ["the bare token (ntfy: anonymous, 403)", "tk_0123456789abcdefghijklmnopqrs", "does not decode"],
    ["Basic of something without a colon", raw(`Basic ${b64("justatoken")}`), "does not decode"],
    ["not base64 at all", "a.b", "not base64url"],
  ])("%s", (_, value, why) => {
    if (why === undefined) expect(unreadableNtfyAuth(value)).toBeUndefined();
    else expect(unreadableNtfyAuth(value)).toContain(why);
  });
});

describe("notification content (pure)", () => {
  test("fitList keeps within the budget and counts what it cut", () => {
    const names = Array.from({ length: 300 }, (_, i) => `pipeline-${i}`);
    const text = fitList(names, 200);
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(200);
    const shown = text.split(" and ")[0]!.split(", ").length;
    expect(text).toEndWith(`and ${300 - shown} more`);
    expect(fitList(["a", "b"], 100)).toBe("a, b");
  });

  test("links too long for ntfy's 8,192-byte body: the counts still go out", () => {
    const runUrl = `https://gitea.example/a/b/actions/runs/1?${"x".repeat(3000)}`;
    const summary = {
      schemaVersion: 2 as const,
      tool: { name: "kfp-sync" as const, version: "x" },
      dryRun: false,
      versionTag: "v1",
      counts: { found: 2, compiled: 1, uploaded: 1, created: 1, versioned: 0, unchanged: 0, failed: 1 },
      pipelines: [{ file: "a_pipeline.py", state: "failed" as const, timings: {} }, { file: "b_pipeline.py", state: "created" as const, timings: {} }],
      problems: [],
      durationMs: 1,
      runUrl,
    };
    const note = buildNotification(summary, "t", "ml/pipelines", `https://kubeflow.example/${"y".repeat(2000)}`);
    expect(Buffer.byteLength(JSON.stringify(note))).toBeLessThanOrEqual(8191);
    expect(Buffer.byteLength(note.message)).toBeLessThan(4096);
    expect(note.title).toBe("ml/pipelines: kfp-sync: 1 of 2 pipelines failed");
    expect(note.message).toContain("compiled 1 · uploaded 1 (created 1, versioned 0) · unchanged 0 · failed 1");
    expect(note.message).toContain("failed: 1 pipeline");
    expect(note.priority).toBe(4);
  });

  test("a huge multi-byte failure list still fits 4,096 bytes", () => {
    const pipelines = Array.from({ length: 500 }, (_, i) => ({ file: `${"é".repeat(40)}_${i}_pipeline.py`, state: "failed" as const, timings: {} }));
    const note = buildNotification(
      {
        schemaVersion: 2,
        tool: { name: "kfp-sync", version: "x" },
        dryRun: false,
        versionTag: "v1",
        counts: { found: 500, compiled: 0, uploaded: 0, created: 0, versioned: 0, unchanged: 0, failed: 500 },
        pipelines,
        problems: [],
        durationMs: 1,
        runUrl: "https://gitea.example/a/b/actions/runs/1",
      },
      "t",
    );
    expect(Buffer.byteLength(note.message)).toBeLessThan(4096);
    expect(note.message).toMatch(/and \d+ more/);
  });
});
