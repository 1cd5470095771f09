/** What both benchmarks share: paths, timed processes, the plain `kfp dsl compile` loop, statistics, tables. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const ROOT = path.resolve(import.meta.dir, "..");
export const BIN = path.join(ROOT, "kfp-sync");
export const PYTHON = path.join(ROOT, ".venv/bin/python");
export const KFP_CLI = path.join(ROOT, ".venv/bin/kfp");
/** Scratch space for generated pipelines and compiled YAML (git-ignored). */
export const OUT = path.join(import.meta.dir, "out");

/** Refuse to measure a missing or stale binary: the figures would belong to other code. */
export function checkSetup(): void {
  for (const file of [PYTHON, KFP_CLI]) if (!fs.existsSync(file)) throw new Error(`${file} is missing: run npm run setup`);
  if (!fs.existsSync(BIN) || fs.statSync(BIN).mtimeMs < fs.statSync(path.join(ROOT, "kfp-sync.ts")).mtimeMs) {
    throw new Error("./kfp-sync is missing or older than kfp-sync.ts: run npm run build");
  }
}

/** Nothing from the caller's shell that could change what the tools do. */
export const ENV = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: os.tmpdir(), KFP_SYNC_PYTHON: PYTHON, NO_COLOR: "1" };

export interface Ran {
  stdout: string;
  stderr: string;
  seconds: number;
  /** CPU time (user + system) of the process and every descendant it waited for: less sensitive to load than wall time. */
  cpuSeconds: number;
  /** Peak resident memory of the largest single process of the tree, in MiB (getrusage's ru_maxrss). */
  peakMiB: number;
}

/** Run a command to its end; a non-zero exit is an error (a benchmark of a failure measures nothing). */
export async function exec(cmd: string[], cwd = ROOT, opts: { allowFailure?: boolean } = {}): Promise<Ran> {
  const started = performance.now();
  const proc = Bun.spawn(cmd, { cwd, env: ENV, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const seconds = (performance.now() - started) / 1000;
  if (code !== 0 && !opts.allowFailure) throw new Error(`${cmd.join(" ")} exited with ${code}:\n${stderr.slice(-2000)}`);
  const usage = proc.resourceUsage();
  const cpuSeconds = usage ? Number(usage.cpuTime.total) / 1e6 : Number.NaN;
  return { stdout, stderr, seconds, cpuSeconds, peakMiB: usage ? usage.maxRSS / 1024 / 1024 : Number.NaN };
}

/** The lower bound (lower_bound.py): one Python per core, kfp imported once, each share compiled in-process. */
export async function lowerBound(files: string[], outDir: string, jobs: number, python = PYTHON): Promise<{ outputs: string[]; ran: Ran }> {
  const ran = await exec([python, path.join(import.meta.dir, "lower_bound.py"), "--jobs", String(jobs), outDir, ...files]);
  return { outputs: files.map((f) => path.join(outDir, path.basename(f, ".py") + ".yaml")), ran };
}

/** The plain approach: one `kfp dsl compile --py F --output O` process per file, `parallel` at a time (xargs -P). */
export async function kfpDslCompileAll(files: string[], outDir: string, parallel: number, cpu = { seconds: 0 }, kfpCli = KFP_CLI, functions: (string | undefined)[] = []): Promise<string[]> {
  fs.mkdirSync(outDir, { recursive: true });
  // Named after the file; numbered when names repeat (the corpus has many component.py).
  const unique = new Set(files.map((f) => path.basename(f))).size === files.length;
  const outputs = files.map((f, i) => path.join(outDir, `${unique ? "" : `${i}-`}${path.basename(f, ".py")}.yaml`));
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < files.length; i = next++) {
      const fn = functions[i] ? ["--function", functions[i]!] : [];
      cpu.seconds += (await exec([kfpCli, "dsl", "compile", "--py", files[i]!, "--output", outputs[i]!, ...fn], path.dirname(files[i]!))).cpuSeconds;
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return outputs;
}

/** Seconds a piece of work takes, wall clock. */
export async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return (performance.now() - started) / 1000;
}

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
export const min = (xs: number[]) => Math.min(...xs);
export const secs = (x: number) => x.toFixed(2);

export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** How busy the machine was before the bench added its own load (other processes skew the figures). */
const LOAD_BEFORE = os.loadavg()[0] ?? 0;

/** For the record: kfp that compiles, Bun that runs the bench, the cores and how busy they were. */
export async function versions(): Promise<string> {
  const kfp = (await exec([PYTHON, "-c", "import kfp; print(kfp.__version__)"])).stdout.trim();
  return `kfp ${kfp} · bun ${Bun.version} · kfp-sync ${(await exec([BIN, "--version"])).stdout.trim()} · ${os.availableParallelism()} cores, load ${LOAD_BEFORE.toFixed(1)} before the run · ${new Date().toISOString().slice(0, 10)}`;
}
