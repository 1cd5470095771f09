/**
 * Issue 17: what changed, between the server's latest version and the compiled spec. The binary
 * against the KFP imitation (contract-faithful: it stores the spec re-marshalled, 1e-4 as 0.0001,
 * the {pipeline_spec, platform_spec} wrapper), with the real kfp SDK compiling and the ntfy
 * imitation listening.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { run, scratch } from "./helpers";
import { startNtfyServer, type NtfyServer } from "./ntfy-server";
import { syncTarget, type SyncTarget } from "./kfp-target";
import YAML from "yaml";
import { canonicalServerSpec, canonicalSpec, diffSpecs, fingerprintOf, newPipelineChanges, serverFingerprint, yamlDocuments } from "../kfp-sync.ts";

// One pipeline with one of each kind the diff must name; `edit` below changes each of them.
const PIPELINE = `from kfp import dsl, kubernetes


@dsl.container_component
def train(lr: float, epochs: int):
    return dsl.ContainerSpec(image="vllm/vllm-openai:v0.5.4", command=["python", "train.py"], args=["--lr", lr, "--epochs", epochs])


@dsl.component(base_image="python:3.11")
def score(x: float) -> float:
    return x


@dsl.component(base_image="python:3.11")
def cleanup():
    pass


@dsl.pipeline(name="diff-demo")
def diff_demo(accuracy_threshold: float = 0.85, lr: float = 1e-4, mode: str = "fast", batch: int = 8):
    done = cleanup()
    with dsl.ExitHandler(done):
        t = train(lr=lr, epochs=3)
        t.set_env_variable("MODE", "one")
        t.set_cpu_limit("2")
        t.set_memory_limit("4G")
        t.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        t.set_caching_options(True)
        t.set_retry(num_retries=2)
        kubernetes.use_secret_as_env(t, secret_name="hf", secret_key_to_env={"token": "HF_TOKEN"})
        kubernetes.add_node_selector(t, label_key="gpu", label_value="a100")
        with dsl.If(mode == "fast"):
            score(x=accuracy_threshold)
        with dsl.ParallelFor([0.5, 0.7]) as item:
            score(x=item)
`;

/** Every kind at once: each edit below must come back as its own change. */
const EDITS: [string, string][] = [
  ["accuracy_threshold: float = 0.85", "accuracy_threshold: float = 0.9"], // parameter default
  [', batch: int = 8', ""], // parameter removed
  ['mode: str = "fast"', 'mode: str = "fast", seed: int = 7'], // parameter added
  ["vllm/vllm-openai:v0.5.4", "vllm/vllm-openai:v0.6.1"], // image
  ['command=["python", "train.py"]', 'command=["python", "-u", "train.py"]'], // command
  ['args=["--lr", lr, "--epochs", epochs]', 'args=["--lr", lr, "--epochs", epochs, "--bf16"]'], // args
  ['set_env_variable("MODE", "one")', 'set_env_variable("MODE", "two")'], // env
  ['set_cpu_limit("2")', 'set_cpu_limit("4")'], // CPU
  ['set_memory_limit("4G")', 'set_memory_limit("16G")'], // memory
  ['set_accelerator_type("nvidia.com/gpu")', 'set_accelerator_type("amd.com/gpu")'], // accelerator type
  ["set_accelerator_limit(1)", "set_accelerator_limit(2)"], // accelerator count
  ["set_caching_options(True)", "set_caching_options(False)"], // caching
  ["set_retry(num_retries=2)", "set_retry(num_retries=5)"], // retry
  ['mode == "fast"', 'mode == "slow"'], // condition
  ["ParallelFor([0.5, 0.7])", "ParallelFor([0.5, 0.7, 0.9])"], // loop
  ['label_value="a100"', 'label_value="h100"'], // platform: node selector
  ['secret_name="hf"', 'secret_name="hf-read"'], // platform: secret
];

function edited(): string {
  let src = PIPELINE;
  for (const [from, to] of EDITS) {
    expect(src).toContain(from);
    src = src.replace(from, to);
  }
  // A task added to the exit handler's DAG.
  return `${src}        score(x=lr)\n`;
}

describe("diff", () => {
  let kfp: SyncTarget;
  let ntfy: NtfyServer;
  beforeAll(async () => {
    kfp = await syncTarget();
    ntfy = await startNtfyServer();
  });
  afterAll(async () => {
    await kfp.stop();
    await ntfy.stop();
  });
  const sync = (dir: string, args: string[] = []) =>
    run(["--host", kfp.url, "--out-dir", path.join(dir, ".out"), ...args], { cwd: dir, env: { ...kfp.env, NTFY_URL: `${ntfy.url}/ci` } });

  test("new, then every kind of change: records, texts, log, step summary, dry-run plan, notification, version description", async () => {
    kfp.reset();
    const dir = scratch({ "diff_pipeline.py": PIPELINE });
    const first = await sync(dir, ["--version-tag", "v20260213-100000"]);
    expect(first.code).toBe(0);
    const created = first.json().pipelines[0]!;
    expect(created.state).toBe("created");
    const name = created.name as string;
    expect(created.changes).toEqual([
      {
        kind: "new",
        change: "added",
        after: expect.any(Object),
        text: `${name}: new pipeline, parameters accuracy_threshold NUMBER_DOUBLE = 0.85, batch NUMBER_INTEGER = 8, lr NUMBER_DOUBLE = 0.0001, mode STRING = fast`,
      },
    ]);

    // The server re-marshals what it stored (1e-4 → 0.0001, the wrapper): still no change.
    const again = await sync(dir, ["--dry-run"]);
    expect(again.code).toBe(0);
    expect(again.json().pipelines[0]).toMatchObject({ plan: "unchanged", changes: [] });

    fs.writeFileSync(path.join(dir, "diff_pipeline.py"), edited());
    const summaryFile = path.join(dir, "plan-summary.md");
    const plan = await run(["--host", kfp.url, "--out-dir", path.join(dir, ".out"), "--dry-run"], { cwd: dir, env: { ...kfp.env, GITHUB_STEP_SUMMARY: summaryFile } });
    expect(plan.code).toBe(0);
    const planned = plan.json().pipelines[0]!;
    expect(planned.plan).toBe("version");
    const texts = (planned.changes as { text: string }[]).map((c) => c.text.slice(name.length + 2));
    const expected = [
      "parameter accuracy_threshold default 0.85 → 0.9",
      "parameter batch removed",
      "parameter seed added: NUMBER_INTEGER = 7",
      "task score-3 added (in exit-handler-1)",
      "task train image vllm/vllm-openai:v0.5.4 → v0.6.1",
      'task train command ["python","train.py"] → ["python","-u","train.py"]',
      "task train CPU limit 2 → 4",
      "task train memory limit 4G → 16G",
      "task train accelerator type nvidia.com/gpu → amd.com/gpu",
      "task train accelerator count 1 → 2",
      "task train caching on → off",
      "task train retry maxRetryCount 2 → 5",
      "task condition-2 condition inputs.parameter_values['pipelinechannel--mode'] == 'fast' → inputs.parameter_values['pipelinechannel--mode'] == 'slow'",
      "task train kubernetes nodeSelector.labels.gpu a100 → h100",
      "task for-loop-4 loop parameterIterator.items.raw [0.5, 0.7] → [0.5, 0.7, 0.9]",
    ];
    for (const want of expected) expect(texts.find((t) => t.startsWith(want)) ?? texts).toBeString();
    expect(texts).toContain("task train args + --bf16");
    expect(texts).toContain("task train env MODE=one → MODE=two");
    expect(texts.find((t) => t.startsWith("task train kubernetes secretAsEnv "))).toMatch(/- .*"secretName":"hf".*, \+ .*"secretName":"hf-read"/);
    expect(texts.length).toBe(expected.length + 3); // each change said once, nothing else
    // Parameters first; nothing said twice; every record carries its path and both sides.
    expect(texts[0]).toStartWith("parameter ");
    expect(new Set(texts).size).toBe(texts.length);
    for (const c of planned.changes.filter((c: { kind: string }) => c.kind !== "task")) expect(c.path).toMatch(/^(pipeline_spec|platform_spec)\./);
    expect(plan.stderr).toContain(`  ${name}: task train image vllm/vllm-openai:v0.5.4 → v0.6.1`);
    const md = fs.readFileSync(summaryFile, "utf8");
    expect(md).toContain(`#### ${name}`);
    expect(md).toContain(`- \`${name}: parameter accuracy_threshold default 0.85 → 0.9\``);

    // The sync carries out the plan, with the same changes everywhere.
    ntfy.published.length = 0;
    const synced = await sync(dir, ["--version-tag", "v20260213-110000"]);
    expect(synced.code).toBe(0);
    const versioned = synced.json().pipelines[0]!;
    expect(versioned.state).toBe("versioned");
    expect(versioned.changes).toEqual(planned.changes);
    const note = ntfy.published[0]!.message!;
    for (const c of versioned.changes.slice(0, 3)) expect(note).toContain(c.text);
    expect(note).toContain(`and ${versioned.changes.length - 3} more`);
    const state = await kfp.state();
    const version = state.versions.find((v) => v.pipeline_version_id === versioned.versionId)!;
    expect(version.description).toStartWith("Changes:\n- ");
    for (const c of versioned.changes) expect(version.description).toContain(`- ${c.text}\n`);
    expect(version.description).toMatch(/kfp-sync spec sha256:[0-9a-f]{64}/);

    // And the next run, compared with what the server now holds, finds nothing.
    const after = await sync(dir, ["--dry-run"]);
    expect(after.json().pipelines[0]).toMatchObject({ plan: "unchanged", changes: [] });
  });

  test("a stored spec the diff cannot read still syncs, with changes not available", async () => {
    kfp.reset();
    if (!kfp.server) return; // the listing is altered inside the imitation
    const dir = scratch({ "diff_pipeline.py": PIPELINE });
    const first = (await sync(dir, ["--version-tag", "v20260213-100000"])).json().pipelines[0]!;
    // The listing as the server gives it, but the newest version's spec is one the diff cannot read.
    const listing = (await (await fetch(`${kfp.url}/apis/v2beta1/pipelines/${first.pipelineId}/versions?page_size=10&sort_by=created_at%20desc`)).json()) as { pipeline_versions: { pipeline_spec: unknown }[] };
    listing.pipeline_versions[0]!.pipeline_spec = "not a spec";
    kfp.server.failNext(/^GET \/apis\/v2beta1\/pipelines\/[^/]+\/versions$/, 200, 1, JSON.stringify(listing));
    fs.writeFileSync(path.join(dir, "diff_pipeline.py"), edited());
    const r = await sync(dir, ["--version-tag", "v20260213-110000"]);
    expect(r.code).toBe(0);
    const p = r.json().pipelines[0]!;
    expect(p).toMatchObject({ state: "versioned", changes: [{ kind: "unavailable", text: `${first.name}: changes not available: the server's latest version carries no readable spec` }] });
    expect(r.stderr).toContain("changes not available");
  });
});

// The pure functions, beside the end-to-end tests above: cases the examples cannot reach.

describe("diff: the pure functions", () => {
  test("yamlDocuments reads a YAML stream as the yaml package does: one document, several, a list, none", () => {
    const texts = [
      "# PIPELINE DEFINITION\npipelineInfo:\n  name: p\nroot:\n  dag: {}\n",
      "pipelineInfo:\n  name: p\n---\nplatforms:\n  kubernetes: {}\n",
      "---\n- a\n- b\n",
      "- a\n---\n- b\n",
      "%YAML 1.2\n---\na: 1\n",
      "a: 1e3\nb: 0o17\nc: 1.0e-05\nd: yes\ne: '1'\nf: ~\ng: 1_000\nh: -.inf\n",
      "x: |\n  line 1\n  line 2\ny: >-\n  folded\n  text\n",
      "defaultValue:\n  '<<':\n    a: 1\n  b: 2\n", // PyYAML's dict key "<<": a string, not a merge (Bun 1.4 merges it)
      "\uFEFFpipelineInfo:\n  name: p\n",
    ];
    for (const text of texts) expect(yamlDocuments(text), text).toEqual(YAML.parseAllDocuments(text).map((d) => d.toJS()));
    expect(yamlDocuments("")).toEqual([]);
    expect(yamlDocuments("# only a comment\n")).toEqual([]);
    expect(() => yamlDocuments("{a: [1, 2")).toThrow();
  });

  const ir = (over: Record<string, unknown> = {}) => ({
    pipelineInfo: { name: "p" },
    sdkVersion: "kfp-2.17.3",
    root: { inputDefinitions: { parameters: { lr: { parameterType: "NUMBER_DOUBLE", defaultValue: "1e-4", isOptional: true } } }, dag: { tasks: {} } },
    ...over,
  });

  test("the server's re-marshalled copy is no change, exactly when the fingerprints agree", () => {
    const stored = { pipeline_spec: { ...ir(), root: { inputDefinitions: { parameters: { lr: { parameterType: "NUMBER_DOUBLE", defaultValue: 0.0001, isOptional: true } } }, dag: {} } }, platform_spec: { platforms: {} } };
    expect(diffSpecs("p", canonicalServerSpec(stored), canonicalSpec(ir(), undefined))).toEqual([]);
    expect(serverFingerprint(stored)).toBe(fingerprintOf(ir(), undefined));
    const other = ir({ pipelineInfo: { name: "p", description: "new words" } });
    expect(serverFingerprint(stored)).not.toBe(fingerprintOf(other, undefined));
    expect(diffSpecs("p", canonicalServerSpec(stored), canonicalSpec(other, undefined))).toEqual([
      { kind: "other", path: "pipeline_spec.pipelineInfo.description", change: "added", before: undefined, after: "new words", text: "p: pipeline_spec.pipelineInfo.description (none) → new words", task: undefined },
    ]);
  });

  test("an SDK bump alone is no change; a parameter's optional flag and type are named", () => {
    expect(diffSpecs("p", canonicalSpec(ir(), undefined), canonicalSpec(ir({ sdkVersion: "kfp-2.17.4" }), undefined))).toEqual([]);
    const after = ir();
    (after.root.inputDefinitions.parameters as any).k = { parameterType: "STRING", isOptional: true };
    const before = ir();
    (before.root.inputDefinitions.parameters as any).k = { parameterType: "NUMBER_INTEGER" };
    expect(diffSpecs("p", canonicalSpec(before, undefined), canonicalSpec(after, undefined)).map((c) => c.text)).toEqual([
      "p: parameter k optional no → yes",
      "p: parameter k type NUMBER_INTEGER → STRING",
    ]);
  });

  test("a new pipeline lists its parameters; one without says so", () => {
    expect(newPipelineChanges("p", canonicalSpec(ir(), undefined))[0]!.text).toBe("p: new pipeline, parameters lr NUMBER_DOUBLE = 0.0001");
    expect(newPipelineChanges("q", canonicalSpec({ pipelineInfo: { name: "q" } }, undefined))[0]!.text).toBe("q: new pipeline, no parameters");
  });
});
