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
    expect(problems).toContain("loop/up: symbolic link loop");
    expect(problems).toContain("gone_pipeline.py: broken symbolic link");
    expect(problems).toContain("self_pipeline.py: symbolic link loop");
    expect(problems).toMatch(/caf.*_pipeline\.py: file name is not valid UTF-8/);
    // root may read anything; the permission check only bites for other users.
    if (process.getuid?.() !== 0) expect(problems).toContain("secret_pipeline.py: cannot read");
    // The good ones still compile, each exactly once despite the loop.
    const ok = s.pipelines.filter((p) => p.status === "compiled").map((p) => p.file);
    expect(ok).toContain("a_pipeline.py");
    expect(ok.filter((f: string) => f.endsWith("b_pipeline.py"))).toEqual(["loop/b_pipeline.py"]);
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
