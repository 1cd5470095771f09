/** What every test needs: the real binary, the real Python with kfp, and scratch folders. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const ROOT = path.resolve(import.meta.dir, "..");
export const BIN = process.env.KFP_SYNC_BIN ?? path.join(ROOT, "kfp-sync");
export const PYTHON = path.join(ROOT, ".venv/bin/python");
export const KFP_CLI = path.join(ROOT, ".venv/bin/kfp");
export const EXAMPLES = path.join(ROOT, "examples");
export const FIXTURES = path.join(ROOT, "test/fixtures");

if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing: run bash scripts/setup.sh (or npm run build) first`);
if (!fs.existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run bash scripts/setup.sh first`);

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as the summary document; throws when stdout is anything but one JSON document. */
  json: () => Summary;
}

// Loose view of the summary for assertions; the schema test checks it field by field.
export interface Summary {
  schemaVersion: number;
  counts: Record<string, number>;
  pipelines: Array<Record<string, any>>;
  problems: Array<Record<string, any>>;
  [key: string]: any;
}

/** Environment for a run: nothing from the developer's shell that could change what the tool does. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: os.tmpdir(), KFP_SYNC_PYTHON: PYTHON, NO_COLOR: "1" };
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

export async function run(args: string[], opts: { cwd?: string; env?: Record<string, string | undefined>; stdin?: string } = {}): Promise<RunResult> {
  const proc = Bun.spawn([BIN, ...args], { cwd: opts.cwd ?? ROOT, env: cleanEnv(opts.env), stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const code = await proc.exited;
  return { code, stdout, stderr, json: () => JSON.parse(stdout) as Summary };
}

/** A scratch folder, optionally with files copied in (name → source path or text). */
export function scratch(files: Record<string, string | { from: string }> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kfp-sync-test-"));
  for (const [name, content] of Object.entries(files)) {
    const target = path.join(dir, name);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    if (typeof content === "string") fs.writeFileSync(target, content);
    else fs.copyFileSync(content.from, target);
  }
  return dir;
}

/** Copy every example pipeline into a fresh folder (so tests never write into the repo). */
export function examplesCopy(): string {
  const files: Record<string, { from: string }> = {};
  for (const name of fs.readdirSync(EXAMPLES)) if (name.endsWith(".py")) files[name] = { from: path.join(EXAMPLES, name) };
  return scratch(files);
}

/** What `kfp dsl compile --py FILE --output OUT` writes, for parity checks. */
export async function kfpDslCompile(file: string, extra: string[] = [], env: Record<string, string> = {}): Promise<{ code: number; yaml?: string; stderr: string }> {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "kfp-ref-")), "out.yaml");
  const proc = Bun.spawn([KFP_CLI, "dsl", "compile", "--py", file, "--output", out, ...extra], { cwd: path.dirname(file), stdout: "pipe", stderr: "pipe", env: cleanEnv(env) });
  const stderr = await new Response(proc.stderr).text();
  const code = await proc.exited;
  return { code, yaml: fs.existsSync(out) ? fs.readFileSync(out, "utf8") : undefined, stderr };
}

/** Processes whose working directory is `dir`: what a run in `dir` may have left behind. */
export function processesIn(dir: string): number[] {
  const real = fs.realpathSync(dir);
  const pids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readlinkSync(`/proc/${entry}/cwd`) === real) pids.push(Number(entry));
    } catch {
      // gone, or not ours to look at
    }
  }
  return pids;
}
