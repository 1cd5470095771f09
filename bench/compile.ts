/**
 * Compile only: kfp-sync --dry-run (one Python imports kfp once, forks per file) against the plain
 * approach, one `kfp dsl compile` process per file, sequential as CI scripts run it and 2 at a time.
 * Each measurement is repeated, approaches interleaved; the outputs must be byte-identical.
 *
 *   node_modules/.bin/bun bench/compile.ts
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { generate } from "./generate.ts";
import { BIN, OUT, checkSetup, exec, kfpDslCompileAll, markdownTable, median, min, secs, timed, versions } from "./lib.ts";

const SIZES = [10, 50];
const REPEATS = 3;

interface Approach {
  label: string;
  /** Compiles every file in dir into out; returns the output paths, in the order of files. */
  run(dir: string, files: string[], out: string): Promise<string[]>;
}

const APPROACHES: Approach[] = [
  {
    label: "kfp-sync --dry-run",
    async run(dir, files, out) {
      const summary = JSON.parse((await exec([BIN, "--dry-run", "--out-dir", out, "."], dir)).stdout);
      if (summary.counts.compiled !== files.length) throw new Error(`kfp-sync compiled ${summary.counts.compiled} of ${files.length}`);
      return files.map((f) => path.join(out, path.basename(f, ".py") + ".yaml"));
    },
  },
  { label: "kfp dsl compile, sequential", run: (_dir, files, out) => kfpDslCompileAll(files, out, 1) },
  { label: "kfp dsl compile, 2 at a time", run: (_dir, files, out) => kfpDslCompileAll(files, out, 2) },
];

checkSetup();
const rows: (string | number)[][] = [];
const checks: string[] = [];

for (const n of SIZES) {
  const dir = path.join(OUT, "compile", `pipelines-${n}`);
  const files = generate(n, dir);
  const seconds = APPROACHES.map(() => [] as number[]);
  const outputs: string[][] = [];
  // One untimed round first, so no approach pays for a cold page cache.
  if (n === SIZES[0]) for (const a of APPROACHES) await a.run(dir, files, path.join(OUT, "compile", "warm-up"));

  for (let r = 0; r < REPEATS; r++) {
    for (const [i, a] of APPROACHES.entries()) {
      const out = path.join(OUT, "compile", `out-${n}`, String(i));
      fs.rmSync(out, { recursive: true, force: true });
      fs.rmSync(path.join(dir, "__pycache__"), { recursive: true, force: true });
      seconds[i]!.push(await timed(async () => (outputs[i] = await a.run(dir, files, out))));
      process.stderr.write(`${n} pipelines, ${a.label}, run ${r + 1}: ${secs(seconds[i]!.at(-1)!)} s\n`);
    }
  }

  const identical = files.filter((_, f) => outputs.every((o) => fs.readFileSync(o[f]!).equals(fs.readFileSync(outputs[0]![f]!)))).length;
  checks.push(`${n} pipelines: ${identical}/${n} outputs byte-identical across the three approaches`);
  if (identical !== n) process.exitCode = 1;

  const base = median(seconds[0]!);
  for (const [i, a] of APPROACHES.entries()) {
    const m = median(seconds[i]!);
    rows.push([n, a.label, secs(m), secs(min(seconds[i]!)), Math.round((m / n) * 1000), i === 0 ? "1.0×" : `${(m / base).toFixed(1)}×`]);
  }
}

console.log(`## Compile: kfp-sync vs one \`kfp dsl compile\` per file (median of ${REPEATS})\n`);
console.log(markdownTable(["pipelines", "approach", "median s", "min s", "ms per pipeline", "time vs kfp-sync"], rows));
console.log(`\n${checks.join("\n")}\n${await versions()}`);
