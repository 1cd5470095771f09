/**
 * Full sync of 50 generated pipelines into a fresh KFP-faithful server (test/kfp-server.ts, in this
 * process, on loopback), twice: the first sync creates everything, the second finds nothing changed.
 *   kfp-sync:       ./kfp-sync --host URL, run twice.
 *   plain approach: kfp dsl compile per file (2 at a time), then bench/upload_baseline.py (kfp.Client).
 * Wall time of each run, and the requests and writes each run made, counted from the server's log.
 *
 *   node_modules/.bin/bun bench/sync.ts
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { startKfpServer, type KfpServer } from "../test/kfp-server.ts";
import { generate } from "./generate.ts";
import { BIN, OUT, PYTHON, checkSetup, exec, kfpDslCompileAll, markdownTable, median, min, secs, timed, versions } from "./lib.ts";

const N = 50;
const REPEATS = 3;
/** The plain approach compiles 2 at a time, as fast as it goes on 2 cores (bench/compile.ts has sequential). */
const COMPILE_PARALLEL = 2;
const BASELINE = path.join(import.meta.dir, "upload_baseline.py");

interface RunRecord {
  seconds: number;
  requests: number;
  writes: number;
  /** Plain approach only: the part spent in upload_baseline.py. */
  uploadSeconds?: number;
}

type Approach = (server: KfpServer, run: number) => Promise<{ uploadSeconds?: number }>;

const dir = path.join(OUT, "sync", "pipelines");
const files = generate(N, dir);

const kfpSync: Approach = async (server) => {
  const out = path.join(OUT, "sync", "kfp-sync");
  const summary = JSON.parse((await exec([BIN, "--host", server.url, "--out-dir", out, "."], dir)).stdout);
  if (summary.counts.failed > 0) throw new Error(`kfp-sync failed: ${JSON.stringify(summary.problems)}`);
  return {};
};

const plain: Approach = async (server, run) => {
  const out = path.join(OUT, "sync", "plain");
  fs.rmSync(out, { recursive: true, force: true });
  const outputs = await kfpDslCompileAll(files, out, COMPILE_PARALLEL);
  const upload = await exec([PYTHON, BASELINE, "--host", server.url, "--tag", `v${run}`, ...outputs]);
  return { uploadSeconds: upload.seconds };
};

/** Two syncs into a fresh server: what each took and sent, and what the server holds afterwards. */
async function twice(approach: Approach): Promise<{ runs: RunRecord[]; pipelines: number; versions: number }> {
  const server = await startKfpServer();
  try {
    const runs: RunRecord[] = [];
    for (const run of [1, 2]) {
      const before = server.requests.length;
      let uploadSeconds: number | undefined;
      const seconds = await timed(async () => ({ uploadSeconds } = await approach(server, run)));
      const sent = server.requests.slice(before);
      const failed = sent.filter((r) => r.status >= 400 && !(r.status === 404 && r.path.includes("/names/")));
      if (failed.length > 0) throw new Error(`unexpected errors: ${failed.map((r) => `${r.method} ${r.path} ${r.status}`).join(", ")}`);
      runs.push({ seconds, requests: sent.length, writes: sent.filter((r) => r.method !== "GET").length, uploadSeconds });
    }
    const state = server.state();
    return { runs, pipelines: state.pipelines.length, versions: state.versions.length };
  } finally {
    await server.stop();
  }
}

checkSetup();
const APPROACHES: [string, Approach][] = [
  ["kfp-sync", kfpSync],
  [`plain: kfp dsl compile (${COMPILE_PARALLEL} at a time) + upload_baseline.py`, plain],
];
const results = APPROACHES.map(() => [] as Awaited<ReturnType<typeof twice>>[]);
for (let r = 0; r < REPEATS; r++) {
  for (const [i, [label, approach]] of APPROACHES.entries()) {
    const result = await twice(approach);
    results[i]!.push(result);
    process.stderr.write(`${label}, round ${r + 1}: ${result.runs.map((x) => `${secs(x.seconds)} s`).join(", ")}; server holds ${result.pipelines} pipelines, ${result.versions} versions\n`);
  }
}

const rows: (string | number)[][] = [];
for (const run of [0, 1]) {
  const base = median(results[0]!.map((res) => res.runs[run]!.seconds));
  for (const [i, [label]] of APPROACHES.entries()) {
    const records = results[i]!.map((res) => res.runs[run]!);
    const m = median(records.map((x) => x.seconds));
    const upload = records[0]!.uploadSeconds === undefined ? "" : ` (upload ${secs(median(records.map((x) => x.uploadSeconds!)))} s)`;
    rows.push([
      run === 0 ? "1st: empty server" : "2nd: nothing changed",
      label,
      `${secs(m)}${upload}`,
      secs(min(records.map((x) => x.seconds))),
      i === 0 ? "1.0×" : `${(m / base).toFixed(1)}×`,
      records[0]!.requests,
      records[0]!.writes,
    ]);
  }
}
const held = results.map((res, i) => `${APPROACHES[i]![0]}: ${res[0]!.pipelines} pipelines, ${res[0]!.versions} versions`);

console.log(`## Sync of ${N} pipelines, twice, into a fresh KFP-faithful server (median of ${REPEATS})\n`);
console.log(markdownTable(["sync", "approach", "median s", "min s", "time vs kfp-sync", "requests", "writes"], rows));
console.log(`\nAfter both syncs the server holds — ${held.join("; ")}.\n${await versions()}`);
