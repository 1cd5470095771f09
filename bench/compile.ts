/**
 * Compile only. Four approaches on generated pipelines, repeated and interleaved:
 *   - kfp-sync --dry-run: one Python imports kfp once, forks a clean child per file;
 *   - the lower bound (lower_bound.py): one Python per core imports kfp once and compiles its share
 *     in-process, no isolation between files: the floor any approach pays;
 *   - one `kfp dsl compile` per file, sequential as CI scripts run it, and 2 at a time.
 * Then 1,000 pipelines (kfp-sync and the lower bound: time, CPU, peak memory), and the real corpus
 * (GCPC 2.22.0, test/corpus/: 35 pipelines, kfp-sync against `kfp dsl compile` two at a time).
 * Every output must be byte-identical across the approaches. CPU time (user + system of the whole
 * process tree) is reported beside wall time: on a shared machine it moves far less with load.
 *
 *   node_modules/.bin/bun bench/compile.ts [--quick]     (--quick: skip the sequential loop and the corpus)
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { generate } from "./generate.ts";
import { BIN, OUT, ROOT, checkSetup, exec, kfpDslCompileAll, lowerBound, markdownTable, median, min, secs, versions } from "./lib.ts";

const QUICK = process.argv.includes("--quick");
const SIZES = [10, 50];
const REPEATS = 3;
const CORES = os.availableParallelism();

interface Measured {
  outputs: string[];
  seconds: number;
  cpu: number;
}

interface Approach {
  label: string;
  /** Compiles every file in dir into out. */
  run(dir: string, files: string[], out: string): Promise<Measured>;
}

async function kfpSync(dir: string, files: string[], out: string): Promise<Measured> {
  const ran = await exec([BIN, "--dry-run", "--out-dir", out, "."], dir);
  const summary = JSON.parse(ran.stdout);
  if (summary.counts.compiled !== files.length) throw new Error(`kfp-sync compiled ${summary.counts.compiled} of ${files.length}`);
  return { outputs: files.map((f) => path.join(out, path.basename(f, ".py") + ".yaml")), seconds: ran.seconds, cpu: ran.cpuSeconds };
}

async function plain(files: string[], out: string, parallel: number): Promise<Measured> {
  const cpu = { seconds: 0 };
  const started = performance.now();
  const outputs = await kfpDslCompileAll(files, out, parallel, cpu);
  return { outputs, seconds: (performance.now() - started) / 1000, cpu: cpu.seconds };
}

const APPROACHES: Approach[] = [
  { label: "kfp-sync --dry-run", run: (dir, files, out) => kfpSync(dir, files, out) },
  {
    label: `lower bound: ${CORES} Pythons, kfp imported once, in-process`,
    run: async (_dir, files, out) => {
      const { outputs, ran } = await lowerBound(files, out, CORES);
      return { outputs, seconds: ran.seconds, cpu: ran.cpuSeconds };
    },
  },
  ...(QUICK ? [] : [{ label: "kfp dsl compile, sequential", run: (_dir: string, files: string[], out: string) => plain(files, out, 1) }]),
  { label: "kfp dsl compile, 2 at a time", run: (_dir, files, out) => plain(files, out, 2) },
];

checkSetup();
const loadBefore = os.loadavg().map((l) => l.toFixed(1)).join(" ");
const rows: (string | number)[][] = [];
const checks: string[] = [];

for (const n of SIZES) {
  const dir = path.join(OUT, "compile", `pipelines-${n}`);
  const files = generate(n, dir);
  const wall = APPROACHES.map(() => [] as number[]);
  const cpu = APPROACHES.map(() => [] as number[]);
  const outputs: string[][] = [];
  // One untimed round first, so no approach pays for a cold page cache.
  if (n === SIZES[0]) for (const a of APPROACHES) await a.run(dir, files, path.join(OUT, "compile", "warm-up"));

  for (let r = 0; r < REPEATS; r++) {
    for (const [i, a] of APPROACHES.entries()) {
      const out = path.join(OUT, "compile", `out-${n}`, String(i));
      fs.rmSync(out, { recursive: true, force: true });
      fs.rmSync(path.join(dir, "__pycache__"), { recursive: true, force: true });
      const m = await a.run(dir, files, out);
      outputs[i] = m.outputs;
      wall[i]!.push(m.seconds);
      cpu[i]!.push(m.cpu);
      process.stderr.write(`${n} pipelines, ${a.label}, run ${r + 1}: ${secs(m.seconds)} s, CPU ${secs(m.cpu)} s\n`);
    }
  }

  const identical = files.filter((_, f) => outputs.every((o) => fs.readFileSync(o[f]!).equals(fs.readFileSync(outputs[0]![f]!)))).length;
  checks.push(`${n} pipelines: ${identical}/${n} outputs byte-identical across the ${APPROACHES.length} approaches`);
  if (identical !== n) process.exitCode = 1;

  const floorWall = median(wall[1]!);
  const floorCpu = median(cpu[1]!);
  for (const [i, a] of APPROACHES.entries()) {
    const w = median(wall[i]!);
    const c = median(cpu[i]!);
    rows.push([n, a.label, secs(w), secs(min(wall[i]!)), secs(c), Math.round((w / n) * 1000), `${(w / floorWall).toFixed(2)}×`, `${(c / floorCpu).toFixed(2)}×`]);
  }
}

console.log(`## Compile: kfp-sync, the lower bound, and one \`kfp dsl compile\` per file (median of ${REPEATS})\n`);
console.log(markdownTable(["pipelines", "approach", "median s", "min s", "median CPU s", "ms per pipeline", "time vs lower bound", "CPU vs lower bound"], rows));
console.log(`\n${checks.join("\n")}`);

// ─── 1,000 pipelines: does it scale, and how much memory ─────────────────────────────────────────
{
  const n = 1000;
  const dir = path.join(OUT, "compile", `pipelines-${n}`);
  const files = generate(n, dir);
  const out = path.join(OUT, "compile", `out-${n}`);
  fs.rmSync(out, { recursive: true, force: true });
  const ks = await exec([BIN, "--dry-run", "--out-dir", path.join(out, "ks"), "."], dir);
  const summary = JSON.parse(ks.stdout);
  process.stderr.write(`${n} pipelines, kfp-sync: ${secs(ks.seconds)} s, CPU ${secs(ks.cpuSeconds)} s\n`);
  const lb = await lowerBound(files, path.join(out, "lb"), CORES);
  process.stderr.write(`${n} pipelines, lower bound: ${secs(lb.ran.seconds)} s, CPU ${secs(lb.ran.cpuSeconds)} s\n`);
  const identical = lb.outputs.filter((o, i) => fs.readFileSync(o).equals(fs.readFileSync(path.join(out, "ks", path.basename(files[i]!, ".py") + ".yaml")))).length;
  console.log(`\n## 1,000 pipelines (one run each)\n`);
  console.log(
    markdownTable(
      ["approach", "wall s", "CPU s", "peak memory of its largest process", "compiled"],
      [
        ["kfp-sync --dry-run", secs(ks.seconds), secs(ks.cpuSeconds), `${Math.round(ks.peakMiB)} MiB`, `${summary.counts.compiled}/${n}`],
        ["lower bound", secs(lb.ran.seconds), secs(lb.ran.cpuSeconds), `${Math.round(lb.ran.peakMiB)} MiB`, `${n}/${n}`],
        ["ratio", `${(ks.seconds / lb.ran.seconds).toFixed(2)}×`, `${(ks.cpuSeconds / lb.ran.cpuSeconds).toFixed(2)}×`, "", ""],
      ],
    ),
  );
  console.log(`\n${identical}/${n} outputs byte-identical`);
  if (identical !== n || summary.counts.compiled !== n) process.exitCode = 1;
}

// ─── The real corpus: 35 pipelines of GCPC 2.22.0 ────────────────────────────────────────────────
if (!QUICK) {
  const venv = path.join(ROOT, ".corpus-venv");
  const install = await exec(["bash", path.join(ROOT, "test/corpus/install.sh"), venv, "--light"]);
  const root = install.stdout.trim();
  const [header, ...lines] = fs.readFileSync(path.join(ROOT, "test/corpus/manifest.tsv"), "utf8").trim().split("\n");
  const col = (name: string) => header!.split("\t").indexOf(name);
  const rows35 = lines.map((l) => l.split("\t")).filter((r) => r[col("expected")] === "ok");
  const files = rows35.map((r) => path.join(root, r[col("path")]!));
  const functions = rows35.map((r) => r[col("function")]!);
  const python = path.join(venv, "bin/python");
  const wall: number[][] = [[], []];
  const cpu: number[][] = [[], []];
  const corpusOut = path.join(OUT, "compile", "corpus");
  let identical = 0;
  for (let r = 0; r < REPEATS; r++) {
    fs.rmSync(corpusOut, { recursive: true, force: true });
    const fnArgs = rows35.map((row, i) => `--function=${files[i]}=${row[col("function")]}`);
    const ks = await exec([BIN, "--dry-run", "--python", python, "--out-dir", path.join(corpusOut, "ks"), ...fnArgs, ...new Set(files)], root);
    wall[0]!.push(ks.seconds);
    cpu[0]!.push(ks.cpuSeconds);
    const ref = await (async () => {
      const c = { seconds: 0 };
      const started = performance.now();
      const outputs = await kfpDslCompileAll(files, path.join(corpusOut, "ref"), 2, c, path.join(venv, "bin/kfp"), functions);
      return { outputs, seconds: (performance.now() - started) / 1000, cpu: c.seconds };
    })();
    wall[1]!.push(ref.seconds);
    cpu[1]!.push(ref.cpu);
    process.stderr.write(`corpus run ${r + 1}: kfp-sync ${secs(ks.seconds)} s (CPU ${secs(ks.cpuSeconds)}), kfp dsl compile 2 at a time ${secs(ref.seconds)} s (CPU ${secs(ref.cpu)})\n`);
    const summary = JSON.parse(ks.stdout) as { pipelines: Array<{ file: string; function?: string; output?: string }> };
    identical = rows35.filter((row, i) => {
      const p = summary.pipelines.find((q) => path.resolve(root, q.file) === files[i] && q.function === row[col("function")]);
      return p?.output && fs.readFileSync(path.resolve(root, p.output)).equals(fs.readFileSync(ref.outputs[i]!));
    }).length;
  }
  console.log(`\n## The corpus: GCPC 2.22.0, ${rows35.length} pipelines that compile (median of ${REPEATS})\n`);
  console.log(
    markdownTable(
      ["approach", "median s", "min s", "median CPU s"],
      [
        ["kfp-sync --dry-run, one run with every --function", secs(median(wall[0]!)), secs(min(wall[0]!)), secs(median(cpu[0]!))],
        ["kfp dsl compile --function, 2 at a time", secs(median(wall[1]!)), secs(min(wall[1]!)), secs(median(cpu[1]!))],
        ["ratio (kfp dsl compile / kfp-sync)", `${(median(wall[1]!) / median(wall[0]!)).toFixed(1)}×`, "", `${(median(cpu[1]!) / median(cpu[0]!)).toFixed(1)}×`],
      ],
    ),
  );
  // The reference uses the default (upb) protobuf: rlaif_pipeline may differ from it (test/corpus.test.ts shows why).
  console.log(`\n${identical}/${rows35.length} outputs byte-identical to this run of kfp dsl compile (rlaif_pipeline varies under kfp dsl compile itself)`);
}

console.log(`\nload average before the bench: ${loadBefore} (1, 5, 15 min)\n${await versions()}`);
