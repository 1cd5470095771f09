/** What every test needs: the real binary, the real Python with kfp, and scratch folders. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export { withServer } from "./with-server.ts";

export const ROOT = path.resolve(import.meta.dir, "..");
export const BIN = process.env.KFP_SYNC_BIN ?? path.join(ROOT, "kfp-sync");
export const PYTHON = path.join(ROOT, ".venv/bin/python");
export const KFP_CLI = path.join(ROOT, ".venv/bin/kfp");
export const EXAMPLES = path.join(ROOT, "examples");
export const FIXTURES = path.join(ROOT, "test/fixtures");

/**
 * The tests run the binary, so a binary older than `source` would test the code before the last
 * edit. Rebuild it then (`build`), or, for a binary the tests were pointed at, refuse.
 */
export function ensureFreshBinary(bin: string, source: string, build: (() => { ok: boolean; output: string }) | undefined): void {
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run bash scripts/setup.sh (or npm run build) first`);
  if (fs.statSync(source).mtimeMs <= fs.statSync(bin).mtimeMs) return;
  if (!build) throw new Error(`${bin} is older than ${source}: rebuild it (npm run build) before testing it`);
  const built = build();
  if (!built.ok || fs.statSync(source).mtimeMs > fs.statSync(bin).mtimeMs) throw new Error(`${bin} is older than ${source} and rebuilding it failed: ${built.output.trim()}`);
}

ensureFreshBinary(BIN, path.join(ROOT, "kfp-sync.ts"), process.env.KFP_SYNC_BIN ? undefined : () => {
  const r = Bun.spawnSync(["npm", "run", "--silent", "build"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  return { ok: r.exitCode === 0, output: `${r.stdout.toString()}${r.stderr.toString()}` };
});
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

/** GITHUB_OUTPUT as the runner reads it: `name=value` lines and `name<<DELIMITER` blocks; anything else is an error. */
export function parseOutputs(text: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === "") continue;
    const block = /^([A-Za-z_][\w-]*)<<(.+)$/.exec(line);
    if (block) {
      const end = lines.indexOf(block[2]!, i + 1);
      if (end < 0) throw new Error(`GITHUB_OUTPUT: ${block[1]}'s block never ends with ${block[2]}`);
      out.set(block[1]!, lines.slice(i + 1, end).join("\n"));
      i = end;
    } else if (/^[A-Za-z_][\w-]*=/.test(line)) {
      out.set(line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1));
    } else {
      throw new Error(`GITHUB_OUTPUT: "${line}" is neither name=value nor name<<DELIMITER`);
    }
  }
  return out;
}
