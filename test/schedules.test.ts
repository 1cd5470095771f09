/**
 * Stage 3b, schedules: kfp-sync.yaml against the KFP imitation's recorded experiment and recurring-run
 * behaviour (test/contracts/kfp-apiserver-2.17.0), the binary end to end. The create → unchanged →
 * replace test also runs against KFP_TEST_HOST with names unique to the run; the others need the
 * imitation (faults, a fresh server, pruning, which on a shared cluster could reach other syncs' runs).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { run, scratch } from "./helpers";
import { startFaultProxy } from "./fault-proxy";
import { startKfpServer, type KfpServer, type RecordedRequest } from "./kfp-server";
import { startNtfyServer } from "./ntfy-server";
import { imitationOnly, kfpTarget, type KfpTarget } from "./kfp-target";

// `text` has no default: a schedule must give it.
const pipelineSource = (name: string, times = 2) => `from kfp import dsl

@dsl.component(base_image="python:3.11-slim")
def say(text: str, times: int, ratio: float):
    print(text * times, ratio)

@dsl.pipeline(name="${name}")
def demo(text: str, times: int = ${times}, ratio: float = 0.5, flag: bool = False):
    say(text=text, times=times, ratio=ratio)
`;

interface Rr {
  recurring_run_id: string;
  display_name: string;
  description?: string;
  status: string;
  experiment_id: string;
  max_concurrency: string;
  no_catchup?: boolean;
  trigger: Record<string, any>;
  runtime_config?: { parameters?: Record<string, unknown> };
  pipeline_version_reference: { pipeline_id: string; pipeline_version_id?: string };
}

function headers(target: { token?: string }): Record<string, string> {
  return target.token ? { authorization: `Bearer ${target.token}` } : {};
}

async function api<T = any>(target: { url: string; token?: string }, method: string, route: string, body?: unknown): Promise<T> {
  const res = await fetch(`${target.url}/apis/v2beta1${route}`, { method, headers: { ...headers(target), "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

async function recurringRuns(target: { url: string; token?: string; namespace?: string }): Promise<Rr[]> {
  const all: Rr[] = [];
  let token = "";
  do {
    const q = new URLSearchParams({ page_size: "200", ...(token ? { page_token: token } : {}), ...(target.namespace ? { namespace: target.namespace } : {}) });
    const page = await api(target, "GET", `/recurringruns?${q}`);
    all.push(...(page.recurringRuns ?? []));
    token = page.next_page_token ?? "";
  } while (token);
  return all;
}

const scheduleWrites = (requests: RecordedRequest[]) => requests.filter((r) => r.method !== "GET" && /\/(recurringruns|experiments)/.test(r.path));

function project(pipeline: string, yaml: string): string {
  return scratch({ "demo_pipeline.py": pipelineSource(pipeline), "kfp-sync.yaml": yaml });
}

const sync = (dir: string, target: { url: string; token?: string; namespace?: string }, args: string[] = [], env: Record<string, string> = {}) =>
  run(["--host", target.url, "--out-dir", path.join(dir, ".out"), ...args], { cwd: dir, env: { ...(target.token ? { KFP_TOKEN: target.token } : {}), ...(target.namespace ? { KFP_NAMESPACE: target.namespace } : {}), ...env } });

// The experiment is named after the pipeline: on KFP_TEST_HOST no experiment of the cluster's users is used.
const TWO = (pipeline: string, nightlyRatio = 0.9) => `schedules:
  - pipeline: ${pipeline}
    name: nightly
    experiment: ${pipeline}
    cron: "0 0 2 * * *"
    parameters: {text: hi, ratio: ${nightlyRatio}}
    max_concurrency: 2
  - pipeline: ${pipeline}
    name: hourly
    experiment: ${pipeline}
    every: 1h
    version: pinned
    parameters: {text: x}
`;

describe("schedules", () => {
  let target: KfpTarget;
  beforeAll(async () => {
    target = await kfpTarget();
  });
  afterAll(() => target.stop());

  test("create, unchanged with zero writes, replace on change (old gone, new enabled, nothing else), pinned follows a new version", async () => {
    const pipeline = `sched-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    const dir = project(pipeline, TWO(pipeline));
    // A recurring run of the same name that kfp-sync does not own: never touched.
    const before = target.remote ? [] : await recurringRuns(target);
    try {
      const first = await sync(dir, target);
      expect(first.stderr).not.toContain("✖");
      expect(first.code).toBe(0);
      const s1 = first.json();
      for (const o of s1.schedules) expect(Object.keys(o)).not.toContain("action");
      expect(s1.schedules.map((o: any) => [o.name, o.state, o.where])).toEqual([
        ["nightly", "created", "kfp-sync.yaml:2"],
        ["hourly", "created", "kfp-sync.yaml:8"],
      ]);
      const pipelineId = s1.pipelines[0]!.pipelineId;
      const versionId = s1.pipelines[0]!.versionId;
      const ours = async () => (await recurringRuns(target)).filter((r) => r.pipeline_version_reference.pipeline_id === pipelineId);
      let runs = await ours();
      expect(runs.length).toBe(2);
      const nightly = runs.find((r) => r.display_name === "nightly")!;
      const hourly = runs.find((r) => r.display_name === "hourly")!;
      expect(nightly).toMatchObject({ status: "ENABLED", max_concurrency: "2", no_catchup: true, trigger: { cron_schedule: { cron: "0 0 2 * * *" } }, runtime_config: { parameters: { text: "hi", ratio: 0.9 } } });
      // latest: no version in the reference; pinned: this run's version.
      expect(nightly.pipeline_version_reference.pipeline_version_id).toBeUndefined();
      expect(hourly.pipeline_version_reference.pipeline_version_id).toBe(versionId);
      expect(hourly.trigger.periodic_schedule.interval_second).toBe("3600");
      const experiments = await api(target, "GET", `/experiments?${new URLSearchParams({ filter: JSON.stringify({ predicates: [{ key: "display_name", operation: "EQUALS", string_value: pipeline }] }), ...(target.namespace ? { namespace: target.namespace } : {}) })}`);
      expect(experiments.experiments.map((e: any) => e.experiment_id)).toContain(nightly.experiment_id);

      // Same file, same pipeline: unchanged, and not one write to experiments or recurring runs.
      const writesBefore = target.server ? scheduleWrites(target.server.requests).length : 0;
      const second = await sync(dir, target);
      expect(second.code).toBe(0);
      expect(second.json().schedules.map((o: any) => o.state)).toEqual(["unchanged", "unchanged"]);
      if (target.server) expect(scheduleWrites(target.server.requests).length).toBe(writesBefore);
      expect((await ours()).map((r) => r.recurring_run_id).sort()).toEqual([nightly.recurring_run_id, hourly.recurring_run_id].sort());

      // nightly's parameter changes: replaced. hourly is unchanged (its pipeline has no new version).
      fs.writeFileSync(path.join(dir, "kfp-sync.yaml"), TWO(pipeline, 0.8));
      const third = await sync(dir, target);
      expect(third.code).toBe(0);
      const s3 = third.json();
      expect(s3.schedules.map((o: any) => [o.name, o.state])).toEqual([["nightly", "replaced"], ["hourly", "unchanged"]]);
      runs = await ours();
      expect(runs.length).toBe(2);
      const newNightly = runs.find((r) => r.display_name === "nightly")!;
      expect(newNightly.recurring_run_id).not.toBe(nightly.recurring_run_id);
      expect(newNightly.recurring_run_id).toBe(s3.schedules[0].recurringRunId);
      expect(newNightly).toMatchObject({ status: "ENABLED", runtime_config: { parameters: { ratio: 0.8 } } });

      // A new version of the pipeline: the pinned schedule follows it, the latest one needs nothing.
      fs.writeFileSync(path.join(dir, "demo_pipeline.py"), pipelineSource(pipeline, 3));
      const fourth = await sync(dir, target);
      expect(fourth.code).toBe(0);
      const s4 = fourth.json();
      expect(s4.pipelines[0]!.state).toBe("versioned");
      expect(s4.schedules.map((o: any) => [o.name, o.state])).toEqual([["nightly", "unchanged"], ["hourly", "replaced"]]);
      runs = await ours();
      expect(runs.length).toBe(2);
      expect(runs.find((r) => r.display_name === "hourly")!.pipeline_version_reference.pipeline_version_id).toBe(s4.pipelines[0]!.versionId);
      expect(runs.find((r) => r.display_name === "nightly")!.recurring_run_id).toBe(newNightly.recurring_run_id);
      if (!target.remote) expect((await recurringRuns(target)).length).toBe(before.length + 2);
    } finally {
      if (target.remote) for (const r of (await recurringRuns(target)).filter((r) => r.description?.includes(`kfp-sync schedule ${pipeline}/`))) await api(target, "DELETE", `/recurringruns/${r.recurring_run_id}`);
    }
  });
});

describe("schedules: checked before any write", () => {
  let server: KfpServer;
  beforeAll(async () => {
    server = await startKfpServer();
  });
  afterAll(() => server.stop());

  test.skipIf(imitationOnly("validation", "counts every write the run sends"))("each bad entry fails with its line and a clear message; the good one and the upload go on", async () => {
    const dir = project("sched-check", `schedules:
  - pipeline: sched-check
    name: five-fields
    cron: "0 2 * * *"
    parameters: {text: a}
  - pipeline: sched-chek
    name: typo
    every: 6h
  - pipeline: sched-check
    name: unknown-param
    every: 6h
    parameters: {text: a, colour: red}
  - pipeline: sched-check
    name: wrong-type
    every: 6h
    parameters: {text: a, times: "3"}
  - pipeline: sched-check
    name: missing
    every: 6h
  - pipeline: sched-check
    name: both
    cron: "0 0 2 * * *"
    every: 6h
    parameters: {text: a}
  - pipeline: sched-check
    name: neither
    parameters: {text: a}
  - pipeline: sched-check
    name: too-many
    every: 6h
    max_concurrency: 11
    parameters: {text: a}
  - pipeline: sched-check
    name: good
    every: 6h
    parameters: {text: a, times: 3, ratio: 1, flag: true}
  - pipeline: sched-check
    name: good
    every: 12h
    parameters: {text: b}
  - pipeline: sched-check
    name: bad-hour
    cron: "0 0 24 * * *"
    parameters: {text: a}
`);
    const r = await sync(dir, server);
    expect(r.code).toBe(1);
    const s = r.json();
    expect(s.pipelines[0]!.state).toBe("created");
    const by = Object.fromEntries(s.schedules.map((o: any) => [o.name, o]));
    const failed = (name: string, line: number, text: string | RegExp) => {
      expect(by[name].state, name).toBe("failed");
      expect(by[name].error.line, name).toBe(line);
      expect(by[name].error.message, name).toStartWith(`kfp-sync.yaml:${line}: `);
      expect(by[name].error.message, name).toMatch(text);
    };
    failed("five-fields", 2, 'KFP reads cron with seconds first (robfig/cron v1): it would run at second 0, minute 2, hour *');
    expect(by["five-fields"].error.message).toContain('write "0 0 2 * * *"');
    failed("typo", 6, "no pipeline named sched-chek in this run (pipelines: sched-check)");
    failed("unknown-param", 9, "parameter colour is not an input of pipeline sched-check");
    failed("wrong-type", 13, 'parameter times of pipeline sched-check is NUMBER_INTEGER: give a whole number, not "3"');
    failed("missing", 17, "needs parameter text (no default)");
    failed("both", 20, "not both");
    failed("neither", 25, "give cron: or every:");
    failed("too-many", 28, "max_concurrency: must be a whole number from 1 to 10");
    failed("bad-hour", 41, 'hour "24" is not a value');
    // Without a host the same checks run; the good entries are only "checked".
    const offline = await run(["--dry-run", "--out-dir", path.join(dir, ".out")], { cwd: dir });
    expect(offline.json().schedules.filter((o: any) => o.state === "failed").length).toBe(10);
    expect(offline.stderr).toContain("schedules: checked 1 · failed 10");
    // The second "good" is the duplicate; the first is created.
    expect(s.schedules.filter((o: any) => o.name === "good").map((o: any) => [o.where, o.state])).toEqual([["kfp-sync.yaml:33", "created"], ["kfp-sync.yaml:37", "failed"]]);
    expect(s.schedules.find((o: any) => o.where === "kfp-sync.yaml:37").error.message).toContain("the first is at kfp-sync.yaml:33");
    expect(scheduleWrites(server.requests).filter((q) => q.path.endsWith("/recurringruns")).length).toBe(1);
    expect(s.problems.filter((p: any) => p.stage === "schedule").length).toBe(10);
    expect(r.stderr).toContain("schedules: created 1 · replaced 0 · unchanged 0 · orphaned 0 · failed 10");
  });

  test.skipIf(imitationOnly("reported everywhere", "needs a fresh server"))("--config/KFP_SYNC_CONFIG; reported in the step summary, the outputs, the notification and the last log line", async () => {
    server.reset();
    const ntfy = await startNtfyServer();
    try {
      const dir = scratch({ "demo_pipeline.py": pipelineSource("sched-out"), "ops/schedules.yaml": `schedules:\n  - pipeline: sched-out\n    name: nightly\n    cron: "0 0 2 * * *"\n    parameters: {text: a}\n  - pipeline: sched-out\n    name: broken\n    cron: "0 2 * * *"\n    parameters: {text: a}\n` });
      const missing = await sync(dir, server, ["--config", "ops/nope.yaml"]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain("--config/KFP_SYNC_CONFIG ops/nope.yaml: no such file");
      // Without the file, no schedules stage: no schedules field, no request for it.
      const none = await sync(dir, server);
      expect(none.json().schedules).toBeUndefined();
      expect(server.requests.filter((q) => /recurringruns|experiments/.test(q.path))).toEqual([]);

      const outputs = path.join(dir, "out.txt");
      const stepSummary = path.join(dir, "summary.md");
      const r = await sync(dir, server, [], { KFP_SYNC_CONFIG: "ops/schedules.yaml", GITHUB_OUTPUT: outputs, GITHUB_STEP_SUMMARY: stepSummary, NTFY_URL: `${ntfy.url}/ci` });
      expect(r.code).toBe(1);
      expect(r.json().schedules.map((o: any) => [o.where, o.state])).toEqual([["ops/schedules.yaml:2", "created"], ["ops/schedules.yaml:6", "failed"]]);
      const out = fs.readFileSync(outputs, "utf8");
      expect(out).toContain("schedules=created 1 · replaced 0 · unchanged 0 · orphaned 0 · failed 1\n");
      expect(out).toContain("failed_schedules=sched-out/broken\n");
      const md = fs.readFileSync(stepSummary, "utf8");
      expect(md).toStartWith("### kfp-sync — ❌ 1/1 compiled");
      expect(md).toContain("#### Schedules — created 1 · replaced 0 · unchanged 0 · orphaned 0 · failed 1");
      expect(md).toMatch(/\| sched-out\/broken \| ops\/schedules.yaml:6 \| ❌ failed \|  \| ops\/schedules.yaml:6: cron "0 2 \* \* \*" has 5 fields/);
      expect(ntfy.published.length).toBe(1);
      expect(ntfy.published[0]!.message).toContain("\nschedules: created 1 · replaced 0 · unchanged 0 · orphaned 0 · failed 1\n");
      expect(ntfy.published[0]!.title).toBe("kfp-sync: 1 schedule(s) failed");
      expect(ntfy.published[0]!.priority).toBe(4);
      expect(r.stderr).toMatch(/✖ 1\/1 compiled · 0 uploaded · 1 unchanged · 0 failed · schedules: created 1 · replaced 0 · unchanged 0 · orphaned 0 · failed 1 · /);
    } finally {
      await ntfy.stop();
    }
  });

  test.skipIf(imitationOnly("a failed pipeline", "needs a fresh server"))("a schedule of a pipeline that failed to upload is left as it is and reported", async () => {
    server.reset();
    const dir = project("sched-left", `schedules:\n  - pipeline: sched-left\n    name: nightly\n    cron: "0 0 2 * * *"\n    parameters: {text: a}\n`);
    expect((await sync(dir, server)).code).toBe(0);
    fs.writeFileSync(path.join(dir, "kfp-sync.yaml"), `schedules:\n  - pipeline: sched-left\n    name: nightly\n    cron: "0 0 3 * * *"\n    parameters: {text: a}\n`);
    fs.writeFileSync(path.join(dir, "demo_pipeline.py"), pipelineSource("sched-left", 5));
    server.failNext(/^POST \/apis\/v2beta1\/pipelines\/upload_version$/, 500);
    const r = await sync(dir, server);
    expect(r.code).toBe(1);
    const o = r.json().schedules[0];
    expect(o).toMatchObject({ name: "nightly", state: "skipped" });
    expect(o.message).toContain("left as it is: pipeline sched-left failed in this run");
    const runs = await recurringRuns(server);
    expect(runs.map((x) => x.trigger.cron_schedule?.cron)).toEqual(["0 0 2 * * *"]);
  });
});

describe("schedules: replace safely, orphans, dry run, multi-user", () => {
  let server: KfpServer;
  beforeAll(async () => {
    server = await startKfpServer();
  });
  afterAll(() => server.stop());
  const one = (cron: string, extra = "") => `schedules:\n  - pipeline: sched-safe\n    name: nightly\n    experiment: evaluation\n    cron: "${cron}"\n    parameters: {text: a}\n${extra}`;

  test.skipIf(imitationOnly("a failure in the middle of a replace", "injects faults through test/fault-proxy.ts"))("a failure in the middle of a replace: the old stays enabled, the new one is removed, the report says so", async () => {
    server.reset();
    const proxy = await startFaultProxy(server.url);
    try {
      const dir = project("sched-safe", one("0 0 2 * * *"));
      expect((await sync(dir, proxy)).code).toBe(0);
      const [old] = await recurringRuns(server);
      fs.writeFileSync(path.join(dir, "kfp-sync.yaml"), one("0 0 4 * * *"));

      // Enabling the new one fails: the old one is enabled again, the new one deleted.
      proxy.add({ method: "POST", path: /:enable$/, times: 1, fault: { kind: "status", status: 500, body: '{"code":13,"message":"boom"}' } });
      const r = await sync(dir, proxy);
      expect(r.code).toBe(1);
      const o = r.json().schedules[0];
      expect(o).toMatchObject({ state: "failed", recurringRunId: old!.recurring_run_id, leftAs: { old: "enabled again", new: "removed" } });
      expect(o.error.message).toContain("enabling the new recurring run failed");
      expect(r.stderr).toContain("[old: enabled again, new: removed]");
      let runs = await recurringRuns(server);
      expect(runs.map((x) => [x.recurring_run_id, x.status, x.trigger.cron_schedule.cron])).toEqual([[old!.recurring_run_id, "ENABLED", "0 0 2 * * *"]]);

      // Disabling the old one fails: it was never changed, the new one is removed.
      proxy.add({ method: "POST", path: /:disable$/, times: 1, fault: { kind: "status", status: 503 } });
      const r2 = await sync(dir, proxy);
      expect(r2.json().schedules[0]).toMatchObject({ state: "failed", leftAs: { old: "enabled, unchanged", new: "removed" } });
      runs = await recurringRuns(server);
      expect(runs.map((x) => [x.recurring_run_id, x.status])).toEqual([[old!.recurring_run_id, "ENABLED"]]);

      // The create's answer is lost: the run that arrived is found by a read, not created twice.
      proxy.add({ method: "POST", path: /\/recurringruns$/, times: 1, fault: { kind: "drop-response" } });
      const r3 = await sync(dir, proxy);
      expect(r3.stderr).not.toContain("✖");
      expect(r3.json().schedules[0].state).toBe("replaced");
      runs = await recurringRuns(server);
      expect(runs.length).toBe(1);
      expect(runs[0]).toMatchObject({ status: "ENABLED", trigger: { cron_schedule: { cron: "0 0 4 * * *" } } });

      // Only the last step, deleting the old one, fails: as for any step, the old one is enabled
      // again and the new one (disabled first, never two enabled) is removed; the next sync replaces.
      const replacedBy = runs[0]!.recurring_run_id;
      fs.writeFileSync(path.join(dir, "kfp-sync.yaml"), one("0 0 5 * * *"));
      proxy.add({ method: "DELETE", path: /\/recurringruns\//, times: 1, fault: { kind: "status", status: 500, body: '{"code":13,"message":"boom"}' } });
      const r4 = await sync(dir, proxy);
      expect(r4.code).toBe(1);
      const o4 = r4.json().schedules[0];
      expect(o4).toMatchObject({ state: "failed", recurringRunId: replacedBy, leftAs: { old: "enabled again", new: "removed" } });
      expect(o4.error.message).toContain("deleting the old recurring run failed");
      runs = await recurringRuns(server);
      expect(runs.map((x) => [x.recurring_run_id, x.status, x.trigger.cron_schedule.cron])).toEqual([[replacedBy, "ENABLED", "0 0 4 * * *"]]);
      const r5 = await sync(dir, proxy);
      expect(r5.json().schedules.map((x: any) => x.state)).toEqual(["replaced"]);
      runs = await recurringRuns(server);
      expect(runs.map((x) => [x.status, x.trigger.cron_schedule.cron])).toEqual([["ENABLED", "0 0 5 * * *"]]);
      expect(proxy.injected.length).toBe(4);
    } finally {
      await proxy.stop();
    }
  });

  test.skipIf(imitationOnly("orphans and pruning", "pruning on a shared cluster could reach other syncs' runs"))("orphans are reported and kept; --prune-schedules deletes them; runs kfp-sync does not own are never touched; dry run only reads", async () => {
    server.reset();
    const dir = project("sched-safe", one("0 0 2 * * *", `  - pipeline: sched-safe\n    name: weekly\n    cron: "0 0 3 * * 0"\n    parameters: {text: w}\n`));
    const first = await sync(dir, server);
    expect(first.code).toBe(0);
    const pipelineId = first.json().pipelines[0]!.pipelineId;
    // Someone's own recurring run, clicked together in the UI, same display name.
    const foreign = await api(server, "POST", "/recurringruns", { display_name: "weekly", pipeline_version_reference: { pipeline_id: pipelineId }, max_concurrency: "1", mode: "ENABLE", trigger: { cron_schedule: { cron: "0 0 5 * * *" } } });

    fs.writeFileSync(path.join(dir, "kfp-sync.yaml"), one("0 0 6 * * *"));
    const writes = scheduleWrites(server.requests).length;
    const dry = await sync(dir, server, ["--dry-run"], { GITHUB_STEP_SUMMARY: path.join(dir, "dry.md") });
    expect(dry.code).toBe(0);
    expect(dry.json().schedules.map((o: any) => [o.name, o.plan, o.state])).toEqual([["nightly", "replace", undefined], ["weekly", "orphaned", "orphaned"]]);
    // Machine values in the JSON, the English for people: the log and the step summary.
    expect(dry.stderr).toContain("schedule sched-safe/nightly: would replace");
    expect(fs.readFileSync(path.join(dir, "dry.md"), "utf8")).toMatch(/\| sched-safe\/nightly \| kfp-sync.yaml:2 \| would replace \|/);
    expect(scheduleWrites(server.requests).length).toBe(writes);

    const kept = await sync(dir, server);
    expect(kept.code).toBe(0);
    const s = kept.json();
    expect(s.schedules.map((o: any) => [o.name, o.state])).toEqual([["nightly", "replaced"], ["weekly", "orphaned"]]);
    expect(s.schedules[1].message).toContain("--prune-schedules deletes it");
    expect((await recurringRuns(server)).length).toBe(3);

    const dryPrune = await sync(dir, server, ["--dry-run", "--prune-schedules"]);
    expect(dryPrune.json().schedules.map((o: any) => [o.name, o.plan, o.state])).toEqual([["nightly", "unchanged", "unchanged"], ["weekly", "delete", undefined]]);
    expect(dryPrune.stderr).toContain("schedule sched-safe/weekly: would delete");
    expect(dryPrune.stderr).toContain("schedules: would create 0 · would replace 0 · unchanged 1 · orphaned 0 · would delete 1 · failed 0");
    expect((await recurringRuns(server)).length).toBe(3);
    const pruned = await sync(dir, server, ["--prune-schedules"]);
    expect(pruned.json().schedules.map((o: any) => [o.name, o.state])).toEqual([["nightly", "unchanged"], ["weekly", "deleted"]]);
    const left = await recurringRuns(server);
    expect(left.map((x) => x.display_name).sort()).toEqual(["nightly", "weekly"]);
    expect(left.find((x) => x.display_name === "weekly")!.recurring_run_id).toBe(foreign.recurring_run_id);
    expect(left.find((x) => x.display_name === "weekly")!.status).toBe("ENABLED");
  });

  test.skipIf(imitationOnly("dry run of a new file", "needs a fresh server"))("dry run: would create, nothing written; an archived experiment is unarchived by the real run", async () => {
    server.reset();
    const dir = project("sched-safe", one("0 0 2 * * *"));
    expect((await sync(dir, server)).code).toBe(0); // pipeline and schedule exist
    const [rr] = await recurringRuns(server);
    await api(server, "POST", `/experiments/${rr!.experiment_id}:archive`);
    fs.writeFileSync(path.join(dir, "kfp-sync.yaml"), one("0 0 2 * * *", `  - pipeline: sched-safe\n    name: extra\n    every: 30m\n    parameters: {text: e}\n`));
    const before = scheduleWrites(server.requests).length;
    const dry = await sync(dir, server, ["--dry-run"]);
    expect(dry.json().schedules.map((o: any) => [o.name, o.plan, o.state])).toEqual([["nightly", "unchanged", "unchanged"], ["extra", "create", undefined]]);
    expect(dry.stderr).toContain("schedule sched-safe/extra: would create");
    expect(dry.stderr).toContain("schedules: would create 1 · would replace 0 · unchanged 1 · orphaned 0 · failed 0");
    expect(scheduleWrites(server.requests).length).toBe(before);
    const real = await sync(dir, server);
    expect(real.json().schedules.map((o: any) => o.state)).toEqual(["unchanged", "created"]);
    expect((await api(server, "GET", `/experiments/${rr!.experiment_id}`)).storage_state).toBe("AVAILABLE");
  });

  test.skipIf(imitationOnly("multi-user", "needs its own multi-user server with namespace team-a"))("multi-user: experiments and recurring runs in --namespace; --shared cannot hold schedules", async () => {
    const mu = await startKfpServer({ multiUser: true });
    try {
      const dir = project("sched-mu", one("0 0 2 * * *").replaceAll("sched-safe", "sched-mu"));
      const r = await sync(dir, { url: mu.url, token: "team-a-editor-token", namespace: "team-a" });
      expect(r.stderr).not.toContain("✖");
      expect(r.code).toBe(0);
      expect(r.json().schedules[0].state).toBe("created");
      const runs = await recurringRuns({ url: mu.url, token: "team-a-editor-token", namespace: "team-a" });
      expect(runs.length).toBe(1);
      expect((runs[0] as any).namespace).toBe("team-a");
      for (const q of mu.requests.filter((q) => /\/(experiments|recurringruns)$/.test(q.path) && q.method === "GET")) expect(q.query.namespace, q.path).toBe("team-a");
      const again = await sync(dir, { url: mu.url, token: "team-a-editor-token", namespace: "team-a" });
      expect(again.json().schedules[0].state).toBe("unchanged");
      const shared = await sync(dir, { url: mu.url, token: "team-a-editor-token" }, ["--shared"]);
      expect(shared.code).toBe(1);
      expect(shared.json().schedules[0].error.message).toContain("use --namespace/KFP_NAMESPACE (not --shared) to sync schedules");
    } finally {
      await mu.stop();
    }
  });
});
