/**
 * Corpus parity (issue 16): real pipelines nobody here wrote, Google Cloud Pipeline Components
 * 2.22.0 from PyPI (35 pipelines in 26 files, 154 single-component files), compiled by kfp-sync and
 * by `kfp dsl compile` with the same kfp. test/corpus/ holds the manifests and install.sh (copied
 * from the team's shared corpus; they name the package's files, they do not copy them). The venv is
 * `.corpus-venv/` (git-ignored, cached by CI); install.sh --light, with which every manifest row holds.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import YAML from "yaml";
import { yamlDocuments } from "../kfp-sync.ts";
import { BIN, ROOT, cleanEnv, scratch } from "./helpers";

const CORPUS = path.join(ROOT, "test/corpus");
const VENV = path.join(ROOT, ".corpus-venv");
const PYTHON = path.join(VENV, "bin/python");
const KFP = path.join(VENV, "bin/kfp");
const JOBS = Math.max(2, os.availableParallelism());
const MINUTES = 60_000;

interface Row {
  path: string;
  function: string;
  expected: "ok" | "fail";
  deterministic: string;
  name: string;
  sha256_purepy: string;
  note: string;
}

function rowsOf(file: string): Row[] {
  const [header, ...lines] = fs.readFileSync(path.join(CORPUS, file), "utf8").trim().split("\n");
  const keys = header!.split("\t");
  return lines.map((line) => {
    const row = Object.fromEntries(line.split("\t").map((v, i) => [keys[i], v])) as unknown as Row;
    // components.tsv says which row needs the full install; this test uses --light.
    if (row.note.includes("fails with install.sh --light")) row.expected = "fail";
    return row;
  });
}

const PIPELINES = rowsOf("manifest.tsv");
const COMPONENTS = rowsOf("components.tsv");
const ROWS = [...PIPELINES, ...COMPONENTS];
const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");
const where = (r: Row) => `${r.path}${r.function === "-" ? "" : ` --function ${r.function}`}`;

let root = "";
const neutral = scratch(); // the reference runs here, as CI scripts would, not in the package

interface Compiled {
  ok: boolean;
  yaml?: string;
  message: string;
}

/** `kfp dsl compile --py FILE [--function NAME] --output OUT`; the message is kfp's last stderr line. */
async function reference(r: Row, env: Record<string, string> = {}): Promise<Compiled> {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "kfp-corpus-ref-")), "out.yaml");
  const cmd = [KFP, "dsl", "compile", "--py", path.join(root, r.path), "--output", out, ...(r.function === "-" ? [] : ["--function", r.function])];
  const proc = Bun.spawn(cmd, { cwd: neutral, env: cleanEnv(env), stdout: "ignore", stderr: "pipe" });
  const stderr = await new Response(proc.stderr).text();
  const ok = (await proc.exited) === 0 && fs.existsSync(out);
  const yaml = ok ? fs.readFileSync(out, "utf8") : undefined;
  fs.rmSync(path.dirname(out), { recursive: true, force: true });
  return { ok, yaml, message: stderr.trim().split("\n").at(-1)?.trim() ?? "" };
}

/** `jobs` at a time, as `xargs -P` would. */
async function inParallel<T, R>(items: T[], jobs: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) results[i] = await work(items[i]!);
  };
  await Promise.all(Array.from({ length: jobs }, worker));
  return results;
}

/** One kfp-sync run over the rows' files, every --function given (several per file); from the package root. */
async function kfpSync(rows: Row[]): Promise<Map<string, Compiled>> {
  const out = scratch();
  const fns = rows.filter((r) => r.function !== "-").map((r) => `--function=${path.join(root, r.path)}=${r.function}`);
  const files = [...new Set(rows.map((r) => path.join(root, r.path)))];
  // The package root has a types/ package: the driver must not import it as the standard library's.
  const proc = Bun.spawn([BIN, "--dry-run", "--python", PYTHON, "--out-dir", out, ...fns, ...files], { cwd: root, env: cleanEnv(), stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  await proc.exited;
  let summary: { pipelines: Array<Record<string, any>> };
  try {
    summary = JSON.parse(stdout);
  } catch {
    throw new Error(`kfp-sync printed no summary: ${stderr.slice(-1000)}`);
  }
  const byRow = new Map<string, Compiled>();
  for (const p of summary.pipelines) {
    const key = `${path.relative(root, path.resolve(root, p.file))}\t${p.function ?? "-"}`;
    byRow.set(key, p.state === "compiled" ? { ok: true, yaml: fs.readFileSync(path.resolve(root, p.output), "utf8"), message: "" } : { ok: false, message: p.error?.message ?? "" });
  }
  return byRow;
}

beforeAll(() => {
  const install = Bun.spawnSync(["bash", path.join(CORPUS, "install.sh"), VENV, "--light"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (install.exitCode !== 0) throw new Error(`corpus install failed: ${install.stderr.toString().slice(-2000)}`);
  root = install.stdout.toString().trim();
}, 10 * MINUTES);

describe("corpus: GCPC 2.22.0 against kfp dsl compile", () => {
  test(
    `every manifest pipeline (${PIPELINES.length}) and component file (${COMPONENTS.length}): byte-identical, or the same failure`,
    async () => {
      const [refs, ours] = await Promise.all([inParallel(ROWS, JOBS, (r) => reference(r)), kfpSync(ROWS)]);
      const verdicts = { identical: 0, sameFailure: 0, varies: 0 };
      for (const [i, r] of ROWS.entries()) {
        const ref = refs[i]!;
        const mine = ours.get(`${r.path}\t${r.function}`);
        expect(mine, where(r)).toBeDefined();
        expect(ref.ok, `${where(r)}: the reference ${ref.ok ? "compiled" : `failed (${ref.message})`}, the manifest says ${r.expected}`).toBe(r.expected === "ok");
        expect(mine!.ok, `${where(r)}: ${mine!.message}`).toBe(ref.ok);
        if (!ref.ok) {
          expect(mine!.message, where(r)).toContain(ref.message);
          verdicts.sameFailure++;
        } else if (r.deterministic === "yes") {
          expect(mine!.yaml === ref.yaml, `${where(r)}: differs from kfp dsl compile`).toBe(true);
          // kfp-sync reads IR with Bun's native parser: it must read it as the yaml package does.
          expect(yamlDocuments(mine!.yaml!), `${where(r)}: Bun.YAML and the yaml package disagree`).toEqual(YAML.parseAllDocuments(mine!.yaml!).map((d) => d.toJS()));
          verdicts.identical++;
        } else {
          // kfp itself varies here (see the next test); ours is the one output it gives with the pure-python protobuf.
          expect(sha256(mine!.yaml!), where(r)).toBe(r.sha256_purepy);
          verdicts.varies++;
        }
      }
      console.log(`corpus parity: ${verdicts.identical} identical, ${verdicts.sameFailure} the same failure, ${verdicts.varies} where kfp varies (one of kfp's outputs), of ${ROWS.length}`);
      expect(verdicts.identical + verdicts.sameFailure + verdicts.varies).toBe(ROWS.length);
    },
    30 * MINUTES,
  );

  test(
    "where kfp is not deterministic: two reference runs differ, and kfp-sync gives one of kfp's outputs, the same on every run",
    async () => {
      const varying = ROWS.filter((r) => r.deterministic !== "yes" && r.expected === "ok");
      expect(varying.map((r) => r.path)).toContain("preview/llm/rlaif/component.py");
      const runs = await Promise.all([kfpSync(varying), kfpSync(varying), kfpSync(varying)]);
      for (const r of varying) {
        const key = `${r.path}\t${r.function}`;
        const ours = runs.map((run) => run.get(key)!.yaml!);
        expect(new Set(ours).size, `${where(r)}: kfp-sync gave different bytes in 3 runs`).toBe(1);
        // The upb protobuf's map order is seeded per process: a few runs show two outputs. A
        // two-key dict gives each order half the time, so 8 runs agree 1 time in 128: up to 24.
        const seen = new Set<string>();
        let tries = 0;
        while (tries < 24 && seen.size < 2) {
          for (const ref of await Promise.all([reference(r), reference(r)])) seen.add(ref.yaml!);
          tries += 2;
        }
        expect(seen.size, `${where(r)}: kfp dsl compile gave one output in ${tries} runs`).toBeGreaterThanOrEqual(2);
        // With the pure-python protobuf kfp dsl compile gives one output, and it is ours.
        const pure = await reference(r, { PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION: "python" });
        expect(ours[0] === pure.yaml, `${where(r)}: not kfp dsl compile's output`).toBe(true);
      }
    },
    30 * MINUTES,
  );
});
