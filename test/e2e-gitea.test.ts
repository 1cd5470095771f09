/**
 * The whole job, end to end (issue 19): push to main on a real Gitea, Gitea's own runner runs the
 * shipped workflow with the built ./kfp-sync, the pipelines land in KFP and ntfy is told.
 *
 * Peers (test/peers/, copied from the team's measured set-ups): Gitea 1.27.3 and 1.26.0 built from
 * the Go module proxy by gitea/start.sh, Gitea's runner v1.0.8 by runner/install.sh, both cached
 * in ~/.cache/kfp-sync-peers (scripts/setup.sh builds them; a missing one is built here, and a peer
 * that cannot be built fails this file loudly). The runner runs steps as plain processes (label
 * kfp-sync:host); `actions/checkout@v4` resolves to this Gitea (DEFAULT_ACTIONS_URL=self), where a
 * repository actions/checkout holds checkout/action.yml, an offline stand-in that fetches the pushed
 * commit with the job token. KFP and ntfy are test/kfp-server.ts and test/ntfy-server.ts (with
 * KFP_TEST_HOST, and KFP_TEST_TOKEN if it needs one, a real KFP instead of the imitation).
 *
 * Issue 19 item 7: a pull request that changes a default gets the plan as one comment from the
 * shipped plan.yaml, edited by the next push. The examples' kfp-sync.yaml is pushed too: the first
 * push checks its two schedules are in KFP.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parse, stringify } from "yaml";
import { BIN, EXAMPLES, PYTHON, ROOT, run, scratch } from "./helpers";
import { startKfpServer, type KfpServer } from "./kfp-server";
import { startNtfyServer, type NtfyPublish, type NtfyServer } from "./ntfy-server";

const PEERS = path.join(ROOT, "test/peers");
const WORKFLOW = ".gitea/workflows/compile-upload.yaml";
const PLAN_WORKFLOW = ".gitea/workflows/plan.yaml";
const OWNER = "kfp-admin"; // start.sh's admin user
const REPO = "pipelines";
const NTFY_TOKEN = "tk_e2egiteantfytoken00000000000";
const KFP_TOKEN = "kfp-e2e-token";
const RUN_TIMEOUT_MS = 120_000;
// Every folder this file makes is under TMP, removed at the end.
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), "kfp-sync-e2e-"));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));
const PINNED_KFP = /^kfp==(\S+)$/m.exec(fs.readFileSync(path.join(ROOT, "requirements.txt"), "utf8"))?.[1];

// ─── Peers ───────────────────────────────────────────────────────────────────────────────────────

async function exec(cmd: string[], opts: { cwd?: string; env?: Record<string, string> } = {}): Promise<string> {
  const proc = Bun.spawn(cmd, { cwd: opts.cwd, env: opts.env ?? (process.env as Record<string, string>), stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const code = await proc.exited;
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}:\n${stderr}${stdout}`);
  return stdout;
}

interface Gitea {
  url: string;
  user: string;
  password: string;
  token: string;
  dir: string;
  version: string;
}

async function startGitea(version: string, requireSignin: boolean): Promise<Gitea> {
  const env = { ...(process.env as Record<string, string>), GITEA__actions__DEFAULT_ACTIONS_URL: "self" };
  let out: string;
  try {
    out = await exec(["bash", path.join(PEERS, "gitea/start.sh"), "--version", version, ...(requireSignin ? ["--require-signin"] : [])], { env });
  } catch (error) {
    throw new Error(`Gitea ${version} could not be built or started (the end-to-end test cannot run without it): ${(error as Error).message}`);
  }
  const v = Object.fromEntries(out.trim().split("\n").map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
  return { url: v.GITEA_URL!, user: v.GITEA_USER!, password: v.GITEA_PASSWORD!, token: v.GITEA_TOKEN!, dir: v.GITEA_DIR!, version: v.GITEA_VERSION! };
}

async function stopGitea(gitea: Gitea): Promise<void> {
  await exec(["bash", path.join(PEERS, "gitea/stop.sh"), gitea.dir]);
}

async function api<T = any>(gitea: Gitea, method: string, route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${gitea.url}/api/v1${route}`, {
    method,
    headers: { Authorization: `token ${gitea.token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`Gitea ${method} ${route}: ${res.status} ${text}`);
  return (text ? JSON.parse(text) : undefined) as T;
}

interface Runner {
  proc: ReturnType<typeof Bun.spawn>;
  dir: string;
  log: string;
}

/**
 * Register Gitea's runner with the label the workflow asks for, in host mode, and start it with
 * what the runner image's ENV gives every step (Containerfile): kfp-sync and the pinned Python on
 * PATH, KFP_SYNC_PYTHON, KFP_SYNC_KFP_VERSION, PYTHONDONTWRITEBYTECODE. The workflow is not edited.
 */
async function startRunner(gitea: Gitea): Promise<Runner> {
  let bin: string;
  try {
    bin = (await exec(["bash", path.join(PEERS, "runner/install.sh")])).trim();
  } catch (error) {
    throw new Error(`Gitea's runner could not be built (the end-to-end test cannot run without it): ${(error as Error).message}`);
  }
  const dir = fs.mkdtempSync(path.join(TMP, "runner-"));
  const binDir = path.join(dir, "bin");
  fs.mkdirSync(binDir);
  fs.symlinkSync(BIN, path.join(binDir, "kfp-sync")); // the image's /usr/local/bin/kfp-sync
  const config = parse(await exec([bin, "generate-config"]));
  config.log = { ...config.log, level: "info" };
  config.runner = { ...config.runner, file: path.join(dir, ".runner"), capacity: 1, labels: ["kfp-sync:host"] };
  config.cache = { ...config.cache, enabled: false }; // else a cache server on the outbound address
  config.host = { ...config.host, workdir_parent: path.join(dir, "work") };
  const configFile = path.join(dir, "config.yaml");
  fs.writeFileSync(configFile, stringify(config));
  const { token } = await api<{ token: string }>(gitea, "POST", "/admin/actions/runners/registration-token");
  await exec([bin, "-c", configFile, "register", "--no-interactive", "--instance", gitea.url, "--token", token, "--name", "e2e", "--labels", "kfp-sync:host"], { cwd: dir });
  const env: Record<string, string> = {
    PATH: `${binDir}:${path.dirname(PYTHON)}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    HOME: dir,
    KFP_SYNC_PYTHON: PYTHON,
    KFP_SYNC_KFP_VERSION: PINNED_KFP!,
    PYTHONDONTWRITEBYTECODE: "1",
    GIT_CONFIG_NOSYSTEM: "1",
  };
  const log = path.join(dir, "runner.log");
  const proc = Bun.spawn([bin, "-c", configFile, "daemon"], { cwd: dir, env, stdout: Bun.file(log), stderr: Bun.file(log), stdin: "ignore" });
  return { proc, dir, log };
}

async function stopRunner(runner: Runner): Promise<void> {
  runner.proc.kill("SIGTERM");
  await runner.proc.exited;
}

// ─── Git ─────────────────────────────────────────────────────────────────────────────────────────

const GIT_HOME = fs.mkdtempSync(path.join(TMP, "git-home-"));
const GIT_ENV: Record<string, string> = {
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: GIT_HOME,
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_TERMINAL_PROMPT: "0",
  GIT_AUTHOR_NAME: "kfp-sync e2e",
  GIT_AUTHOR_EMAIL: "e2e@example.com",
  GIT_COMMITTER_NAME: "kfp-sync e2e",
  GIT_COMMITTER_EMAIL: "e2e@example.com",
};

function git(dir: string, ...args: string[]): Promise<string> {
  return exec(["git", ...args], { cwd: dir, env: GIT_ENV });
}

function remote(gitea: Gitea, repo: string): string {
  const url = new URL(`${gitea.url}/${repo}.git`);
  url.username = gitea.user;
  url.password = gitea.token;
  return url.toString();
}

/** A new local repository pushing to `repo` on `gitea`. */
async function clone(gitea: Gitea, repo: string, files: Record<string, string | Buffer>): Promise<string> {
  const dir = fs.mkdtempSync(path.join(TMP, "repo-"));
  await git(dir, "init", "-q", "-b", "main");
  await git(dir, "remote", "add", "origin", remote(gitea, repo));
  write(dir, files);
  return dir;
}

function write(dir: string, files: Record<string, string | Buffer>): void {
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), content);
  }
}

/** Commit everything and push main; the commit's sha. */
async function push(dir: string, message: string): Promise<string> {
  await git(dir, "add", "-A");
  await git(dir, "commit", "-q", "-m", message);
  await git(dir, "push", "-q", "origin", "main");
  return (await git(dir, "rev-parse", "HEAD")).trim();
}

// ─── Runs ────────────────────────────────────────────────────────────────────────────────────────

interface Run {
  id: number;
  run_number: number;
  status: string;
  conclusion: string;
  event: string;
  head_sha: string;
  path: string;
}

async function runs(gitea: Gitea, repo: string): Promise<Run[]> {
  return (await api<{ workflow_runs: Run[] | null }>(gitea, "GET", `/repos/${repo}/actions/runs?limit=50`)).workflow_runs ?? [];
}

const isSync = (r: Run) => r.path.startsWith("compile-upload.yaml@");

/** Wait for the run that `match` picks to be created. */
async function completedOrQueued(gitea: Gitea, repo: string, match: (r: Run) => boolean, what: string): Promise<Run> {
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const found = (await runs(gitea, repo)).find(match);
    if (found) return found;
    await Bun.sleep(200);
  }
  throw new Error(`${what}: no run within ${RUN_TIMEOUT_MS / 1000} s`);
}

/** Wait for the run that `match` picks to be created and to complete. */
async function completedRun(gitea: Gitea, repo: string, match: (r: Run) => boolean, what: string): Promise<Run> {
  const deadline = Date.now() + RUN_TIMEOUT_MS;
  let last: Run | undefined;
  while (Date.now() < deadline) {
    last = (await runs(gitea, repo)).find(match);
    if (last?.status === "completed") return last;
    await Bun.sleep(300);
  }
  throw new Error(`${what}: no completed run within ${RUN_TIMEOUT_MS / 1000} s (last seen: ${JSON.stringify(last)})`);
}

interface Job {
  id: number;
  name: string;
  status: string;
  conclusion: string;
}

async function jobOf(gitea: Gitea, run: Run): Promise<Job> {
  const { jobs } = await api<{ jobs: Job[] }>(gitea, "GET", `/repos/${OWNER}/${REPO}/actions/runs/${run.id}/jobs`);
  expect(jobs.length).toBe(1);
  return jobs[0]!;
}

async function jobLog(gitea: Gitea, job: Job): Promise<string> {
  const res = await fetch(`${gitea.url}/api/v1/repos/${OWNER}/${REPO}/actions/jobs/${job.id}/logs`, { headers: { Authorization: `token ${gitea.token}` } });
  expect(res.status).toBe(200);
  return res.text();
}

/** The job outputs as Gitea stored them from the runner (no API serves them, so from its database). */
function jobOutputs(gitea: Gitea, run: Run): Record<string, string> {
  const db = new Database(path.join(gitea.dir, "data/gitea.db"), { readonly: true });
  try {
    const rows = db
      .query<{ output_key: string; output_value: string }, [number]>(
        "SELECT o.output_key, o.output_value FROM action_task_output o JOIN action_run_job j ON j.task_id = o.task_id WHERE j.run_id = ?",
      )
      .all(run.id);
    return Object.fromEntries(rows.map((r) => [r.output_key, r.output_value]));
  } finally {
    db.close();
  }
}

/** Step summaries Gitea stored for the run (table from 1.27 on). */
function stepSummaries(gitea: Gitea, run: Run): string[] | undefined {
  const db = new Database(path.join(gitea.dir, "data/gitea.db"), { readonly: true });
  try {
    const table = db.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'action_run_job_summary'").get();
    if (!table) return undefined;
    return db.query<{ content: string }, [number]>("SELECT content FROM action_run_job_summary WHERE run_id = ?").all(run.id).map((r) => r.content);
  } finally {
    db.close();
  }
}

/** Open `link` in a logged-in session, as a person tapping the notification would; the run id the page shows. */
async function runIdShownAt(gitea: Gitea, link: string): Promise<number> {
  const login = await fetch(`${gitea.url}/user/login`, {
    method: "POST",
    redirect: "manual",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ user_name: gitea.user, password: gitea.password }),
  });
  expect(login.status).toBe(303);
  // Login regenerates the session: the second i_like_gitea cookie is the signed-in one, so the last of each name wins.
  const jar = new Map(login.headers.getSetCookie().map((c) => c.split(";")[0]!.split("=") as [string, string]));
  const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
  const page = await fetch(link, { headers: { Cookie: cookie } });
  expect(page.status).toBe(200);
  const html = await page.text();
  // 1.26.0 names the run in data-run-id, 1.27.3 in data-actions-view-url (test/peers/gitea/README.md).
  const m = /data-run-id="(\d+)"/.exec(html) ?? /data-actions-view-url="[^"]*\/actions\/runs\/(\d+)"/.exec(html);
  if (!m) throw new Error(`${link} is not a run page (${html.length} bytes): ${html.slice(0, 300)}`);
  return Number(m[1]);
}

// ─── KFP ─────────────────────────────────────────────────────────────────────────────────────────

interface Kfp {
  url: string;
  token?: string;
  server?: KfpServer;
}

/** Every version of each pipeline named, by name, through KFP's REST API (the imitation's or a real one's). */
async function kfpVersions(kfp: Kfp, names: string[]): Promise<Map<string, string[]>> {
  const get = async (route: string) => {
    const res = await fetch(`${kfp.url}/apis/v2beta1${route}`, { headers: kfp.token ? { Authorization: `Bearer ${kfp.token}` } : {} });
    if (!res.ok) throw new Error(`KFP GET ${route}: ${res.status} ${await res.text()}`);
    return (await res.json()) as any;
  };
  const out = new Map<string, string[]>();
  for (const name of names) {
    const filter = encodeURIComponent(JSON.stringify({ predicates: [{ key: "name", operation: "EQUALS", string_value: name }] }));
    const pipeline = ((await get(`/pipelines?filter=${filter}`)).pipelines ?? [])[0];
    if (!pipeline) continue;
    const versions = (await get(`/pipelines/${pipeline.pipeline_id}/versions?page_size=1000`)).pipeline_versions ?? [];
    out.set(name, versions.map((v: any) => v.name as string).sort());
  }
  return out;
}

// ─── The repository, as the README's "Set up in Gitea" checklist says ───────────────────────────────

/**
 * Gitea evaluates a push's workflows against the branch head when it gets to the push, not the
 * pushed commit: a README-only push followed quickly by a pipeline change gets a compile-upload run
 * too. This second workflow starts a run for every push (on a label no runner has, so it never
 * executes): once it has a run for a commit, Gitea has decided about compile-upload for that push.
 */
const MARKER_WORKFLOW = ".gitea/workflows/e2e-marker.yaml";
const MARKER = "on: push\njobs:\n  mark:\n    runs-on: no-runner-has-this-label\n    steps:\n      - run: \"true\"\n";

/** The six examples (every file of examples/) and the workflow, byte for byte as shipped. */
function shippedFiles(): Record<string, Buffer | string> {
  const files: Record<string, Buffer | string> = { [MARKER_WORKFLOW]: MARKER };
  for (const name of fs.readdirSync(EXAMPLES)) {
    if (fs.statSync(path.join(EXAMPLES, name)).isFile()) files[name] = fs.readFileSync(path.join(EXAMPLES, name));
  }
  files[WORKFLOW] = fs.readFileSync(path.join(ROOT, WORKFLOW));
  files[PLAN_WORKFLOW] = fs.readFileSync(path.join(ROOT, PLAN_WORKFLOW));
  return files;
}

/**
 * A Gitea ready for the workflow: the checkout stand-in as actions/checkout@v4, one run in another
 * repository first (so this repository's run ids differ from its run numbers, which is what makes a
 * link by number open the wrong run), the pipelines repository with its variables and secrets.
 */
async function prepareGitea(gitea: Gitea, kfp: Kfp, ntfy: NtfyServer): Promise<void> {
  await api(gitea, "POST", "/orgs", { username: "actions", visibility: "public" });
  await api(gitea, "POST", "/orgs/actions/repos", { name: "checkout", private: false });
  const checkout = await clone(gitea, "actions/checkout", { "action.yml": fs.readFileSync(path.join(PEERS, "checkout/action.yml")) });
  await push(checkout, "offline stand-in for actions/checkout");
  await git(checkout, "tag", "v4");
  await git(checkout, "push", "-q", "origin", "v4");

  await api(gitea, "POST", "/user/repos", { name: "decoy", private: true });
  const decoy = await clone(gitea, `${OWNER}/decoy`, { ".gitea/workflows/wait.yaml": MARKER });
  await push(decoy, "a run that takes id 1");
  const deadline = Date.now() + 30_000;
  while ((await runs(gitea, `${OWNER}/decoy`)).length === 0) {
    if (Date.now() > deadline) throw new Error("the decoy repository's push created no run");
    await Bun.sleep(200);
  }

  await api(gitea, "POST", "/user/repos", { name: REPO, private: true });
  const repo = `/repos/${OWNER}/${REPO}/actions`;
  await api(gitea, "POST", `${repo}/variables/KFP_HOST`, { value: kfp.url });
  if (kfp.token) await api(gitea, "PUT", `${repo}/secrets/KFP_TOKEN`, { data: kfp.token });
  await api(gitea, "PUT", `${repo}/secrets/NTFY_URL`, { data: `${ntfy.url}/gitea-ci` });
  await api(gitea, "PUT", `${repo}/secrets/NTFY_TOKEN`, { data: NTFY_TOKEN });
}

/** Start KFP (imitation, or KFP_TEST_HOST) and ntfy. */
async function startServices(): Promise<{ kfp: Kfp; ntfy: NtfyServer }> {
  const ntfy = await startNtfyServer({ token: NTFY_TOKEN });
  if (process.env.KFP_TEST_HOST) return { kfp: { url: process.env.KFP_TEST_HOST.replace(/\/+$/, ""), token: process.env.KFP_TEST_TOKEN }, ntfy };
  const server = await startKfpServer({ token: KFP_TOKEN });
  return { kfp: { url: server.url, token: KFP_TOKEN, server }, ntfy };
}

/** The pipeline names the examples define, from a local dry run (so the test does not restate them). */
async function pipelineNames(): Promise<string[]> {
  const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: EXAMPLES });
  expect(r.code, r.stderr).toBe(0);
  return r
    .json()
    .pipelines.map((p) => p.name as string)
    .sort();
}

function published(ntfy: NtfyServer, from: number): NtfyPublish[] {
  return ntfy.published.slice(from);
}

/** Processes still running from a directory the test made (cwd or command line under it). */
function processesUnder(dirs: string[]): string[] {
  const left: string[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      let cwd = "";
      try {
        cwd = fs.readlinkSync(`/proc/${entry}/cwd`);
      } catch {
        // not ours to look at
      }
      if (/^Z/m.test(fs.readFileSync(`/proc/${entry}/stat`, "utf8").split(") ")[1] ?? "")) continue; // zombies: PID 1 here does not reap
      if (dirs.some((d) => cmdline.includes(d) || cwd.startsWith(d))) left.push(`${entry}: ${cmdline}`);
    } catch {
      // gone
    }
  }
  return left;
}

// ─── The tests ───────────────────────────────────────────────────────────────────────────────────

/** One Gitea with a runner, KFP, ntfy and the prepared repository; `end()` stops all of it. */
async function environment(version: string, requireSignin: boolean) {
  const { kfp, ntfy } = await startServices();
  let gitea: Gitea;
  try {
    gitea = await startGitea(version, requireSignin);
  } catch (error) {
    await ntfy.stop();
    await kfp.server?.stop();
    throw error;
  }
  let runner: Runner | undefined;
  try {
    runner = await startRunner(gitea);
    await prepareGitea(gitea, kfp, ntfy);
  } catch (error) {
    if (runner) await stopRunner(runner);
    await stopGitea(gitea);
    await ntfy.stop();
    await kfp.server?.stop();
    throw error;
  }
  const work = await clone(gitea, `${OWNER}/${REPO}`, shippedFiles());
  return {
    gitea,
    kfp,
    ntfy,
    runner: runner!,
    work,
    async end() {
      await stopRunner(runner!);
      await stopGitea(gitea);
      await ntfy.stop();
      await kfp.server?.stop();
      const left = processesUnder([runner!.dir, gitea.dir]);
      expect(left).toEqual([]);
      expect(fs.existsSync(gitea.dir)).toBe(false);
    },
  };
}

type Env = Awaited<ReturnType<typeof environment>>;

/** Step 3 of issue 19: the first push, checked end to end. Returns the run. */
async function firstPush(e: Env, names: string[]): Promise<Run> {
  const ntfyBefore = e.ntfy.published.length;
  const before = await kfpVersions(e.kfp, names);
  const sha = await push(e.work, "the six pipelines and the shipped workflow");
  const run = await completedRun(e.gitea, `${OWNER}/${REPO}`, (r) => isSync(r) && r.head_sha === sha, "first push");
  const job = await jobOf(e.gitea, run);
  const log = await jobLog(e.gitea, job);
  expect(run.conclusion, log).toBe("success");
  expect(run.event).toBe("push");
  expect(run.id).not.toBe(run.run_number); // the decoy run took an id: a link by number would be a different URL

  // The six pipelines are in KFP, each with this run's version (or unchanged, on a real KFP that had them).
  const outputs = jobOutputs(e.gitea, run);
  const after = await kfpVersions(e.kfp, names);
  expect([...after.keys()].sort()).toEqual(names);
  expect(Number(outputs.compiled)).toBe(6);
  expect(Number(outputs.failed)).toBe(0);
  expect(outputs.failed_pipelines).toBe("");
  expect(Number(outputs.uploaded) + Number(outputs.unchanged)).toBe(6);
  if (e.kfp.server) {
    expect(before.size).toBe(0);
    expect(outputs.uploaded).toBe("6");
    expect(outputs.version).toMatch(/^v\d{8}-\d{6}$/);
    // KFP names a new pipeline's first version after the pipeline: one version each.
    for (const name of names) expect(after.get(name)).toEqual([name]);
  }
  // examples/kfp-sync.yaml's two schedules are recurring runs now, enabled, marked as kfp-sync's.
  const listed = await fetch(`${e.kfp.url}/apis/v2beta1/recurringruns?page_size=200`, { headers: e.kfp.token ? { Authorization: `Bearer ${e.kfp.token}` } : {} }).then((r) => r.json() as Promise<any>);
  const scheduled = (listed.recurringRuns ?? []).filter((r: any) => /kfp-sync schedule /.test(r.description ?? ""));
  for (const name of ["nightly-evaluation", "weekly-finetune"]) expect(scheduled.find((r: any) => r.display_name === name)?.status, name).toBe("ENABLED");
  // summary_json is a step output only (the job leaves it out); the runner echoes it into the log,
  // as it does every step output, so secrets must never be in it.
  expect(Object.keys(outputs).sort()).toEqual(["compiled", "failed", "failed_pipelines", "unchanged", "uploaded", "version"]);
  expect(log).toContain("::set-output:: summary_json={");
  for (const secret of [NTFY_TOKEN, e.kfp.token].filter(Boolean)) expect(log).not.toContain(secret!);

  // One ntfy message, its link opens this run (by id), logged in.
  const messages = published(e.ntfy, ntfyBefore);
  expect(messages.length).toBe(1);
  const link = `${e.gitea.url}/${OWNER}/${REPO}/actions/runs/${run.id}`;
  expect(messages[0]!.click).toBe(link);
  expect(messages[0]!.message).toContain(`run: ${link}`);
  expect(await runIdShownAt(e.gitea, messages[0]!.click!)).toBe(run.id);
  expect(messages[0]!.headers.authorization).toBe(`Bearer ${NTFY_TOKEN}`);
  // kfp-sync read the Gitea version (with the job token when sign-in is required): the link is by id on purpose.
  expect(log).toContain(`Gitea ${e.gitea.version}: this run is ${link}`);

  // The step summary: kfp-sync writes it to GITHUB_STEP_SUMMARY and prints it to the log. Gitea
  // stores summaries from 1.27 on, but only from a runner that uploads them: runner v1.0.8 does not
  // (it declares no job-summary capability), so the log is where it is seen. A runner that uploads
  // makes the expectation below fail: then check the stored table instead.
  expect(log).toContain("| pipeline | file | result | version | error |");
  const stored = stepSummaries(e.gitea, run);
  if (e.gitea.version.startsWith("1.26")) expect(stored).toBeUndefined();
  else expect(stored).toEqual([]);
  return run;
}

describe("end to end on Gitea 1.27.3 with Gitea's runner", () => {
  let e: Env;
  let names: string[];
  beforeAll(async () => {
    names = await pipelineNames();
    expect(names.length).toBe(6);
    e = await environment("1.27.3", false);
  }, 600_000);
  afterAll(async () => {
    await e?.end();
  }, 60_000);

  test("push: the run succeeds, six pipelines in KFP, one ntfy message whose link opens this run, job outputs set", async () => {
    await firstPush(e, names);
  }, 180_000);

  test("a README-only push starts no run; a change to one pipeline adds one version, five unchanged", async () => {
    const repo = `${OWNER}/${REPO}`;
    const readme = path.join(e.work, "README.md");
    fs.appendFileSync(readme, "\nEdited by the end-to-end test.\n");
    const readmeSha = await push(e.work, "docs only");
    await completedOrQueued(e.gitea, repo, (r) => r.head_sha === readmeSha && r.path.startsWith("e2e-marker.yaml"), "the marker run of the README push");
    expect((await runs(e.gitea, repo)).filter((r) => r.head_sha === readmeSha && r.path.startsWith("compile-upload.yaml"))).toEqual([]);
    const before = await kfpVersions(e.kfp, names);

    // A real change to one compiled spec: its description (the examples are not restated here).
    const changedFile = "evaluation_pipeline.py";
    const source = fs.readFileSync(path.join(e.work, changedFile), "utf8");
    const edited = source.replace(/(@dsl\.pipeline\([^)]*description=)(["'])/, "$1$2Changed by the end-to-end test. ");
    if (edited === source) throw new Error(`${changedFile} has no @dsl.pipeline(description=...) to change; pick another way to change its spec`);
    fs.writeFileSync(path.join(e.work, changedFile), edited);
    const ntfyBefore = e.ntfy.published.length;
    const sha = await push(e.work, "change one pipeline");
    const run = await completedRun(e.gitea, repo, (r) => isSync(r) && r.head_sha === sha, "one pipeline changed");
    expect(run.conclusion, await jobLog(e.gitea, await jobOf(e.gitea, run))).toBe("success");

    const outputs = jobOutputs(e.gitea, run);
    expect(outputs.uploaded).toBe("1");
    expect(outputs.unchanged).toBe("5");
    expect(outputs.version).toMatch(/^v\d{8}-\d{6}$/);
    const after = await kfpVersions(e.kfp, names);
    const grown = names.filter((n) => after.get(n)!.length !== before.get(n)!.length);
    expect(grown.length).toBe(1);
    expect(after.get(grown[0]!)).toEqual([...before.get(grown[0]!)!, outputs.version!].sort());

    // The run page takes a number as an id first: with the decoy's run before, this run's number is
    // the id of an earlier run of this repository, so a link by number would open that one.
    const [message] = published(e.ntfy, ntfyBefore);
    expect(message!.click).toBe(`${e.gitea.url}/${repo}/actions/runs/${run.id}`);
    expect(await runIdShownAt(e.gitea, message!.click!)).toBe(run.id);
    expect(await runIdShownAt(e.gitea, `${e.gitea.url}/${repo}/actions/runs/${run.run_number}`)).not.toBe(run.id);
  }, 180_000);

  test("workflow_dispatch through the API: the run syncs again and writes nothing to KFP", async () => {
    const repo = `${OWNER}/${REPO}`;
    const before = await kfpVersions(e.kfp, names);
    const writesBefore = e.kfp.server?.requests.filter((r) => r.method !== "GET").length;
    const known = new Set((await runs(e.gitea, repo)).map((r) => r.id));
    await api(e.gitea, "POST", `/repos/${repo}/actions/workflows/compile-upload.yaml/dispatches`, { ref: "main" });
    const run = await completedRun(e.gitea, repo, (r) => isSync(r) && !known.has(r.id), "workflow_dispatch");
    expect(run.event).toBe("workflow_dispatch");
    expect(run.conclusion).toBe("success");
    const outputs = jobOutputs(e.gitea, run);
    expect(outputs.uploaded).toBe("0");
    expect(outputs.unchanged).toBe("6");
    expect(outputs.version).toBe(""); // no version was created
    expect(await kfpVersions(e.kfp, names)).toEqual(before);
    if (e.kfp.server) expect(e.kfp.server.requests.filter((r) => r.method !== "GET").length).toBe(writesBefore!);
  }, 180_000);

  test("a change to a helper module alone starts a run: nothing changed, so nothing written", async () => {
    const repo = `${OWNER}/${REPO}`;
    const before = await kfpVersions(e.kfp, names);
    write(e.work, { "components/common.py": "# shared by the pipelines\nDEFAULT_IMAGE = 'python:3.11'\n" });
    const sha = await push(e.work, "a helper module");
    const run = await completedRun(e.gitea, repo, (r) => isSync(r) && r.head_sha === sha, "helper module");
    const log = await jobLog(e.gitea, await jobOf(e.gitea, run));
    expect(run.conclusion, log).toBe("success");
    const outputs = jobOutputs(e.gitea, run);
    expect(outputs.unchanged).toBe("6");
    expect(outputs.uploaded).toBe("0");
    expect(await kfpVersions(e.kfp, names)).toEqual(before);
  }, 180_000);

  test("a pull request that changes a default: plan.yaml comments the change; a second push edits the same comment", async () => {
    const repo = `${OWNER}/${REPO}`;
    const before = await kfpVersions(e.kfp, names);
    const writesBefore = e.kfp.server?.requests.filter((r) => r.method !== "GET").length;
    const ntfyBefore = e.ntfy.published.length;
    const file = path.join(e.work, "evaluation_pipeline.py");
    const source = fs.readFileSync(file, "utf8");
    const m = /(\w+): float = ([0-9.]+)/.exec(source);
    if (!m) throw new Error("evaluation_pipeline.py has no float parameter with a default to change");
    const [, param, old] = m;
    const raised = (by: number) => String(Number((Number(old) + by).toFixed(6)));
    const commentsOf = async (n: number) =>
      (await api<{ id: number; body: string }[]>(e.gitea, "GET", `/repos/${repo}/issues/${n}/comments`)).filter((c) => c.body.startsWith("<!-- kfp-sync plan -->"));
    const planRun = async (known: Set<number>, what: string) => {
      const r = await completedRun(e.gitea, repo, (r) => r.path.startsWith("plan.yaml@") && !known.has(r.id), what);
      expect(r.event).toBe("pull_request");
      expect(r.conclusion, await jobLog(e.gitea, await jobOf(e.gitea, r))).toBe("success");
      return r;
    };

    await git(e.work, "checkout", "-q", "-b", "change-default");
    try {
      fs.writeFileSync(file, source.replace(m[0], `${param}: float = ${raised(0.05)}`));
      await git(e.work, "commit", "-q", "-am", "raise a default");
      await git(e.work, "push", "-q", "origin", "change-default");
      const known = new Set((await runs(e.gitea, repo)).map((r) => r.id));
      const pr = await api<{ number: number }>(e.gitea, "POST", `/repos/${repo}/pulls`, { head: "change-default", base: "main", title: "raise a default" });
      const first = await planRun(known, "plan of the pull request");
      const [comment, ...others] = await commentsOf(pr.number);
      expect(others).toEqual([]);
      const local = await run(["--dry-run", "--out-dir", scratch()], { cwd: EXAMPLES });
      const name = local.json().pipelines.find((p) => p.file === "evaluation_pipeline.py")!.name;
      expect(comment!.body).toContain(`${name}: parameter ${param} default ${old} → ${raised(0.05)}`);
      expect(comment!.body).toContain(`Compared with ${e.kfp.url}`);
      for (const secret of [NTFY_TOKEN, e.kfp.token].filter(Boolean)) expect(comment!.body).not.toContain(secret!);

      // The second push to the pull request: the same comment, now with the newer value.
      fs.writeFileSync(file, source.replace(m[0], `${param}: float = ${raised(0.1)}`));
      await git(e.work, "commit", "-q", "-am", "raise it more");
      await git(e.work, "push", "-q", "origin", "change-default");
      await planRun(new Set([...known, first.id]), "plan of the second push");
      const [edited, ...more] = await commentsOf(pr.number);
      expect(more).toEqual([]);
      expect(edited!.id).toBe(comment!.id);
      expect(edited!.body).toContain(`parameter ${param} default ${old} → ${raised(0.1)}`);
    } finally {
      await git(e.work, "checkout", "-q", "main");
    }
    // A plan writes nothing: KFP as it was, no notification.
    expect(await kfpVersions(e.kfp, names)).toEqual(before);
    if (e.kfp.server) expect(e.kfp.server.requests.filter((r) => r.method !== "GET").length).toBe(writesBefore!);
    expect(e.ntfy.published.length).toBe(ntfyBefore);
  }, 300_000);

  test("a broken pipeline: the run fails, failed=1, a high-priority message names the file", async () => {
    const repo = `${OWNER}/${REPO}`;
    const before = await kfpVersions(e.kfp, names);
    write(e.work, { "broken_pipeline.py": "from kfp import dsl\n\ndef broken(:\n" });
    const ntfyBefore = e.ntfy.published.length;
    const sha = await push(e.work, "a broken pipeline");
    const run = await completedRun(e.gitea, repo, (r) => isSync(r) && r.head_sha === sha, "broken pipeline");
    expect(run.conclusion).toBe("failure");
    const outputs = jobOutputs(e.gitea, run);
    expect(outputs.failed).toBe("1");
    expect(outputs.failed_pipelines).toBe("broken_pipeline.py");
    expect(outputs.unchanged).toBe("6");
    expect(outputs.version).toBe("");
    const messages = published(e.ntfy, ntfyBefore);
    expect(messages.length).toBe(1);
    expect(messages[0]!.priority).toBe(4);
    expect(`${messages[0]!.title}\n${messages[0]!.message}`).toContain("broken_pipeline.py");
    expect(messages[0]!.click).toBe(`${e.gitea.url}/${repo}/actions/runs/${run.id}`);
    expect(await kfpVersions(e.kfp, names)).toEqual(before);
  }, 180_000);
});

// Issue 19 steps 3 and 5 on each version: sign-in required, so kfp-sync can read the Gitea version
// only with the job's token; a second run (by workflow_dispatch) is where a link by number goes wrong.
for (const version of ["1.27.3", "1.26.0"]) {
  describe(`end to end on Gitea ${version} with REQUIRE_SIGNIN_VIEW`, () => {
    let e: Env;
    let names: string[];
    beforeAll(async () => {
      names = await pipelineNames();
      e = await environment(version, true);
    }, 600_000);
    afterAll(async () => {
      await e?.end();
    }, 60_000);

    test("the version endpoint needs sign-in here", async () => {
      expect((await fetch(`${e.gitea.url}/api/v1/version`)).status).toBe(403);
    });

    test("push: the run succeeds, six pipelines in KFP, one message whose link opens this run", async () => {
      await firstPush(e, names);
    }, 180_000);

    test("a second run's link still opens that run", async () => {
      const repo = `${OWNER}/${REPO}`;
      const known = new Set((await runs(e.gitea, repo)).map((r) => r.id));
      const ntfyBefore = e.ntfy.published.length;
      await api(e.gitea, "POST", `/repos/${repo}/actions/workflows/compile-upload.yaml/dispatches`, { ref: "main" });
      const run = await completedRun(e.gitea, repo, (r) => isSync(r) && !known.has(r.id), "workflow_dispatch");
      const log = await jobLog(e.gitea, await jobOf(e.gitea, run));
      expect(run.conclusion, log).toBe("success");
      const [message] = published(e.ntfy, ntfyBefore);
      expect(message!.click).toBe(`${e.gitea.url}/${repo}/actions/runs/${run.id}`);
      expect(await runIdShownAt(e.gitea, message!.click!)).toBe(run.id);
      // What the link by number (kfp-sync before issue 9, when the version was unknown) would have opened.
      expect(await runIdShownAt(e.gitea, `${e.gitea.url}/${repo}/actions/runs/${run.run_number}`)).not.toBe(run.id);
      expect(log).toContain(`Gitea ${version}: this run is`);
    }, 180_000);
  });
}
