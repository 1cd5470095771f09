/** Stage 2, compile: the binary against the real kfp SDK, byte for byte against `kfp dsl compile`. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BIN, EXAMPLES, FIXTURES, ROOT, cleanEnv, examplesCopy, kfpDslCompile, processesIn, run, scratch, withServer } from "./helpers";
import { startKfpServer } from "./kfp-server";

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
      expect(p.state, file).toBe("failed");
      expect(p.error.stage).toBe("compile");
      expect(p.error.message, file).toContain(text);
      expect(p.error.message, file).not.toContain("\n");
      expect(p.error.line, file).toBe(line);
      expect(p.error.file, file).toBe(`test/fixtures/bad/${file}`);
      // And the log says where, as an editor or CI can jump to it.
      expect(r.stderr).toContain(line ? `test/fixtures/bad/${file}:${line}: ` : `test/fixtures/bad/${file}: `);
    }
    for (const file of compiles) expect(byFile[file]!.state, file).toBe("compiled");
    expect(byFile["evaluation_pipeline.py"]!.state).toBe("compiled");
    expect(summary.counts.failed).toBe(Object.keys(expected).length);
    expect(summary.counts.compiled).toBe(compiles.length + 1);
    // A file printing megabytes does not leak into our stdout or the log.
    expect(r.stdout.length).toBeLessThan(100_000);
    expect(r.stderr.length).toBeLessThan(100_000);
  });

  test("a pipeline file that starts a multiprocessing pool (spawn) at import compiles, and the workers do not re-run kfp-sync's driver", async () => {
    const dir = scratch({
      "pool_helper.py": "import sys\n\n\ndef driver_ran(_):\n    return 'kfp' in sys.modules or hasattr(sys.modules.get('__mp_main__'), 'compile_one')\n",
      "pool_pipeline.py": [
        "import multiprocessing",
        "import pool_helper",
        "from kfp import dsl",
        "",
        "with multiprocessing.get_context('spawn').Pool(2) as pool:",
        "    if any(pool.map(pool_helper.driver_ran, range(2))):",
        "        raise RuntimeError('a worker ran the compile driver')",
        "",
        "@dsl.container_component",
        "def hello():",
        "    return dsl.ContainerSpec(image='busybox', command=['echo', 'hi'])",
        "",
        "@dsl.pipeline(name='pool')",
        "def p():",
        "    hello()",
        "",
      ].join("\n"),
    });
    const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: dir });
    expect(r.json().pipelines[0]!.error?.message).toBeUndefined();
    expect(r.code).toBe(0);
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

describe("compile: every pipeline of a file", () => {
  const TWO = { from: path.join(TRICKY, "two_pipelines_pipeline.py") };

  test("--function FILE=NAME repeated: each pipeline to <file>.<function>.yaml, byte-identical to kfp dsl compile --function", async () => {
    const dir = scratch({ "two_pipelines_pipeline.py": TWO });
    const out = scratch();
    const r = await run(["--dry-run", "--out-dir", out, "--function", "two_pipelines_pipeline.py=second_pipeline", "--function", "two_pipelines_pipeline.py=first_pipeline"], { cwd: dir });
    expect(r.code).toBe(0);
    const s = r.json();
    expect(s.counts).toMatchObject({ found: 2, compiled: 2, failed: 0 });
    expect(s.pipelines.map((p) => [p.file, p.function, p.name, path.relative(out, path.resolve(dir, p.output))])).toEqual([
      ["two_pipelines_pipeline.py", "second_pipeline", "second-pipeline", "two_pipelines_pipeline.second_pipeline.yaml"],
      ["two_pipelines_pipeline.py", "first_pipeline", "first-pipeline", "two_pipelines_pipeline.first_pipeline.yaml"],
    ]);
    for (const p of s.pipelines) {
      const ref = await kfpDslCompile(path.join(dir, p.file), ["--function", p.function]);
      expect(fs.readFileSync(path.resolve(dir, p.output), "utf8")).toBe(ref.yaml!);
    }
    expect(r.stderr).toContain("found 1 pipeline file (2 pipelines)");
  });

  test("a '# kfp-sync: function=A,B' line; a function the file lacks fails alone, with kfp's message", async () => {
    const src = fs.readFileSync(TWO.from, "utf8");
    const dir = scratch({ "two_pipelines_pipeline.py": `${src}\n# kfp-sync: function=first_pipeline, second_pipeline,third_pipeline\n` });
    const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: dir });
    expect(r.code).toBe(1);
    const s = r.json();
    expect(s.pipelines.map((p) => [p.function, p.state, p.name])).toEqual([
      ["first_pipeline", "compiled", "first-pipeline"],
      ["second_pipeline", "compiled", "second-pipeline"],
      ["third_pipeline", "failed", undefined],
    ]);
    expect(s.pipelines[2]!.error.message).toContain("third_pipeline");
    expect(r.stderr).toContain("two_pipelines_pipeline.py: third_pipeline: ");
  });

  test("each pipeline of a file is uploaded as its own pipeline, and a re-sync writes nothing", async () => {
    await withServer(startKfpServer(), async (server) => {
      const dir = scratch({ "two_pipelines_pipeline.py": TWO });
      const args = ["--host", server.url, "--out-dir", path.join(dir, ".out"), "--function", "two_pipelines_pipeline.py=first_pipeline", "--function", "two_pipelines_pipeline.py=second_pipeline"];
      const first = await run(args, { cwd: dir });
      expect(first.code).toBe(0);
      expect(first.json().pipelines.map((p) => [p.function, p.name, p.state])).toEqual([
        ["first_pipeline", "first-pipeline", "created"],
        ["second_pipeline", "second-pipeline", "created"],
      ]);
      expect(server.state().pipelines.map((p) => p.name).sort()).toEqual(["first-pipeline", "second-pipeline"]);
      const writes = server.requests.filter((q) => q.method !== "GET").length;
      const second = await run(args, { cwd: dir });
      expect(second.json().pipelines.map((p) => p.state)).toEqual(["unchanged", "unchanged"]);
      expect(server.requests.filter((q) => q.method !== "GET").length).toBe(writes);
      // Named after the file, each still gets its own name: the file's and the function's.
      const byFile = await run([...args, "--name-from", "file"], { cwd: dir });
      expect(byFile.code).toBe(0);
      expect(byFile.json().pipelines.map((p) => [p.name, p.state])).toEqual([
        ["two-pipelines-pipeline-first-pipeline", "created"],
        ["two-pipelines-pipeline-second-pipeline", "created"],
      ]);
    });
  });
});

describe("compile: the same bytes on every run", () => {
  test("a dict default, which kfp dsl compile writes in per-process key order: three runs, one output, one of kfp's", async () => {
    const dir = scratch({ "dict_default_pipeline.py": { from: path.join(FIXTURES, "nondeterministic/dict_default_pipeline.py") } });
    const outputs = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const out = scratch();
      const r = await run(["--dry-run", "--out-dir", out], { cwd: dir });
      expect(r.code).toBe(0);
      outputs.add(fs.readFileSync(path.join(out, "dict_default_pipeline.yaml"), "utf8"));
    }
    expect(outputs.size).toBe(1);
    const pure = await kfpDslCompile(path.join(dir, "dict_default_pipeline.py"), [], { PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION: "python" });
    expect([...outputs][0]).toBe(pure.yaml!);
  });
});

describe("compile: the repository around the file", () => {
  test("types.py, json.py and enum.py at the root do not shadow the standard library, as under kfp dsl compile", async () => {
    const src = fs.readFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), "utf8");
    const dir = scratch({ "types.py": "class Dataset:\n    pass\n", "json.py": "# the repository's own\n", "enum.py": "RED = 1\n", "evaluation_pipeline.py": src });
    const out = scratch();
    const r = await run(["--dry-run", "--out-dir", out], { cwd: dir });
    expect(r.code).toBe(0);
    const ref = await kfpDslCompile(path.join(dir, "evaluation_pipeline.py"));
    expect(ref.code).toBe(0);
    expect(fs.readFileSync(path.join(out, "evaluation_pipeline.yaml"), "utf8")).toBe(ref.yaml!);
  });

  test("a file name too long for an output name compiles to a shortened, stable, unique one", async () => {
    const src = fs.readFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), "utf8");
    // 254 bytes each: "<name>.yaml" would be 256, and they differ only after the cut.
    const a = `${"x".repeat(230)}${"a".repeat(12)}_pipeline.py`;
    const b = `${"x".repeat(230)}${"b".repeat(12)}_pipeline.py`;
    expect(Buffer.byteLength(a)).toBe(254);
    const dir = scratch({ [a]: src, [b]: src.replace('name="model-evaluation"', 'name="model-evaluation-b"') });
    const outputs: string[][] = [];
    for (let i = 0; i < 2; i++) {
      const out = scratch();
      const r = await run(["--dry-run", "--out-dir", out], { cwd: dir });
      expect(r.code).toBe(0);
      const s = r.json();
      expect(s.counts).toMatchObject({ compiled: 2, failed: 0 });
      outputs.push(s.pipelines.map((p) => path.relative(out, path.resolve(dir, p.output))));
      for (const p of s.pipelines) expect(fs.existsSync(path.resolve(dir, p.output))).toBe(true);
    }
    expect(outputs[0]).toEqual(outputs[1]!);
    expect(new Set(outputs[0]).size).toBe(2);
    for (const name of outputs[0]!) expect(Buffer.byteLength(name)).toBeLessThanOrEqual(255);
  });

  test("pipeline code sees none of the run's secrets in its environment", async () => {
    // ?auth= as ntfy reads it (base64url of "Bearer tk_authparam4444"): an unreadable one is refused before compiling.
    const AUTH_PARAM = "QmVhcmVyIHRrX2F1dGhwYXJhbTQ0NDQ";
    const src = fs.readFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), "utf8");
    const dir = scratch({ "env_pipeline.py": `import json, os\nwith open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "seen.json"), "w") as f:\n    json.dump(dict(os.environ), f)\n${src}` });
    const secrets = { KFP_TOKEN: "kfp-token-1111", KFP_COOKIE: "authservice_session=cookie-2222", NTFY_TOKEN: "tk_ntfytoken3333", NTFY_URL: `http://127.0.0.1:9/ci?auth=${AUTH_PARAM}`, DEPLOY_KEY: "flag-token-5555" };
    const r = await run(["--dry-run", "--out-dir", scratch(), "--token", "flag-token-5555"], { cwd: dir, env: { ...secrets, KEEP_ME: "visible" } });
    expect(r.code).toBe(0);
    const seenText = fs.readFileSync(path.join(dir, "seen.json"), "utf8");
    const seen = JSON.parse(seenText) as Record<string, string>;
    expect(seen.KEEP_ME).toBe("visible"); // the file did read its environment
    for (const name of ["KFP_TOKEN", "KFP_COOKIE", "NTFY_TOKEN", "NTFY_URL", "DEPLOY_KEY"]) expect(Object.keys(seen)).not.toContain(name);
    for (const value of ["kfp-token-1111", "cookie-2222", "ntfytoken3333", AUTH_PARAM, "flag-token-5555"]) expect(seenText).not.toContain(value);
  });

  test("pipeline code running as the same (non-root) user cannot read kfp-sync's own environment", async () => {
    // The file walks up to kfp-sync (its parent is the compile driver, whose parent is kfp-sync) and
    // tries /proc/PID/environ, where KFP_TOKEN & co. are. CAP_SYS_PTRACE reads any process's; the
    // runner image runs as uid 1000 without it, so the run here drops every capability (same uid).
    const probe = `import os
def parent_of(pid):
    with open("/proc/%d/status" % pid) as f:
        return int([l for l in f if l.startswith("PPid:")][0].split()[1])
kfp_sync = parent_of(os.getppid())
try:
    with open("/proc/%d/environ" % kfp_sync, "rb") as f:
        seen = "read: " + ("has the token" if b"kfp-token-7777" in f.read() else "no token")
except OSError as e:
    seen = "refused: " + type(e).__name__
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "seen.txt"), "w") as f:
    f.write(seen)
`;
    const src = fs.readFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), "utf8");
    const dir = scratch({ "probe_pipeline.py": `${probe}${src}` });
    const env = cleanEnv({ KFP_TOKEN: "kfp-token-7777" });
    const proc = Bun.spawn(["setpriv", "--bounding-set=-all", "--inh-caps=-all", BIN, "--dry-run", "--out-dir", path.join(dir, "out"), "probe_pipeline.py"], { cwd: dir, env, stdout: "pipe", stderr: "pipe" });
    const stderr = await new Response(proc.stderr).text();
    expect(await proc.exited, stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, "seen.txt"), "utf8")).toBe("refused: PermissionError");
  });
});

/** Children of a process, from /proc. */
function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "latin1");
      if (stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1] === String(pid)) kids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return kids;
}

/** Processes left in dir once the run is over: a SIGKILL lands at once, but a dying process lingers a moment. */
async function leftIn(dir: string): Promise<number[]> {
  for (let i = 0; i < 50 && processesIn(dir).length > 0; i++) await Bun.sleep(100);
  return processesIn(dir);
}

// Started by a pipeline file in every way that leaves its process group: its own session, setsid(1), a double fork.
const ESCAPES = `import os, subprocess
subprocess.Popen(["sleep", "300"], start_new_session=True)
subprocess.Popen(["setsid", "sleep", "301"])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "302"])
    os._exit(0)
`;

describe("compile: nothing a pipeline file starts outlives the run", () => {
  test("setsid, a new session and a double fork, from a good file and from one that times out", async () => {
    const src = fs.readFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), "utf8");
    const dir = scratch({ "good_pipeline.py": `${ESCAPES}${src}`, "spin_pipeline.py": `${ESCAPES}while True:\n    pass\n` });
    const r = await run(["--dry-run", "--out-dir", scratch(), "--timeout", "5"], { cwd: dir });
    expect(r.code).toBe(1);
    const byFile = Object.fromEntries(r.json().pipelines.map((p) => [p.file, p]));
    expect(byFile["good_pipeline.py"]!.state).toBe("compiled");
    expect(byFile["spin_pipeline.py"]!.error.message).toContain("did not finish in 5 s");
    expect(await leftIn(dir)).toEqual([]);
  });

  test("kill -9 of the compile driver: its children and what they started end too, no .tmp.yaml is left", async () => {
    const dir = scratch({ "hang_pipeline.py": `${ESCAPES}open("started", "w").close()\nimport time\ntime.sleep(120)\n` });
    const out = scratch();
    const proc = Bun.spawn([BIN, "--dry-run", "--out-dir", out], { cwd: dir, env: cleanEnv(), stdout: "pipe", stderr: "pipe" });
    const stdout = new Response(proc.stdout).text();
    while (!fs.existsSync(path.join(dir, "started"))) await Bun.sleep(50);
    const driver = childrenOf(proc.pid);
    expect(driver.length).toBe(1);
    expect(fs.readFileSync(`/proc/${driver[0]}/cmdline`, "latin1")).toContain("kfp_sync_driver.py\0");
    process.kill(driver[0]!, "SIGKILL");
    expect(await proc.exited).toBe(1);
    const s = JSON.parse(await stdout);
    expect(s.pipelines[0].error.message).toContain("the compile driver ended early");
    expect(await leftIn(dir)).toEqual([]);
    expect(fs.readdirSync(out, { recursive: true }).filter((f) => String(f).endsWith(".tmp.yaml"))).toEqual([]);
  });

  test("a signal during the steps before compiling (the Gitea version lookup) is acted on before compiling", async () => {
    let asked!: () => void;
    const lookup = new Promise<void>((resolve) => (asked = resolve));
    const gitea = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => (asked(), new Promise<Response>(() => {})) });
    try {
      const dir = examplesCopy();
      const out = scratch();
      const proc = Bun.spawn([BIN, "--dry-run", "--host", "http://127.0.0.1:9", "--out-dir", out], {
        cwd: dir,
        env: cleanEnv({ GITEA_ACTIONS: "true", GITHUB_SERVER_URL: gitea.url.href, GITHUB_REPOSITORY: "team/pipelines", GITHUB_RUN_ID: "7" }),
        stdout: "pipe",
        stderr: "pipe",
      });
      const stdout = new Response(proc.stdout).text();
      await lookup;
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(143);
      const s = JSON.parse(await stdout);
      expect(s.interrupted).toBe("SIGTERM");
      expect(s.counts).toMatchObject({ found: 6, compiled: 0 });
      for (const p of s.pipelines) expect(p.error.message).toBe("not compiled: the run was interrupted");
      expect(fs.readdirSync(out)).toEqual([]);
    } finally {
      gitea.stop(true);
    }
  });
});
