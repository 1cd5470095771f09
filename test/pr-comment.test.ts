/**
 * Issue 17: the plan as one comment on a pull request, against a real Gitea, 1.27.3 and 1.26.0, on loopback
 * (test/peers/gitea/start.sh, cached in ~/.cache/kfp-sync-peers) and the KFP imitation. The binary
 * runs as the plan workflow's step would: a pull_request event file, the job's environment, a token.
 * The shipped plan.yaml run by Gitea's runner is in e2e-gitea.test.ts (issue 19 item 7).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ROOT, examplesCopy, run, scratch } from "./helpers";
import { startKfpServer, type KfpServer } from "./kfp-server";

const MARKER = "<!-- kfp-sync plan -->";
let gitea: { url: string; token: string; dir: string; version: string };
let kfp: KfpServer;
const REPO = "kfp-admin/plan-test";

async function api<T = any>(method: string, route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${gitea.url}/api/v1${route}`, { method, headers: { Authorization: `token ${gitea.token}`, "Content-Type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`Gitea ${method} ${route}: ${res.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

beforeAll(async () => {
  kfp = await startKfpServer();
});

afterAll(async () => {
  await kfp?.stop();
});

/** A real Gitea of this version (built once per machine), with the test's repository. */
async function startGitea(version: string): Promise<void> {
  const proc = Bun.spawn(["bash", path.join(ROOT, "test/peers/gitea/start.sh"), "--version", version], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = [await new Response(proc.stdout).text(), await new Response(proc.stderr).text()];
  if ((await proc.exited) !== 0) throw new Error(`Gitea ${version} could not be built or started (this test cannot run without it): ${err}`);
  const v = Object.fromEntries(out.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
  gitea = { url: v.GITEA_URL!, token: v.GITEA_TOKEN!, dir: v.GITEA_DIR!, version };
  await api("POST", "/user/repos", { name: "plan-test", private: true, auto_init: true, default_branch: "main" });
}

let branches = 0;

/** A pull request and the event file the runner would give its job. */
async function pullRequest(title: string, fromFork = false): Promise<{ number: number; event: string }> {
  const branch = `pr-${++branches}`;
  await api("POST", `/repos/${REPO}/branches`, { new_branch_name: branch, old_branch_name: "main" });
  await api("POST", `/repos/${REPO}/contents/evaluation_pipeline.py`, { branch, content: Buffer.from("# changed\n").toString("base64"), message: title });
  const pr = await api<{ number: number }>("POST", `/repos/${REPO}/pulls`, { head: branch, base: "main", title });
  const event = path.join(scratch(), "event.json");
  fs.writeFileSync(event, JSON.stringify({ action: "opened", number: pr.number, pull_request: { number: pr.number, head: { repo: { full_name: fromFork ? "someone/plan-test" : REPO } }, base: { repo: { full_name: REPO } } } }));
  return { number: pr.number, event };
}

const jobEnv = (event: string, token = gitea.token) => ({
  GITHUB_EVENT_PATH: event,
  GITHUB_EVENT_NAME: "pull_request",
  GITHUB_REPOSITORY: REPO,
  GITHUB_SERVER_URL: gitea.url,
  GITEA_ACTIONS: "true",
  KFP_SYNC_GITEA_VERSION: gitea.version,
  GITEA_TOKEN: token,
});

async function planComments(number: number): Promise<{ id: number; body: string; updated_at: string }[]> {
  return (await api<{ id: number; body: string; updated_at: string }[]>("GET", `/repos/${REPO}/issues/${number}/comments`)).filter((c) => c.body.includes(MARKER));
}

for (const version of ["1.27.3", "1.26.0"]) describe(`the plan comment on a real Gitea ${version}`, () => {
  beforeAll(() => startGitea(version), 600_000);
  afterAll(() => {
    if (gitea) Bun.spawnSync(["bash", path.join(ROOT, "test/peers/gitea/stop.sh"), gitea.dir]);
  }, 60_000);

  test("run twice: one comment, edited in place with the new plan; other comments left alone; the token never printed", async () => {
    kfp.reset();
    const dir = examplesCopy();
    expect((await run(["--host", kfp.url, "--out-dir", scratch(), "--version-tag", "v20260213-100000"], { cwd: dir })).code).toBe(0);
    const { number, event } = await pullRequest("plan twice");
    await api("POST", `/repos/${REPO}/issues/${number}/comments`, { body: "a person's comment" });

    // First push of the pull request: one default changed.
    const file = path.join(dir, "evaluation_pipeline.py");
    const src = fs.readFileSync(file, "utf8");
    const m = /(\w+): float = ([0-9.]+)/.exec(src);
    if (!m) throw new Error("evaluation_pipeline.py has no float parameter with a default to change");
    fs.writeFileSync(file, src.replace(m[0], `${m[1]}: float = ${Number(m[2]) + 0.05}`));
    const first = await run(["--dry-run", "--pr-comment", "--host", kfp.url, "--out-dir", scratch()], { cwd: dir, env: jobEnv(event) });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain(`commented the plan on pull request #${number}`);
    const [c1, ...more1] = await planComments(number);
    expect(more1).toEqual([]);
    const name = first.json().pipelines.find((p) => p.file === "evaluation_pipeline.py")!.name;
    expect(c1!.body).toStartWith(MARKER);
    expect(c1!.body).toContain(`${name}: parameter ${m[1]} default ${m[2]} → ${Number(m[2]) + 0.05}`);
    expect(c1!.body).toContain("would add version");
    expect(c1!.body).toContain(`Compared with ${kfp.url}`);

    // Second push: a compile error. The same comment now says so, with file:line.
    fs.writeFileSync(path.join(dir, "broken_pipeline.py"), "from kfp import dsl\n\n\ndef broken(:\n");
    const second = await run(["--dry-run", "--pr-comment", "--host", kfp.url, "--out-dir", scratch()], { cwd: dir, env: jobEnv(event) });
    expect(second.code).toBe(1); // the compile error fails the check, not the comment
    expect(second.stderr).toContain(`edited the plan comment on pull request #${number}`);
    const [c2, ...more2] = await planComments(number);
    expect(more2).toEqual([]);
    expect(c2!.id).toBe(c1!.id);
    expect(c2!.body).toContain("**Compile errors**");
    expect(c2!.body).toMatch(/- `broken_pipeline\.py:4`: /);
    const all = await api<{ body: string }[]>("GET", `/repos/${REPO}/issues/${number}/comments`);
    expect(all.map((c) => c.body).filter((b) => !b.includes(MARKER))).toEqual(["a person's comment"]);
    for (const r of [first, second]) expect(r.stdout + r.stderr).not.toContain(gitea.token);
    // Nothing written to KFP by the plan.
    expect(kfp.requests.filter((r) => r.method !== "GET" && r.status < 400).length).toBe(6);
  }, 180_000);

  test("from a fork: compile-only, and said so", async () => {
    const { number, event } = await pullRequest("from a fork", true);
    const r = await run(["--dry-run", "--pr-comment", "--out-dir", scratch()], { cwd: examplesCopy(), env: jobEnv(event) });
    expect(r.code, r.stderr).toBe(0);
    const [c] = await planComments(number);
    expect(c!.body).toContain("**Compile-only plan**: no KFP server was read (a pull request from a fork gets no secrets)");
  }, 180_000);

  test("a comment that cannot be posted is a warning, never a failed check", async () => {
    const { number, event } = await pullRequest("bad token");
    const r = await run(["--dry-run", "--pr-comment", "--out-dir", scratch()], { cwd: examplesCopy(), env: jobEnv(event, "not-a-valid-token-0123456789") });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(`the plan could not be posted on pull request #${number} (HTTP 401)`);
    expect(r.stderr).not.toContain("not-a-valid-token-0123456789");
    expect(await planComments(number)).toEqual([]);
  }, 180_000);

  test("without --pr-comment nothing is posted; outside a pull request it is a warning", async () => {
    const { number, event } = await pullRequest("not opted in");
    expect((await run(["--dry-run", "--out-dir", scratch()], { cwd: examplesCopy(), env: jobEnv(event) })).code).toBe(0);
    expect(await planComments(number)).toEqual([]);
    const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: examplesCopy(), env: { ...jobEnv(""), GITHUB_EVENT_PATH: undefined, KFP_SYNC_PR_COMMENT: "1" } });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain("--pr-comment: no comment posted: this run is not for a pull request");
  }, 180_000);
});
