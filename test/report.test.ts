/**
 * What leaves the process for people and for CI: hostile file names stay one escaped line, and no
 * secret appears in any output in any form (as given, JSON-escaped, URL-encoded, base64, cut short).
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { secretsOf, writerFor } from "../kfp-sync.ts";
import { EXAMPLES, examplesCopy, parseOutputs, run, scratch } from "./helpers";
import { usePeers } from "./with-server.ts";

const peers = usePeers();

/** A run with every output the runner offers; returns each output's text. */
async function runWithOutputs(dir: string, args: string[], env: Record<string, string> = {}) {
  const files = scratch();
  const outputs = path.join(files, "outputs");
  const stepSummary = path.join(files, "summary.md");
  const r = await run([...args, "--out-dir", scratch()], {
    cwd: dir,
    env: { NTFY_URL: `${peers.ntfy.url}/ci`, GITHUB_OUTPUT: outputs, GITHUB_STEP_SUMMARY: stepSummary, GITHUB_ACTIONS: "true", ...env },
  });
  const read = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "");
  return { ...r, outputs: read(outputs), stepSummary: read(stepSummary), notifications: peers.ntfy.requests.map((q) => q.body) };
}

describe("file names with newlines and control characters", () => {
  const EVIL = "evil\n::error::pwned_pipeline.py";
  const BELL = "tab\tbell\u0007\u202e_pipeline.py";

  test("escaped in the log, step summary, notification, annotations and step outputs; exact in the JSON", async () => {
    const dir = examplesCopy();
    fs.writeFileSync(path.join(dir, EVIL), "x(:\n");
    fs.writeFileSync(path.join(dir, BELL), "x(:\n");
    const r = await runWithOutputs(dir, ["--host", peers.kfp.url]);
    expect(r.code).toBe(1);
    const s = r.json();
    expect(s.pipelines.filter((p) => p.state === "failed").map((p) => p.file)).toEqual([EVIL, BELL]);

    const shownEvil = "evil\\n::error::pwned_pipeline.py";
    const shownBell = "tab\\tbell\\u0007\\u202e_pipeline.py";
    for (const [where, text] of [["log", r.stderr], ["step summary", r.stepSummary], ["step outputs", r.outputs]] as const) {
      const lines = text.split("\n");
      expect(lines.filter((l) => l.startsWith("::") && !l.startsWith("::error file=")), where).toEqual([]);
      expect(text.includes("\u0007") || text.includes("\u202e"), where).toBe(false);
    }
    expect(r.stderr).toContain(shownEvil);
    expect(r.stderr.split("\n").filter((l) => l.startsWith("::error file="))).toHaveLength(2);
    expect(r.stepSummary).toContain(shownBell);

    // One name, one entry.
    expect(parseOutputs(r.outputs).get("failed_pipelines")!.split("\n")).toEqual([shownEvil, shownBell]);

    const note = JSON.parse(r.notifications[0]!);
    expect(note.message).toContain(`failed: ${shownEvil}, ${shownBell}`);
  });
});

describe("secrets", () => {
  // Characters JSON and URLs escape, after a plain head (so a cut prefix is plain text).
  const TOKEN = 'tok-0123456789abcdef"quote\\back/slash+plus=eq';
  const NTFY_TOKEN = "alice:ntfy-pass-0123456789";
  const forms = (secret: string) => [
    secret,
    encodeURIComponent(secret),
    JSON.stringify(secret).slice(1, -1),
    JSON.stringify(JSON.stringify(secret).slice(1, -1)).slice(1, -1),
    Buffer.from(secret).toString("base64"),
  ];
  const leaks = (texts: string[], needles: string[]) => needles.filter((n) => texts.some((t) => t.includes(n)));

  test("a server that echoes the token URL-encoded, JSON-escaped or as a Basic header: scrubbed everywhere", async () => {
    peers.kfp.failNext(/healthz/, 401, 1, `denied: ${encodeURIComponent(TOKEN)} | ${JSON.stringify(TOKEN).slice(1, -1)} | Basic ${Buffer.from(NTFY_TOKEN).toString("base64")}`);
    const r = await runWithOutputs(examplesCopy(), ["--host", peers.kfp.url, "evaluation_pipeline.py"], { KFP_TOKEN: TOKEN, NTFY_TOKEN });
    expect(r.code).toBe(1);
    expect(r.json().pipelines[0]!.error.message).toContain("denied: *** | *** | ***");
    expect(leaks([r.stdout, r.stderr, r.outputs, r.stepSummary, ...r.notifications], [...forms(TOKEN), ...forms(NTFY_TOKEN)])).toEqual([]);
  });

  test("a token cut short by a length limit: its head is scrubbed too", async () => {
    // Server messages are cut at 500 characters: this one is cut 12 characters into the token.
    peers.kfp.failNext(/healthz/, 401, 1, `${"x".repeat(488)}${TOKEN}`);
    const r = await runWithOutputs(examplesCopy(), ["--host", peers.kfp.url, "evaluation_pipeline.py"], { KFP_TOKEN: TOKEN });
    expect(r.code).toBe(1);
    expect(r.json().pipelines[0]!.error.message).toMatch(/x\*\*\* \(no identity reached the server/);
    expect(leaks([r.stdout, r.stderr, r.outputs, r.stepSummary, ...r.notifications], [TOKEN.slice(0, 12)])).toEqual([]);
  });

  test("URL errors never echo credentials or ?auth=; the ntfy URL error names the ntfy options", async () => {
    const cases: [string[], Record<string, string>, string, string[]][] = [
      [["--host", "http://bob:urlpass-0123@bad host"], {}, "is not a URL", ["urlpass-0123"]],
      [["--host", "ftp://bob:urlpass-0123@host"], {}, "must start with http:// or https://", ["urlpass-0123"]],
      [[], { NTFY_URL: "http://ntfy.local/?auth=QmFzaWMgYWxpY2U6cGFzcw" }, "must end with a topic name", ["QmFzaWMgYWxpY2U6cGFzcw"]],
      [[], { NTFY_URL: "http://ntfy.local/a%20b?auth=QmFzaWMgYWxpY2U6cGFzcw" }, "must end with a topic name", ["QmFzaWMgYWxpY2U6cGFzcw"]],
      [[], { NTFY_URL: "http://alice:ntfypass-0123@ntfy.local/ci" }, "--ntfy-url/NTFY_URL must not carry credentials: give a tk_ token or user:password in --ntfy-token/NTFY_TOKEN", ["ntfypass-0123", "KFP_COOKIE"]],
    ];
    for (const [args, env, message, absent] of cases) {
      const r = await run(["--dry-run", ...args], { cwd: EXAMPLES, env });
      expect(r.code, message).toBe(2);
      expect(r.stderr, message).toContain(message);
      for (const text of absent) expect(r.stderr, message).not.toContain(text);
    }
  });
});

describe("secrets are collected once and every output goes through one scrubbing writer", () => {
  test("secretsOf: KFP token (flag, env, token file), cookie values, ntfy token and ?auth=, the CI job's tokens", () => {
    const tokenFile = path.join(scratch({ token: "file-token-0123456789\n" }), "token");
    const auth = Buffer.from("Bearer tk_inurl0123456789").toString("base64url").replace(/=+$/, "");
    const secrets = secretsOf(
      { KFP_TOKEN: "env-token-0123456789", KF_PIPELINES_SA_TOKEN_PATH: tokenFile, KFP_COOKIE: "a=cookie-one-0123; b=cookie-two-4567", NTFY_TOKEN: "bob:ntfy-pass-0123", NTFY_URL: `https://ntfy.example/ci?auth=${auth}`, ACTIONS_RUNTIME_TOKEN: "runtime-token-0123", GITEA_TOKEN: "gitea-token-0123", GITHUB_TOKEN: "github-token-0123" },
      ["--dry-run", "--token", "flag-token-0123456789", "--ntfy-token=tk_flagntfy0123"],
    );
    for (const value of ["env-token-0123456789", "flag-token-0123456789", "file-token-0123456789", "cookie-one-0123", "cookie-two-4567", "bob:ntfy-pass-0123", "ntfy-pass-0123", Buffer.from("bob:ntfy-pass-0123").toString("base64"), "tk_flagntfy0123", auth, "tk_inurl0123456789", "runtime-token-0123", "gitea-token-0123", "github-token-0123"]) {
      expect(secrets, value).toContain(value);
    }
    expect(secretsOf({ HOME: "/root", KFP_SYNC_JOBS: "2" }, ["--dry-run", "examples"])).toEqual([]);
  });

  test("the writer scrubs stdout, stderr, files and records it hands to a peer", () => {
    const written = { stdout: "", stderr: "" };
    const out = writerFor(secretsOf({ KFP_TOKEN: "tok-0123456789abc" }, []), { stdout: { write: (t: string) => (written.stdout += t) }, stderr: { write: (t: string) => (written.stderr += t) } });
    const file = path.join(scratch(), "outputs");
    out.write("stdout", "a tok-0123456789abc b\n");
    out.write("stderr", "Bearer tok-0123456789abc\n");
    out.write({ file }, "x=tok-0123456789abc\n");
    expect([written.stdout, written.stderr, fs.readFileSync(file, "utf8")]).toEqual(["a *** b\n", "***\n", "x=***\n"]);
    expect(out.scrubbed({ message: "denied tok-0123456789abc", nested: ["tok-0123456789abc"] })).toEqual({ message: "denied ***", nested: ["***"] });
  });
});
