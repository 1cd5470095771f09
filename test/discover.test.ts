/** Stage 1, discover: through the binary in --dry-run, so the real walk and the real report are tested. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { EXAMPLES, run, scratch } from "./helpers";

const PIPELINE = (name: string) => `from kfp import dsl

@dsl.component(base_image="python:3.11-slim")
def hello() -> str:
    return "hi"

@dsl.pipeline(name="${name}")
def p():
    hello()
`;

const files = (summary: { pipelines: Array<Record<string, any>> }) => summary.pipelines.map((p) => p.file);

describe("discover", () => {
  test("default: *_pipeline.py at the top level only, in a stable order", async () => {
    const dir = scratch({
      "b_pipeline.py": PIPELINE("b"),
      "a_pipeline.py": PIPELINE("a"),
      "helper.py": "x = 1\n",
      "sub/c_pipeline.py": PIPELINE("c"),
    });
    const r = await run(["--dry-run"], { cwd: dir });
    expect(r.code).toBe(0);
    expect(files(r.json())).toEqual(["a_pipeline.py", "b_pipeline.py"]);
  });

  test("--max-depth, repeatable --pattern and --exclude", async () => {
    const dir = scratch({
      "a_pipeline.py": PIPELINE("a"),
      "sub/c_pipeline.py": PIPELINE("c"),
      "sub/deeper/d_pipeline.py": PIPELINE("d"),
      "sub/train_flow.py": PIPELINE("t"),
      "skip/e_pipeline.py": PIPELINE("e"),
    });
    const deep = await run(["--dry-run", "--max-depth", "3", "--exclude", "skip"], { cwd: dir });
    expect(files(deep.json())).toEqual(["a_pipeline.py", "sub/c_pipeline.py", "sub/deeper/d_pipeline.py"]);
    const patterns = await run(["--dry-run", "--max-depth=2", "--pattern", "*_pipeline.py", "--pattern", "*_flow.py", "--exclude", "skip/**"], { cwd: dir });
    expect(files(patterns.json())).toEqual(["a_pipeline.py", "sub/c_pipeline.py", "sub/train_flow.py"]);
    const fromEnv = await run(["--dry-run"], { cwd: dir, env: { KFP_SYNC_PATTERN: "*_flow.py", KFP_SYNC_MAX_DEPTH: "2" } });
    expect(files(fromEnv.json())).toEqual(["sub/train_flow.py"]);
  });

  test("positional files and folders; a missing one is a usage error", async () => {
    const dir = scratch({ "x/a_pipeline.py": PIPELINE("a"), "y/b_pipeline.py": PIPELINE("b"), "odd.py": PIPELINE("odd") });
    const r = await run(["--dry-run", "y", "x", "odd.py"], { cwd: dir });
    expect(r.code).toBe(0);
    expect(files(r.json())).toEqual(["odd.py", "x/a_pipeline.py", "y/b_pipeline.py"]);
    const missing = await run(["--dry-run", "nope"], { cwd: dir });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("nope: no such file or folder");
    expect(missing.stdout).toBe("");
    fs.symlinkSync("me", path.join(dir, "me"));
    const loop = await run(["--dry-run", "me"], { cwd: dir });
    expect(loop.code).toBe(2);
    expect(loop.stderr).toContain("me: cannot read (ELOOP)");
  });

  test("symlink loops, broken links, unreadable files and non-UTF-8 names are reported, not crashed on", async () => {
    const dir = scratch({ "a_pipeline.py": PIPELINE("a"), "loop/b_pipeline.py": PIPELINE("b") });
    fs.symlinkSync("..", path.join(dir, "loop/up"));
    fs.symlinkSync("nowhere.py", path.join(dir, "gone_pipeline.py"));
    fs.symlinkSync("self_pipeline.py", path.join(dir, "self_pipeline.py"));
    fs.writeFileSync(path.join(dir, "secret_pipeline.py"), PIPELINE("s"));
    fs.chmodSync(path.join(dir, "secret_pipeline.py"), 0o000);
    fs.writeFileSync(Buffer.concat([Buffer.from(path.join(dir, "caf")), Buffer.from([0xe9]), Buffer.from("_pipeline.py")]), PIPELINE("c"));
    const r = await run(["--dry-run", "--max-depth", "6"], { cwd: dir });
    const s = r.json();
    expect(r.code).toBe(1);
    const problems = s.problems.map((p) => `${p.file}: ${p.message}`).join("\n");
    expect(problems).toContain("gone_pipeline.py: broken symbolic link");
    expect(problems).toContain("self_pipeline.py: symbolic link loop");
    expect(problems).toMatch(/caf.*_pipeline\.py: file name is not valid UTF-8/);
    // root may read anything; the permission check only bites for other users.
    if (process.getuid?.() !== 0) expect(problems).toContain("secret_pipeline.py: cannot read");
    // The good ones still compile, each exactly once despite the loop.
    const ok = s.pipelines.filter((p) => p.state === "compiled").map((p) => p.file);
    expect(ok).toContain("a_pipeline.py");
    expect(ok.filter((f: string) => f.endsWith("b_pipeline.py"))).toEqual(["loop/b_pipeline.py"]);
  });

  test("a folder link pointing up is a note, not a failed pipeline", async () => {
    const dir = scratch({ "a/b/c_pipeline.py": PIPELINE("c") });
    fs.symlinkSync("..", path.join(dir, "a/b/up"));
    const r = await run(["--dry-run", "--max-depth", "6", "a"], { cwd: dir });
    expect(r.code).toBe(0);
    const s = r.json();
    expect(files(s)).toEqual(["a/b/c_pipeline.py"]);
    expect(s.problems).toEqual([]);
    expect(s.notes).toEqual([{ stage: "discover", file: "a/b/up", message: "links to a, a folder this search is already in: not followed" }]);
    expect(r.stderr).toContain("a/b/up: links to a");
  });

  test("several links to one file: the first name in sorted order is compiled, the others are noted", async () => {
    const dir = scratch({ "src/real.py": PIPELINE("one") });
    // Created out of order, so the folder order (which differs between ext4 and tmpfs) is not the sorted one.
    for (const name of ["m_pipeline.py", "z_pipeline.py", "b_pipeline.py"]) fs.symlinkSync("src/real.py", path.join(dir, name));
    for (let i = 0; i < 2; i++) {
      const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: dir });
      expect(r.code).toBe(0);
      const s = r.json();
      expect(files(s)).toEqual(["b_pipeline.py"]);
      expect(s.notes.map((n: Record<string, string>) => `${n.file}: ${n.message}`)).toEqual([
        "m_pipeline.py: the same file as b_pipeline.py, which is compiled instead (the first name in sorted order)",
        "z_pipeline.py: the same file as b_pipeline.py, which is compiled instead (the first name in sorted order)",
      ]);
    }
  });

  test("a FIFO, a socket or a device named on the command line is not a pipeline file and is never opened", async () => {
    const dir = scratch({ "a_pipeline.py": PIPELINE("a") });
    expect(Bun.spawnSync(["mkfifo", path.join(dir, "fifo_pipeline.py")]).exitCode).toBe(0);
    fs.symlinkSync("fifo_pipeline.py", path.join(dir, "via_link_pipeline.py"));
    fs.symlinkSync("/dev/zero", path.join(dir, "zero_pipeline.py"));
    const socket = Bun.listen({ unix: path.join(dir, "sock_pipeline.py"), socket: { data() {} } });
    try {
      // Opening the FIFO would block for ever (no writer); reading /dev/zero would not end either.
      const r = await run(["--dry-run", "fifo_pipeline.py", "via_link_pipeline.py", "zero_pipeline.py", "sock_pipeline.py", "a_pipeline.py"], { cwd: dir });
      expect(r.code).toBe(1);
      const s = r.json();
      const byFile = Object.fromEntries(s.pipelines.map((p) => [p.file, p]));
      expect(byFile["a_pipeline.py"]!.state).toBe("compiled");
      expect(byFile["fifo_pipeline.py"]!.error.message).toBe("not a pipeline file: it is a FIFO");
      expect(byFile["via_link_pipeline.py"]!.error.message).toBe(`not a pipeline file: it links to ${fs.realpathSync(dir)}/fifo_pipeline.py, which is a FIFO`);
      expect(byFile["zero_pipeline.py"]!.error.message).toBe("not a pipeline file: it links to /dev/zero, which is a device");
      expect(byFile["sock_pipeline.py"]!.error.message).toBe("not a pipeline file: it is a socket");
      expect(s.counts).toMatchObject({ found: 5, compiled: 1, failed: 4 });
      // Found by a search instead: skipped with a note, the run is fine.
      const searched = await run(["--dry-run", "--out-dir", scratch()], { cwd: dir });
      expect(searched.code).toBe(0);
      expect(files(searched.json())).toEqual(["a_pipeline.py"]);
      expect(searched.json().notes.map((n: Record<string, string>) => `${n.file}: ${n.message}`).sort()).toEqual([
        "fifo_pipeline.py: a FIFO, not a pipeline file: skipped",
        "sock_pipeline.py: a socket, not a pipeline file: skipped",
        "via_link_pipeline.py: a FIFO, not a pipeline file: skipped",
        "zero_pipeline.py: a device, not a pipeline file: skipped",
      ]);
    } finally {
      socket.stop(true);
    }
  });

  test("--function naming a file this run does not find is a usage error", async () => {
    const dir = scratch({ "a_pipeline.py": PIPELINE("a"), "sub/b_pipeline.py": PIPELINE("b") });
    const r = await run(["--dry-run", "--function", "sub/b_pipeline.py=p"], { cwd: dir });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain("--function sub/b_pipeline.py=p: sub/b_pipeline.py is not one of the files this run found (.; pattern *_pipeline.py, --max-depth 1)");
    const typo = await run(["--dry-run", "--function", "a_pipline.py=p"], { cwd: dir });
    expect(typo.code).toBe(2);
    // Named correctly, it is used.
    const ok = await run(["--dry-run", "--function", "a_pipeline.py=p"], { cwd: dir });
    expect(ok.code).toBe(0);
  });

  test("a search that finds nothing says where it looked and for what", async () => {
    const dir = scratch({ "sub/a_pipeline.py": PIPELINE("a"), "b_flow.py": PIPELINE("b") });
    const r = await run(["--dry-run", "--pattern", "*_pipe.py", "--pattern", "*_dag.py"], { cwd: dir });
    expect(r.code).toBe(0);
    const s = r.json();
    expect(s.pipelines).toEqual([]);
    expect(s.notes[0].message).toBe(`no file matching *_pipe.py or *_dag.py in ${fs.realpathSync(dir)} (--max-depth 1)`);
    expect(r.stderr).toContain("no file matching *_pipe.py or *_dag.py in");
  });

  test("the bundled examples: six pipelines", async () => {
    const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: EXAMPLES });
    expect(r.code).toBe(0);
    expect(files(r.json())).toEqual([
      "document_ingestion_pipeline.py",
      "dvd_transcription_pipeline.py",
      "evaluation_pipeline.py",
      "qlora_pdf_pipeline.py",
      "vllm_tuning_pipeline.py",
      "voice_cloning_pipeline.py",
    ]);
  });
});
