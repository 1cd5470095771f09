/** The command line as a user and a CI step meet it: flags, exit codes, the summary document. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { args } from "../kfp-sync.ts";
import pkg from "../package.json";
import { BIN, ensureFreshBinary, EXAMPLES, ROOT, run, scratch } from "./helpers";

describe("cli", () => {
  test("--version and --help work with an empty environment and no Bun on PATH", async () => {
    const version = Bun.spawnSync([BIN, "--version"], { env: {} });
    expect(version.exitCode).toBe(0);
    expect(version.stdout.toString().trim()).toBe(pkg.version);
    const help = Bun.spawnSync([BIN, "--help"], { env: {} });
    expect(help.exitCode).toBe(0);
    const text = help.stdout.toString();
    for (const flag of ["--dry-run", "--host", "--namespace", "--token", "--ntfy-url", "--pattern", "--max-depth", "--exclude", "--python", "--timeout"]) {
      expect(text).toContain(flag);
    }
    for (const env of ["KFP_HOST", "KFP_NAMESPACE", "KFP_TOKEN", "NTFY_URL", "KFP_SYNC_PYTHON"]) expect(text).toContain(env);
  });

  test("usage errors exit 2 with a message and no JSON on stdout", async () => {
    const cases: [string[], Record<string, string>, string][] = [
      [["--bogus"], {}, "unknown option --bogus"],
      [["--dry-run", "--jobs", "many"], {}, "--jobs must be a whole number"],
      [["--dry-run", "--timeout", "0"], {}, "--timeout must be a whole number of at least 1"],
      [["--dry-run", "--out-dir", "README.md"], {}, "is a file, not a folder"],
      [["--dry-run", "--host", "not a url"], {}, "is not a URL"],
      [["--dry-run", "--host", "ftp://x"], {}, "must start with http:// or https://"],
      [["--dry-run", "--name-from", "git"], {}, "Invalid value for argument"],
      [["--dry-run", "--function", "nope"], {}, "--function takes FILE=NAME"],
      [["--dry-run", "--version-tag", "Bad Tag"], {}, "breaks the server's name rule"],
      [["--dry-run", "--ntfy-url", "http://ntfy.local/"], {}, "must end with a topic name"],
      [["--dry-run", "--host", "http://127.0.0.1:9"], { KF_PIPELINES_SA_TOKEN_PATH: "/nonexistent/token" }, "/nonexistent/token, which does not exist"],
      [["--dry-run", "--out-dir", scratch()], { TMPDIR: "/nonexistent/tmp" }, "cannot make a scratch folder in /nonexistent/tmp (ENOENT): point TMPDIR at a writable folder with free space"],
    ];
    for (const [args, env, message] of cases) {
      const r = await run(args, { cwd: EXAMPLES, env });
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toContain(message);
      expect(r.stdout, args.join(" ")).toBe("");
    }
  });

  test("an unreadable token file is a usage error that says so", async () => {
    // A folder in the file's place is unreadable for everyone, root included (a chmod 000 file is not).
    const folder = scratch();
    const r = await run(["--dry-run", "--host", "http://127.0.0.1:9"], { cwd: EXAMPLES, env: { KF_PIPELINES_SA_TOKEN_PATH: folder } });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`cannot read the token file ${folder} (EISDIR): check its permissions`);
    expect(r.stdout).toBe("");
  });

  test("the summary: one JSON document on stdout, versioned schema, every field documented in the README", async () => {
    const out = scratch();
    const r = await run(["--dry-run", "--out-dir", out, "--version-tag", "v20260213-143022"], { cwd: EXAMPLES, env: { GITHUB_SHA: "0123456789abcdef0123456789abcdef01234567" } });
    expect(r.code).toBe(0);
    const s = r.json();
    expect(s.schemaVersion).toBe(2);
    expect(s.tool).toEqual({ name: "kfp-sync", version: pkg.version });
    expect(s.kfp.sdk).toBe("2.17.3");
    expect(s.dryRun).toBe(true);
    expect(s.versionTag).toBe("v20260213-143022");
    expect(s.commit).toBe("0123456789abcdef0123456789abcdef01234567");
    expect(s.counts).toEqual({ found: 6, compiled: 6, uploaded: 0, created: 0, versioned: 0, unchanged: 0, failed: 0 });
    expect(typeof s.durationMs).toBe("number");
    for (const p of s.pipelines) {
      expect(Object.keys(p).sort()).toEqual(["file", "name", "output", "state", "timings"]);
      expect(p.state).toBe("compiled");
      expect(p.name).toMatch(/^[a-z0-9][a-z0-9-]*$/);
      expect(fs.existsSync(path.join(out, path.basename(p.output)))).toBe(true);
      expect(p.timings.compileMs).toBeGreaterThan(0);
    }
    // The README documents the schema: every key we emit must appear in a row of its field table
    // (anywhere else in the README, "name" or "file" would be found by chance).
    const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
    const schema = readme.slice(readme.indexOf("## Summary JSON"), readme.indexOf("\n## ", readme.indexOf("## Summary JSON") + 1));
    const rows = schema.split("\n").filter((line) => line.startsWith("| `\""));
    expect(rows.length).toBeGreaterThan(10);
    const keys = new Set<string>();
    const walk = (v: unknown) => {
      if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) (Array.isArray(v) ? null : keys.add(k), walk(x));
    };
    walk(s);
    for (const k of keys) expect(rows.some((row) => row.includes(`"${k}"`)), `README's summary table documents "${k}"`).toBe(true);
  });

  test("the README lists every flag with its environment variable", async () => {
    const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
    for (const [name, def] of Object.entries(args)) {
      if (def.type === "positional") continue;
      expect(readme, name).toContain(`\`--${name}`);
      const env = /\(env ([A-Z_]+)/.exec(def.description)?.[1];
      if (env) expect(readme, env).toContain(`\`${env}\``);
    }
  });

  test("compiled YAML goes to .kfp-sync/ by default and never over a source file", async () => {
    const dir = scratch({ "a_pipeline.py": fs.readFileSync(path.join(EXAMPLES, "evaluation_pipeline.py"), "utf8") });
    const before = fs.readFileSync(path.join(dir, "a_pipeline.py"), "utf8");
    const r = await run(["--dry-run"], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.json().pipelines[0]!.output).toBe(".kfp-sync/a_pipeline.yaml");
    expect(fs.readFileSync(path.join(dir, ".kfp-sync/a_pipeline.yaml"), "utf8")).toStartWith("# PIPELINE DEFINITION");
    expect(fs.readFileSync(path.join(dir, "a_pipeline.py"), "utf8")).toBe(before);
    expect(fs.readdirSync(dir).sort()).toEqual([".kfp-sync", "a_pipeline.py"]);
  });

  test("a dry run without a host makes no network call", async () => {
    // KFP_HOST unset: pointing the default host at nothing would fail if it were contacted.
    const r = await run(["--dry-run", "--out-dir", scratch()], { cwd: EXAMPLES, env: { HTTP_PROXY: "http://127.0.0.1:9", http_proxy: "http://127.0.0.1:9" } });
    expect(r.code).toBe(0);
    expect(r.json().server).toBeUndefined();
    expect(r.stderr).toContain("nothing was compared with a server");
  });

  test("package.json's bin is the binary the README ships, not the script", () => {
    expect(pkg.bin).toEqual({ "kfp-sync": "./kfp-sync" });
    expect(pkg.scripts.build).toContain("--outfile kfp-sync");
  });

  test("the tests never run a binary older than the script: rebuilt, or refused with a reason", () => {
    const dir = scratch({ "tool.ts": "new", tool: "old binary" });
    const [source, bin] = [path.join(dir, "tool.ts"), path.join(dir, "tool")];
    const at = (file: string, seconds: number) => fs.utimesSync(file, seconds, seconds);
    at(bin, 1000);
    at(source, 2000);
    let builds = 0;
    ensureFreshBinary(bin, source, () => (builds++, fs.writeFileSync(bin, "new binary"), { ok: true, output: "" }));
    expect([builds, fs.readFileSync(bin, "utf8")]).toEqual([1, "new binary"]);
    ensureFreshBinary(bin, source, () => (builds++, { ok: true, output: "" })); // fresh now: no build
    expect(builds).toBe(1);
    at(source, Date.now() / 1000 + 60);
    expect(() => ensureFreshBinary(bin, source, undefined)).toThrow(`${bin} is older than ${source}: rebuild it`);
    expect(() => ensureFreshBinary(bin, source, () => ({ ok: false, output: "error: syntax\n" }))).toThrow("rebuilding it failed: error: syntax");
    expect(() => ensureFreshBinary(path.join(dir, "missing"), source, undefined)).toThrow("is missing");
  });

  test("the script runs directly, without a build step (shebang)", async () => {
    const first = fs.readFileSync(path.join(ROOT, "kfp-sync.ts"), "utf8").split("\n")[0];
    expect(first).toBe("#!/usr/bin/env bun");
    expect(fs.statSync(path.join(ROOT, "kfp-sync.ts")).mode & 0o111).not.toBe(0);
    const bunDir = path.join(ROOT, "node_modules/.bin");
    const r = Bun.spawnSync([path.join(ROOT, "kfp-sync.ts"), "--version"], { env: { PATH: `${bunDir}:/usr/bin:/bin` } });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toBe(pkg.version);
  });
});
