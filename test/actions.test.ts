/** Stage 5, report: what a Gitea/GitHub Actions runner gets — outputs, step summary, annotations, run link. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { runUrlFrom } from "../kfp-sync.ts";
import { examplesCopy, parseOutputs, run, scratch, withServer } from "./helpers";
import { startKfpServer } from "./kfp-server";

describe("actions integration", () => {
  test("GITHUB_OUTPUT: exact names and values, multi-line values as name<<DELIMITER, UTF-8 without BOM", async () => {
    await withServer(startKfpServer(), async (server) => {
      const dir = examplesCopy();
      fs.writeFileSync(path.join(dir, "broken_pipeline.py"), "def x(:\n");
      fs.writeFileSync(path.join(dir, "also_broken_pipeline.py"), "import nope_nope\n");
      const outputs = path.join(scratch(), "output");
      fs.writeFileSync(outputs, "earlier=kept\n");
      const r = await run(["--host", server.url, "--out-dir", scratch(), "--version-tag", "v20260213-143022"], { cwd: dir, env: { GITHUB_OUTPUT: outputs } });
      expect(r.code).toBe(1);
      const raw = fs.readFileSync(outputs);
      expect(raw[0]).not.toBe(0xef); // no BOM
      const text = raw.toString("utf8");
      expect(text.startsWith("earlier=kept\n")).toBe(true); // appended, not overwritten
      const o = parseOutputs(text);
      expect([...o.keys()]).toEqual(["earlier", "compiled", "uploaded", "unchanged", "failed", "version", "failed_pipelines", "summary_json"]);
      expect(o.get("compiled")).toBe("6");
      expect(o.get("uploaded")).toBe("6");
      expect(o.get("unchanged")).toBe("0");
      expect(o.get("failed")).toBe("2");
      expect(o.get("version")).toBe("v20260213-143022");
      expect(o.get("failed_pipelines")).toBe("also_broken_pipeline.py\nbroken_pipeline.py");
      expect(text).toMatch(/^failed_pipelines<<ghadelimiter_[0-9a-f-]{36}$/m);
      expect(JSON.parse(o.get("summary_json")!)).toEqual(r.json());
    });
  });

  test("GITEA_OUTPUT is honoured when GITHUB_OUTPUT is not set", async () => {
    const outputs = path.join(scratch(), "output");
    const r = await run(["--dry-run", "--out-dir", scratch(), "evaluation_pipeline.py"], { cwd: examplesCopy(), env: { GITEA_OUTPUT: outputs } });
    expect(r.code).toBe(0);
    const o = parseOutputs(fs.readFileSync(outputs, "utf8"));
    expect(o.get("compiled")).toBe("1");
    expect(o.get("version")).toBe(""); // a dry run creates no version
  });

  test("the version output is empty when the run created no version (everything unchanged)", async () => {
    await withServer(startKfpServer(), async (server) => {
      const dir = examplesCopy();
      const first = path.join(scratch(), "first");
      const second = path.join(scratch(), "second");
      const args = ["--host", server.url, "--out-dir", scratch(), "evaluation_pipeline.py"];
      expect((await run([...args, "--version-tag", "v20260213-143022"], { cwd: dir, env: { GITHUB_OUTPUT: first } })).code).toBe(0);
      expect(parseOutputs(fs.readFileSync(first, "utf8")).get("version")).toBe("v20260213-143022");
      const again = await run([...args, "--version-tag", "v20260213-150000"], { cwd: dir, env: { GITHUB_OUTPUT: second } });
      expect(again.json().counts.unchanged).toBe(1);
      const o = parseOutputs(fs.readFileSync(second, "utf8"));
      expect(o.get("uploaded")).toBe("0");
      expect(o.get("version")).toBe("");
    });
  });

  test("step summary: a Markdown table in GITHUB_STEP_SUMMARY, also printed to the log", async () => {
    const dir = examplesCopy();
    fs.writeFileSync(path.join(dir, "broken_pipeline.py"), "\n\ndef x(:\n");
    const summaryFile = path.join(scratch(), "summary.md");
    const r = await run(["--dry-run", "--out-dir", scratch(), "--version-tag", "v20260213-143022"], { cwd: dir, env: { GITHUB_STEP_SUMMARY: summaryFile } });
    expect(r.code).toBe(1);
    const md = fs.readFileSync(summaryFile, "utf8");
    expect(md).toContain("### kfp-sync (dry run) — ❌ 6/7 compiled, 0 uploaded, 0 unchanged, 1 failed");
    expect(md).toContain("| pipeline | file | result | version | error |");
    expect(md).toContain("| model-evaluation | `evaluation_pipeline.py` | compiled |");
    expect(md).toMatch(/\| {2}\| `broken_pipeline\.py` \| ❌ compile failed \| {2}\| line 3: SyntaxError/);
    expect(md.split("\n").filter((l) => l.startsWith("| ")).length).toBe(1 + 7);
    expect(r.stderr).toContain("| pipeline | file | result | version | error |"); // Gitea < 1.27 ignores the file
  });

  test("::error annotations on GitHub only, never on Gitea or Forgejo", async () => {
    const dir = scratch({ "broken_pipeline.py": "x = 1\n\ndef y(:\n" });
    const github = await run(["--dry-run"], { cwd: dir, env: { GITHUB_ACTIONS: "true" } });
    expect(github.stderr).toContain("::error file=broken_pipeline.py,line=3,title=kfp-sync compile::SyntaxError");
    const gitea = await run(["--dry-run"], { cwd: dir, env: { GITHUB_ACTIONS: "true", GITEA_ACTIONS: "true" } });
    expect(gitea.stderr).not.toContain("::error");
    const forgejo = await run(["--dry-run"], { cwd: dir, env: { GITHUB_ACTIONS: "true", FORGEJO_ACTIONS: "true" } });
    expect(forgejo.stderr).not.toContain("::error");
    for (const r of [github, gitea, forgejo]) expect(r.stdout).not.toContain("::error");
  });

  // A real Gitea (1.26.0, 1.27.3, with and without sign-in required) answers the version lookup in
  // test/e2e-gitea.test.ts, which opens the link. Only Gitea ≤ 1.25 cannot be built here (the module
  // proxy serves 1.26.0 and 1.27.3), so that case alone keeps a stand-in for /api/v1/version below.
  test("the run link: Gitea ≤ 1.25 and Forgejo by number, GitHub, Gitea ≥ 1.26 and an unknown Gitea by id", async () => {
    const base = { GITHUB_SERVER_URL: "https://git.example", GITHUB_REPOSITORY: "ml/pipes", GITHUB_RUN_NUMBER: "17", GITHUB_RUN_ID: "4711" };
    expect(runUrlFrom({ ...base, GITEA_ACTIONS: "true" }, "1.25.4")).toBe("https://git.example/ml/pipes/actions/runs/17");
    expect(runUrlFrom({ ...base, GITEA_ACTIONS: "true" }, "1.26.0")).toBe("https://git.example/ml/pipes/actions/runs/4711");
    expect(runUrlFrom({ ...base, GITEA_ACTIONS: "true" }, undefined)).toBe("https://git.example/ml/pipes/actions/runs/4711");
    expect(runUrlFrom({ ...base, GITHUB_SERVER_URL: "https://git.example/", GITEA_ACTIONS: "true" }, "1.27.3")).toBe("https://git.example/ml/pipes/actions/runs/4711");
    expect(runUrlFrom({ ...base, GITEA_ACTIONS: "true", FORGEJO_ACTIONS: "true" }, "11.0")).toBe("https://git.example/ml/pipes/actions/runs/17");
    expect(runUrlFrom({ ...base, GITHUB_SERVER_URL: "https://github.com" })).toBe("https://github.com/ml/pipes/actions/runs/4711");
    expect(runUrlFrom({ ...base, KFP_SYNC_RUN_URL: "https://ci.example/x" })).toBe("https://ci.example/x");
    expect(runUrlFrom({})).toBeUndefined();

    // Through the binary, with a Gitea 1.24 that requires sign-in: 403 anonymously, its version with
    // the job's token (as the real 1.26/1.27 answer, test/peers/gitea/README.md).
    const seen: string[] = [];
    const gitea = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: (req) => {
        seen.push(req.headers.get("authorization") ?? "anonymous");
        if (new URL(req.url).pathname !== "/api/v1/version") return new Response("no", { status: 404 });
        return req.headers.get("authorization") === "token job-token" ? Response.json({ version: "1.24.0" }) : Response.json({ message: "Only signed in user is allowed to call APIs." }, { status: 403 });
      },
    });
    try {
      // Only a run with a server asks Gitea (this one's KFP host is closed; the link is what counts here).
      const r = await run(["--dry-run", "--host", "http://127.0.0.1:9", "--retries", "0", "--out-dir", scratch(), "evaluation_pipeline.py"], {
        cwd: examplesCopy(),
        env: { ...base, GITHUB_SERVER_URL: `http://127.0.0.1:${gitea.port}`, GITEA_ACTIONS: "true", ACTIONS_RUNTIME_TOKEN: "job-token" },
      });
      expect(r.json().runUrl).toBe(`http://127.0.0.1:${gitea.port}/ml/pipes/actions/runs/17`);
      expect(seen).toEqual(["anonymous", "token job-token"]);
    } finally {
      gitea.stop(true);
    }
    const flag = await run(["--dry-run", "--out-dir", scratch(), "--run-url", "https://ci.example/run/1", "evaluation_pipeline.py"], { cwd: examplesCopy(), env: base });
    expect(flag.json().runUrl).toBe("https://ci.example/run/1");
    // A dry run without a host makes no network call, not even to Gitea: the version stays unknown, the link is by id.
    const offline = await run(["--dry-run", "--out-dir", scratch(), "evaluation_pipeline.py"], { cwd: examplesCopy(), env: { ...base, GITHUB_SERVER_URL: "http://127.0.0.1:9", GITEA_ACTIONS: "true" } });
    expect(offline.json().runUrl).toBe("http://127.0.0.1:9/ml/pipes/actions/runs/4711");
  });
});
