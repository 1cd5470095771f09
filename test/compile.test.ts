/** Stage 2, compile: the binary against the real kfp SDK, byte for byte against `kfp dsl compile`. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { EXAMPLES, FIXTURES, ROOT, kfpDslCompile, processesIn, run, scratch } from "./helpers";

const TRICKY = path.join(FIXTURES, "tricky");
const BAD = path.join(FIXTURES, "bad");

async function expectParity(dir: string, files: string[], fnFor: Record<string, string> = {}) {
  const out = scratch();
  const fnArgs = Object.entries(fnFor).flatMap(([file, fn]) => ["--function", `${file}=${fn}`]);
  const r = await run(["--dry-run", "--out-dir", out, ...fnArgs, ...files], { cwd: dir });
  expect(r.code).toBe(0);
  const summary = r.json();
  expect(summary.pipelines.map((p) => p.file)).toEqual([...files].sort());
  for (const p of summary.pipelines) {
    const ref = await kfpDslCompile(path.join(dir, p.file), fnFor[p.file] ? ["--function", fnFor[p.file]!] : []);
    expect(ref.code).toBe(0);
    const ours = fs.readFileSync(path.join(dir, p.output), "utf8");
    expect(ours.length).toBeGreaterThan(100);
    expect(ours).toBe(ref.yaml!);
  }
}

describe("compile: parity with kfp dsl compile", () => {
  test("every bundled example is byte-identical", async () => {
    const files = fs.readdirSync(EXAMPLES).filter((f) => f.endsWith("_pipeline.py"));
    expect(files.length).toBe(6);
    await expectParity(EXAMPLES, files);
  });

  test("components + pipeline, nested pipeline from a module, sibling import, parameters with defaults, a lone component", async () => {
    await expectParity(TRICKY, [
      "components_and_pipeline_pipeline.py",
      "nested_ok_pipeline.py",
      "sibling_import_pipeline.py",
      "params_defaults_pipeline.py",
      "only_component_pipeline.py",
    ]);
  });

  test("--function picks one of several pipelines, as kfp dsl compile --function does", async () => {
    await expectParity(TRICKY, ["nested_pipeline.py", "two_pipelines_pipeline.py"], {
      "nested_pipeline.py": "outer_pipeline",
      "two_pipelines_pipeline.py": "second_pipeline",
    });
  });

  test("a file can name its pipeline itself with a '# kfp-sync: function=' line", async () => {
    const src = fs.readFileSync(path.join(TRICKY, "two_pipelines_pipeline.py"), "utf8");
    const dir = scratch({ "two_pipelines_pipeline.py": `${src}\n# kfp-sync: function=first_pipeline\n` });
    const r = await run(["--dry-run"], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.json().pipelines[0]!.name).toBe("first-pipeline");
  });

  test("several pipelines and no choice: kfp's own message, naming what was found", async () => {
    const r = await run(["--dry-run", "--out-dir", scratch(), "two_pipelines_pipeline.py"], { cwd: TRICKY });
    expect(r.code).toBe(1);
    const error = r.json().pipelines[0]!.error;
    expect(error.message).toContain("Expected one pipeline or one component");
    expect(error.message).toContain("first-pipeline");
    expect(error.message).toContain("second-pipeline");
  });
});

describe("compile: bad files are reported per file, the rest still compiles", () => {
  // file → [line or undefined, text the one-line cause must contain]
  const expected: Record<string, [number | undefined, string]> = {
    "syntax_error_pipeline.py": [13, "SyntaxError: expected ':'"],
    "import_error_pipeline.py": [3, "ImportError: cannot import name 'NoSuchThing'"],
    "missing_dep_pipeline.py": [3, "ModuleNotFoundError: No module named 'not_installed_module_xyz'"],
    "no_pipeline_pipeline.py": [undefined, "Expected one pipeline or one component in module"],
    "exception_at_import_pipeline.py": [5, "RuntimeError: cannot load pipeline config"],
    "exception_in_body_pipeline.py": [17, "ValueError"],
    "sys_exit_pipeline.py": [5, "called sys.exit(3)"],
    "infinite_loop_pipeline.py": [undefined, "did not finish in 25 s"],
    "bad_name_long_pipeline.py": [13, "Invalid pipeline name"],
    "empty_pipeline.py": [undefined, "Expected one pipeline or one component in module"],
    "non_utf8_pipeline.py": [2, "not valid UTF-8 (byte 0xE9 on line 2)"],
    "non_utf8_string_pipeline.py": [6, "SyntaxError: (unicode error)"],
  };
  const compiles = ["loud_pipeline.py", "bad_name_pipeline.py", "huge_pipeline.py"];

  test("every bad input: one-line cause with file:line, others compile, exit 1, stdout only JSON", async () => {
    const good = path.join(EXAMPLES, "evaluation_pipeline.py");
    // The huge file takes several seconds on a loaded machine: a generous per-file timeout.
    const r = await run(["--dry-run", "--timeout", "25", "--out-dir", scratch(), "test/fixtures/bad", good], { cwd: ROOT });
    expect(r.code).toBe(1);
    const summary = r.json(); // throws unless stdout is exactly one JSON document
    const byFile = Object.fromEntries(summary.pipelines.map((p) => [path.basename(p.file), p]));
    for (const [file, [line, text]] of Object.entries(expected)) {
      const p = byFile[file]!;
      expect(p, file).toBeDefined();
      expect(p.status, file).toBe("failed");
      expect(p.error.stage).toBe("compile");
      expect(p.error.message, file).toContain(text);
      expect(p.error.message, file).not.toContain("\n");
      expect(p.error.line, file).toBe(line);
      expect(p.error.file, file).toBe(`test/fixtures/bad/${file}`);
      // And the log says where, as an editor or CI can jump to it.
      expect(r.stderr).toContain(line ? `test/fixtures/bad/${file}:${line}: ` : `test/fixtures/bad/${file}: `);
    }
    for (const file of compiles) expect(byFile[file]!.status, file).toBe("compiled");
    expect(byFile["evaluation_pipeline.py"]!.status).toBe("compiled");
    expect(summary.counts.failed).toBe(Object.keys(expected).length);
    expect(summary.counts.compiled).toBe(compiles.length + 1);
    // A file printing megabytes does not leak into our stdout or the log.
    expect(r.stdout.length).toBeLessThan(100_000);
    expect(r.stderr.length).toBeLessThan(100_000);
  });

  test("an error raised in a sibling module points at that module's line", async () => {
    const dir = scratch({
      "shared_steps.py": "from kfp import dsl\n\n\ndef make():\n    raise KeyError('no such dataset')\n",
      "uses_sibling_pipeline.py": "from kfp import dsl\nfrom shared_steps import make\n\n@dsl.pipeline(name='x')\ndef p():\n    make()\n",
    });
    const r = await run(["--dry-run"], { cwd: dir });
    const error = r.json().pipelines[0]!.error;
    expect(error.file).toBe("shared_steps.py");
    expect(error.line).toBe(5);
    expect(error.message).toBe("KeyError: 'no such dataset'");
  });

  test("a timed-out file leaves no process behind", async () => {
    const dir = scratch({ "spin_pipeline.py": "import subprocess\nsubprocess.Popen(['sleep', '300'])\nwhile True:\n    pass\n" });
    const r = await run(["--dry-run", "--timeout", "2"], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.json().pipelines[0]!.error.message).toContain("did not finish in 2 s");
    expect(processesIn(dir)).toEqual([]);
  });
});

describe("compile: what a file leaves behind", () => {
  test("a process a good file starts in the background neither holds up the run nor outlives it", async () => {
    const src = fs.readFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), "utf8");
    const dir = scratch({ "bg_pipeline.py": `import subprocess\nsubprocess.Popen(["sleep", "30"])\n${src}` });
    const started = performance.now();
    const r = await run(["--dry-run", "--timeout", "20"], { cwd: dir });
    expect(r.code).toBe(0);
    expect(performance.now() - started).toBeLessThan(15_000);
    await Bun.sleep(100);
    expect(processesIn(dir)).toEqual([]);
  });

  test("a file that kills the compiler: the others are reported with the cause, not as interrupted", async () => {
    const dir = scratch({ "a_pipeline.py": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n", "b_pipeline.py": "import time\ntime.sleep(3)\n" });
    const r = await run(["--dry-run", "--jobs", "2"], { cwd: dir });
    expect(r.code).toBe(1);
    const s = r.json();
    expect(s.interrupted).toBeUndefined();
    for (const p of s.pipelines) expect(p.error.message).toContain("the compile driver ended early");
  });
});

describe("compile: Python and kfp", () => {
  test("a Python that does not exist is a usage error that says what to do", async () => {
    const r = await run(["--dry-run", "--python", "/nonexistent/python3"], { cwd: EXAMPLES });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('cannot run Python "/nonexistent/python3"');
    expect(r.stdout).toBe("");
  });

  test("a Python without kfp is a usage error naming the fix", async () => {
    const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: EXAMPLES, env: { KFP_SYNC_PYTHON: "/usr/bin/python3" } });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("kfp is not importable");
    expect(r.stderr).toContain("pip install -r requirements.txt");
  });

  test("a kfp version other than the pinned one is refused", async () => {
    const pinned = await run(["--dry-run", "--kfp-version", "2.17.3", "--out-dir", scratch()], { cwd: EXAMPLES });
    expect(pinned.code).toBe(0);
    expect(pinned.json().kfp.sdk).toBe("2.17.3");
    const other = await run(["--dry-run", "--out-dir", scratch()], { cwd: EXAMPLES, env: { KFP_SYNC_KFP_VERSION: "2.16.0" } });
    expect(other.code).toBe(2);
    expect(other.stderr).toContain("has kfp 2.17.3, but 2.16.0 is pinned");
  });
});
