/**
 * Where compiled YAML goes, when it cannot go there, and compile results a hostile or vanishing
 * file produces: still one JSON document, a clear problem, a notification, the right exit code.
 */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, EXAMPLES, cleanEnv, examplesCopy, run, scratch, type RunResult, type Summary } from "./helpers";
import { usePeers } from "./with-server.ts";

const TWO = { "evaluation_pipeline.py": { from: path.join(EXAMPLES, "evaluation_pipeline.py") }, "document_ingestion_pipeline.py": { from: path.join(EXAMPLES, "document_ingestion_pipeline.py") } };

const peers = usePeers();

/**
 * Run in `dir` mounted read-only. Root ignores mode bits but not a read-only mount; a private
 * mount namespace (in a user namespace, so it needs no privilege) keeps the mount to this run.
 */
async function runReadOnly(dir: string, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && touch "$0/.probe" 2>/dev/null && exit 99; cd "$0" && exec "$@"';
  const proc = Bun.spawn(["unshare", "--map-root-user", "--mount", "sh", "-c", script, dir, BIN, ...args], { env: cleanEnv(env), stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const code = await proc.exited;
  expect(code, `the read-only mount did not take: ${stderr}`).not.toBe(99);
  return { code, stdout, stderr, json: () => JSON.parse(stdout) as Summary };
}

const notifyEnv = () => ({ NTFY_URL: `${peers.ntfy.url}/ci` });
const failedWith = (s: Summary, file: string) => s.pipelines.find((p) => p.file === file)!.error?.message as string | undefined;

describe("an out dir that cannot be written", () => {
  test("read-only checkout, dry run: compiled all the same, the YAML said not kept, exit 0", async () => {
    const dir = scratch(TWO);
    const r = await runReadOnly(dir, ["--dry-run"]);
    expect(r.code, r.stderr).toBe(0);
    const s = r.json();
    expect(s.counts).toMatchObject({ found: 2, compiled: 2, failed: 0 });
    for (const p of s.pipelines) expect(p.output).toBeUndefined();
    expect(s.problems.length).toBe(2);
    for (const p of s.problems) expect(p.message).toMatch(/the YAML was not kept: cannot write the compiled YAML to \.kfp-sync\/\w+\.yaml: read-only file system/);
    expect(fs.readdirSync(dir).sort()).toEqual(["document_ingestion_pipeline.py", "evaluation_pipeline.py"]);
  });

  test("read-only checkout, real run: each pipeline fails clearly, nothing uploaded, notified, exit 1", async () => {
    const r = await runReadOnly(scratch(TWO), ["--host", peers.kfp.url], notifyEnv());
    expect(r.code).toBe(1);
    const s = r.json();
    expect(s.counts).toMatchObject({ found: 2, failed: 2, uploaded: 0 });
    expect(failedWith(s, "document_ingestion_pipeline.py")).toBe("cannot write the compiled YAML to .kfp-sync/document_ingestion_pipeline.yaml: read-only file system (EROFS)");
    expect(s.pipelines[0]!.error.hint).toContain("--out-dir");
    expect(peers.kfp.requests.filter((q) => q.method === "POST")).toEqual([]);
    expect(peers.ntfy.published.length).toBe(1);
  });

  test("a dangling .kfp-sync symlink: the link is named; a dry run still works", async () => {
    const dir = scratch(TWO);
    fs.symlinkSync("gone/away", path.join(dir, ".kfp-sync"));
    const dry = await run(["--dry-run"], { cwd: dir });
    expect(dry.code).toBe(0);
    expect(dry.json().problems[0]!.message).toContain("the out dir is a symbolic link to gone/away, which does not exist");
    const real = await run(["--host", peers.kfp.url], { cwd: dir, env: notifyEnv() });
    expect(real.code).toBe(1);
    expect(failedWith(real.json(), "evaluation_pipeline.py")).toContain("the out dir is a symbolic link to gone/away, which does not exist");
    expect(peers.ntfy.published.length).toBe(1);
    expect(fs.readlinkSync(path.join(dir, ".kfp-sync"))).toBe("gone/away");
  });

  test("a folder where one YAML goes: that pipeline fails, the folder is kept, the other is uploaded", async () => {
    const dir = scratch(TWO);
    fs.mkdirSync(path.join(dir, ".kfp-sync/evaluation_pipeline.yaml/keep"), { recursive: true });
    const r = await run(["--host", peers.kfp.url], { cwd: dir, env: notifyEnv() });
    expect(r.code).toBe(1);
    const s = r.json();
    expect(failedWith(s, "evaluation_pipeline.py")).toBe("cannot write the compiled YAML to .kfp-sync/evaluation_pipeline.yaml: a folder is in the way (EISDIR)");
    expect(s.pipelines.find((p) => p.file === "document_ingestion_pipeline.py")!.state).toBe("created");
    expect(fs.existsSync(path.join(dir, ".kfp-sync/evaluation_pipeline.yaml/keep"))).toBe(true);
    expect(fs.readdirSync(path.join(dir, ".kfp-sync")).sort()).toEqual(["document_ingestion_pipeline.yaml", "evaluation_pipeline.yaml"]);
    expect(peers.ntfy.published.length).toBe(1);
  });

  test("an out dir below a file: one JSON document, each pipeline says why, exit 1", async () => {
    const dir = scratch({ ...TWO, "notes.txt": "not a folder\n" });
    const r = await run(["--host", peers.kfp.url, "--out-dir", "notes.txt/out"], { cwd: dir, env: notifyEnv() });
    expect(r.code).toBe(1);
    const s = r.json();
    expect(failedWith(s, "evaluation_pipeline.py")).toBe("cannot write the compiled YAML to notes.txt/out/evaluation_pipeline.yaml: a part of the path is a file, not a folder (ENOTDIR)");
    expect(s.counts.failed).toBe(2);
    expect(peers.ntfy.published.length).toBe(1);
  });
});

describe("compile results a file can spoil", () => {
  const GOOD = fs.readFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), "utf8");
  const tiny = (name: string, tail: string) =>
    `from kfp import dsl, compiler\n\n@dsl.component\ndef step() -> None:\n    pass\n\n@dsl.pipeline(name="${name}")\ndef p():\n    step()\n\n${tail}`;

  test("a file removed after it was found says so", async () => {
    // With one job at a time, a_ is compiled (and removes b_) before b_ is started.
    const dir = scratch({ "a_pipeline.py": `import os\nos.remove(os.path.join(os.path.dirname(__file__), "b_pipeline.py"))\n${GOOD}`, "b_pipeline.py": GOOD });
    const r = await run(["--dry-run", "--jobs", "1"], { cwd: dir });
    expect(r.code).toBe(1);
    const s = r.json();
    expect(s.pipelines.find((p) => p.file === "a_pipeline.py")!.state).toBe("compiled");
    expect(failedWith(s, "b_pipeline.py")).toBe("the file was removed after it was found (deleted while kfp-sync ran?)");
  });

  test("a file that replaces kfp's compiler: said so, no YAML or scratch file left behind", async () => {
    const dir = scratch({
      "good_pipeline.py": GOOD,
      "noop_pipeline.py": tiny("noop", "class Quiet:\n    def compile(self, *args, **kwargs):\n        pass\n\ncompiler.Compiler = Quiet\n"),
      "fake_pipeline.py": tiny("fake", "class Fake:\n    def compile(self, pipeline_func, package_path, **kwargs):\n        open(package_path, 'w').write('hello: world\\n')\n\ncompiler.Compiler = Fake\n"),
    });
    const out = path.join(dir, "out");
    const r = await run(["--dry-run", "--out-dir", out], { cwd: dir });
    expect(r.code).toBe(1);
    const s = r.json();
    const interfered = "the file interfered with kfp's compiler (does it replace kfp.compiler.Compiler or sys.modules['kfp']?)";
    expect(failedWith(s, "noop_pipeline.py")).toBe(`the compile wrote no YAML: ${interfered}`);
    expect(failedWith(s, "fake_pipeline.py")).toBe(`the compiled YAML is no pipeline spec (no pipelineInfo.name): ${interfered}`);
    expect(s.pipelines.find((p) => p.file === "good_pipeline.py")!.state).toBe("compiled");
    expect(fs.readdirSync(out)).toEqual(["good_pipeline.yaml"]);
  });
});

test("the examples still compile into the default out dir", async () => {
  const dir = examplesCopy();
  const r = await run(["--dry-run"], { cwd: dir });
  expect(r.code).toBe(0);
  expect(r.json().problems).toEqual([]);
  expect(fs.readdirSync(path.join(dir, ".kfp-sync")).sort()).toEqual(r.json().pipelines.map((p) => path.basename(p.output)).sort());
});
