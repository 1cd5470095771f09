/** Stage 4, notify: the binary against the ntfy-faithful server on loopback. */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { buildNotification, fitList } from "../kfp-sync.ts";
import { EXAMPLES, examplesCopy, run, scratch } from "./helpers";
import { startKfpServer, type KfpServer } from "./kfp-server";
import { startNtfyServer, type NtfyServer } from "./ntfy-server";

const NTFY_TOKEN = "tk_notifysecret0123456789abcdef";
const RUN_ENV = { GITHUB_SERVER_URL: "https://gitea.example/", GITHUB_REPOSITORY: "ml/pipelines", GITHUB_RUN_NUMBER: "42", GITHUB_RUN_ID: "9001", GITEA_ACTIONS: "true", KFP_SYNC_GITEA_VERSION: "1.25.3" };

describe("notify", () => {
  let kfp: KfpServer;
  let ntfy: NtfyServer;
  beforeAll(async () => {
    kfp = await startKfpServer();
    ntfy = await startNtfyServer({ token: NTFY_TOKEN });
  });
  afterAll(async () => {
    await kfp.stop();
    await ntfy.stop();
  });
  beforeEach(() => {
    kfp.reset();
    ntfy.published.length = 0;
    ntfy.requests.length = 0;
  });
  const sync = (dir: string, args: string[] = [], env: Record<string, string> = {}) =>
    run(["--host", kfp.url, "--out-dir", scratch(), "--version-tag", "v20260213-143022", ...args], {
      cwd: dir,
      env: { NTFY_URL: `${ntfy.url}/gitea-ci`, NTFY_TOKEN, ...RUN_ENV, ...env },
    });

  test("success: counts, version tag, run link and KFP link; default priority; token sent, never echoed", async () => {
    const r = await sync(examplesCopy());
    expect(r.code).toBe(0);
    expect(ntfy.published.length).toBe(1);
    const note = ntfy.published[0]!;
    expect(note.topic).toBe("gitea-ci");
    expect(note.title).toBe("ml/pipelines: kfp-sync ok, 6 uploaded");
    expect(note.message).toContain("compiled 6 · uploaded 6 (created 6, versioned 0) · unchanged 0 · failed 0");
    expect(note.message).toContain("version v20260213-143022");
    expect(note.message).toContain("run: https://gitea.example/ml/pipelines/actions/runs/42");
    expect(note.message).toContain(`kubeflow: ${kfp.url}/#/pipelines`);
    expect(note.priority ?? 3).toBe(3);
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
    const note = ntfy.published[0]!;
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
    const note = ntfy.published[0]!;
    expect(note.title).toBe("ml/pipelines: kfp-sync failed: all 45 pipelines");
    expect(Buffer.byteLength(note.message!)).toBeLessThanOrEqual(4096);
    const more = /and (\d+) more/.exec(note.message!);
    expect(more).not.toBeNull();
    const listed = (note.message!.match(/_pipeline\.py/g) ?? []).length;
    expect(listed + Number(more![1])).toBe(45);
  });

  test("best effort: 401, 500 and an unreachable ntfy are warnings, the sync still succeeds", async () => {
    for (const status of [401, 500]) {
      ntfy.failNext(status);
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
    ntfy.failNext(401);
    const required = await sync(examplesCopy(), ["evaluation_pipeline.py", "--ntfy-required"]);
    expect(required.code).toBe(1);
    expect(required.stderr).toContain("check NTFY_TOKEN");
    expect(required.stdout + required.stderr).not.toContain(NTFY_TOKEN);
  });

  test("429: backs off and publishes once ntfy lets it", async () => {
    ntfy.failNext(429, 2);
    const r = await sync(examplesCopy(), ["evaluation_pipeline.py"]);
    expect(r.code).toBe(0);
    expect(ntfy.requests.filter((q) => q.status === 429).length).toBe(2);
    expect(ntfy.published.length).toBe(1);
    expect(r.stderr).toContain("notified");
  });

  test("user:password is sent as Basic auth", async () => {
    const basic = await startNtfyServer({ basic: { user: "ci", password: "pa55-word-xyz" } });
    try {
      const r = await sync(examplesCopy(), ["evaluation_pipeline.py"], { NTFY_URL: `${basic.url}/gitea-ci`, NTFY_TOKEN: "ci:pa55-word-xyz" });
      expect(r.code).toBe(0);
      expect(basic.published.length).toBe(1);
      expect(r.stdout + r.stderr).not.toContain("pa55-word-xyz");
    } finally {
      await basic.stop();
    }
  });

  test("--dry-run prints the notification it would send and sends nothing", async () => {
    const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: EXAMPLES, env: { NTFY_URL: `${ntfy.url}/gitea-ci`, NTFY_TOKEN, ...RUN_ENV } });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`dry run: would notify ${ntfy.url}/gitea-ci`);
    expect(r.stderr).toContain('"topic": "gitea-ci"');
    expect(ntfy.requests.length).toBe(0);
  });

  test("no NTFY_URL (or the secret is empty, as an unset one reaches the job): no notification, and the log says so", async () => {
    const r = await run(["--host", kfp.url, "--out-dir", scratch(), "evaluation_pipeline.py"], { cwd: examplesCopy(), env: { NTFY_URL: "" } });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("no notification: NTFY_URL (--ntfy-url) is not set");
    expect(ntfy.requests.length).toBe(0);
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

  test("a huge multi-byte failure list still fits 4,096 bytes", () => {
    const pipelines = Array.from({ length: 500 }, (_, i) => ({ file: `${"é".repeat(40)}_${i}_pipeline.py`, status: "failed" as const, timings: {} }));
    const note = buildNotification(
      {
        schemaVersion: 1,
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
    expect(Buffer.byteLength(note.message)).toBeLessThanOrEqual(4096);
    expect(note.message).toMatch(/and \d+ more/);
  });
});
