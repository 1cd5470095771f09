/** Around the binary: the workflows lint clean and use only what kfp-sync really offers; the runner
 * image and the network policy fit it; the binary needs neither Bun nor Node where it runs. */
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { parse, parseAllDocuments } from "yaml";
import pkg from "../package.json";
import { BIN, EXAMPLES, PYTHON, ROOT, parseOutputs, run, scratch } from "./helpers";

const ACTIONLINT = path.join(ROOT, ".tools/bin/actionlint");
const COMPILE_UPLOAD = ".gitea/workflows/compile-upload.yaml";
const CI = ".gitea/workflows/ci.yaml";
const PLAN = ".gitea/workflows/plan.yaml";
const CONTAINERFILE = path.join(ROOT, "Containerfile");
const NETWORK_POLICY = path.join(ROOT, "deploy/networkpolicy.yaml");

// actionlint knows only GitHub's hosted runner labels, and judges actions by github.com's rules.
const ACTIONLINT_CONFIG = `
self-hosted-runner:
  labels: [kfp-sync]
paths:
  ${CI}:
    ignore:
      # v3 on purpose: upload-artifact v4 refuses non-github.com servers, Gitea included.
      - 'the runner of "actions/upload-artifact@v3" action is too old'
`;

function actionlint(files: string[], cwd = ROOT): { code: number; output: string } {
  if (!fs.existsSync(ACTIONLINT)) throw new Error(`${ACTIONLINT} is missing: install Go and run bash scripts/setup.sh`);
  const config = path.join(scratch({ "actionlint.yaml": ACTIONLINT_CONFIG }), "actionlint.yaml");
  const proc = Bun.spawnSync([ACTIONLINT, "-no-color", "-config-file", config, ...files], { cwd, stdout: "pipe", stderr: "pipe" });
  return { code: proc.exitCode, output: proc.stdout.toString() + proc.stderr.toString() };
}

function readYaml(file: string): any {
  return parse(fs.readFileSync(path.join(ROOT, file), "utf8"));
}

describe("workflows: actionlint", () => {
  test("the workflows pass actionlint", () => {
    const r = actionlint([COMPILE_UPLOAD, CI, PLAN]);
    expect(r.output).toBe("");
    expect(r.code).toBe(0);
  });

  test("actionlint really checks: a broken workflow is reported", () => {
    const broken = `on: push
jobs:
  sync:
    runs-on: ubuntu-latest
    outputs:
      failed: \${{ steps.sync.outputs.failed }}
    steps:
      - id: sink
        run: echo "\${{ github.evnt_name }}"
`;
    const dir = scratch({ ".gitea/workflows/broken.yaml": broken });
    const r = actionlint([".gitea/workflows/broken.yaml"], dir);
    expect(r.code).toBe(1);
    expect(r.output).toContain("broken.yaml");
    expect(r.output).toContain('property "evnt_name" is not defined');
    // The check that guards our job outputs: they must name a step id that exists.
    expect(r.output).toContain('property "sync" is not defined');
  });
});

describe("workflows: plan comments on the pull request, read-only (issue 17)", () => {
  const plan = readYaml(PLAN);
  const sync = readYaml(COMPILE_UPLOAD);
  const step = (Object.values(plan.jobs)[0] as any).steps.find((s: any) => s.id === "plan");

  test("on pull_request, for the same paths as compile-upload", () => {
    expect(Object.keys(plan.on)).toEqual(["pull_request"]);
    expect(plan.on.pull_request.paths).toEqual(sync.on.push.paths);
  });

  test("kfp-sync read-only with the comment opted in; the server left out for forks; the job's token", () => {
    expect(step.run.trim()).toBe("kfp-sync --dry-run --pr-comment");
    const help = Bun.spawnSync([BIN, "--help"], { env: {} }).stdout.toString();
    expect(help).toContain("--pr-comment");
    expect(help).toContain("KFP_SYNC_PR_COMMENT");
    for (const name of Object.keys(step.env)) expect(help, `${name} is not in kfp-sync --help`).toContain(name);
    expect(step.env.KFP_HOST).toContain("github.event.pull_request.head.repo.full_name == github.repository");
    expect(step.env.GITEA_TOKEN).toBe("${{ github.token }}");
    expect(Object.keys(step.env)).not.toContain("NTFY_URL");
  });

  test(".pre-commit-hooks.yaml: one hook, a dry run without a server", () => {
    const hooks = parse(fs.readFileSync(path.join(ROOT, ".pre-commit-hooks.yaml"), "utf8")) as any[];
    expect(hooks.map((h) => h.id)).toEqual(["kfp-sync-compile"]);
    expect(hooks[0].entry).toStartWith("kfp-sync --dry-run");
    expect(hooks[0].entry).not.toContain("--host");
    expect(hooks[0].language).toBe("system");
  });
});

describe("workflows: compile-upload uses what kfp-sync offers", () => {
  const workflow = readYaml(COMPILE_UPLOAD);
  const jobs = Object.entries(workflow.jobs ?? {}) as [string, any][];
  const [jobName, job] = jobs[0] ?? [];
  const syncStep = (job?.steps ?? []).find((s: any) => s.id === "sync");

  test("triggers: pushes to main that touch what can change a compiled pipeline, and by hand", () => {
    expect(workflow.on.push.branches).toEqual(["main"]);
    expect(workflow.on.push.paths).toEqual(["**/*.py", "**/requirements*.txt", "**/pyproject.toml", "kfp-sync.yaml", ".gitea/workflows/compile-upload.yaml"]);
    expect("workflow_dispatch" in workflow.on).toBe(true);
  });

  test("one job: checkout, then the kfp-sync step from PATH on the runner image", () => {
    expect(jobs.length).toBe(1);
    expect(jobName).toBe("sync");
    // Gitea takes only `runs-on: label` or `[label]`.
    expect(typeof job["runs-on"]).toBe("string");
    expect(job.steps[0].uses).toMatch(/^actions\/checkout@v\d+$/);
    expect(syncStep).toBeDefined();
    expect(syncStep.run.trim()).toBe("kfp-sync");
  });

  test("every job output is a step output the binary really writes", async () => {
    const out = scratch();
    const outputFile = path.join(out, "github_output");
    fs.writeFileSync(outputFile, "");
    const r = await run(["--dry-run", "--out-dir", path.join(out, "compiled")], { cwd: EXAMPLES, env: { GITHUB_OUTPUT: outputFile } });
    expect(r.code).toBe(0);
    const written = [...parseOutputs(fs.readFileSync(outputFile, "utf8")).keys()];
    expect(written).toContain("summary_json");

    const mapped: string[] = [];
    for (const [name, expr] of Object.entries(job.outputs as Record<string, string>)) {
      const m = /^\$\{\{\s*steps\.sync\.outputs\.([\w-]+)\s*\}\}$/.exec(expr);
      expect(m, `job output ${name}: ${expr}`).not.toBeNull();
      expect(written, `job output ${name}`).toContain(m![1]!);
      mapped.push(m![1]!);
    }
    expect(mapped.sort()).toEqual(["compiled", "failed", "failed_pipelines", "unchanged", "uploaded", "version"]);
  });

  test("the step's environment: variables kfp-sync reads, settings from vars, credentials from secrets", () => {
    const help = Bun.spawnSync([BIN, "--help"], { env: {} }).stdout.toString();
    const known = new Set(help.match(/\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b/g) ?? []);
    const env = syncStep.env as Record<string, string>;
    expect(Object.keys(env).sort()).toEqual(["KFP_HOST", "KFP_NAMESPACE", "KFP_TOKEN", "NTFY_TOKEN", "NTFY_URL"]);
    for (const name of Object.keys(env)) expect(known.has(name), `${name} is not in kfp-sync --help`).toBe(true);
    expect(env.KFP_HOST).toBe("${{ vars.KFP_HOST }}");
    expect(env.KFP_NAMESPACE).toBe("${{ vars.KFP_NAMESPACE }}");
    for (const secret of ["KFP_TOKEN", "NTFY_URL", "NTFY_TOKEN"]) expect(env[secret]).toBe(`\${{ secrets.${secret} }}`);
  });

  test("ci.yaml: tests on 3.11 with Node and Go, then binaries from build:all as an artifact", () => {
    const ci = readYaml(CI);
    expect(Object.keys(ci.on).sort()).toEqual(["pull_request", "push"]);
    const uses = (ci.jobs.test.steps as any[]).map((s) => s.uses?.split("@")[0]).filter(Boolean);
    expect(uses).toEqual(["actions/checkout", "actions/setup-node", "actions/setup-python", "actions/setup-go", "actions/cache"]);
    expect(ci.jobs.test.steps.find((s: any) => s.uses?.startsWith("actions/setup-python")).with["python-version"]).toBe("3.11");
    expect(ci.jobs.test.steps.at(-1).run).toBe("npm test");
    // The typecheck runs before the tests, so a type error fails CI.
    const testRuns = (ci.jobs.test.steps as any[]).map((s) => s.run).filter(Boolean);
    expect(testRuns).toEqual(["npm run setup", "npm run typecheck", "npm test"]);
    const ciRun = fs.readFileSync(path.join(ROOT, ".ci/run"), "utf8");
    expect(ciRun.indexOf("npm run typecheck")).toBeGreaterThan(0);
    expect(ciRun.indexOf("npm run typecheck")).toBeLessThan(ciRun.indexOf("npm test 2>&1"));
    expect(ci.jobs.binaries.needs).toBe("test");
    const runs = (ci.jobs.binaries.steps as any[]).map((s) => s.run).filter(Boolean);
    expect(runs[0]).toBe("npm ci");
    expect(runs[1]).toStartWith("npm run build:all");
    expect(ci.jobs.binaries.steps.at(-1).with.path).toBe("dist/");
    expect(pkg.scripts["build:all"]).toBe("bash scripts/build-all.sh");
  });
});

interface Instruction {
  stage: number;
  op: string;
  args: string;
}

/** The Containerfile as instructions: continuation lines joined, comments dropped, stage numbered. */
function containerfile(): { instructions: Instruction[]; stageNames: string[] } {
  const joined = fs.readFileSync(CONTAINERFILE, "utf8").replace(/\\\n/g, " ");
  const instructions: Instruction[] = [];
  const stageNames: string[] = [];
  for (const line of joined.split("\n")) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m || line.trimStart().startsWith("#")) continue;
    const op = m[1]!.toUpperCase();
    if (op === "FROM") stageNames.push(/\s+AS\s+(\S+)/i.exec(m[2]!)?.[1] ?? String(stageNames.length));
    instructions.push({ stage: stageNames.length - 1, op, args: m[2]!.replace(/\s+/g, " ").trim() });
  }
  return { instructions, stageNames };
}

describe("Containerfile", () => {
  const { instructions, stageNames } = containerfile();
  const last = stageNames.length - 1;
  const final = instructions.filter((i) => i.stage === last);

  test("two stages: the binary is built in the first and copied into the second", () => {
    expect(stageNames.length).toBe(2);
    const build = instructions.filter((i) => i.stage === 0);
    const compile = build.find((i) => i.op === "RUN" && /bun build --compile/.test(i.args));
    expect(compile).toBeDefined();
    expect(compile!.args).toContain("kfp-sync.ts");
    // COPY --from takes paths from the build stage's root, so the output must be absolute to match.
    const outfile = /--outfile\s+(\S+)/.exec(compile!.args)?.[1];
    expect(outfile).toStartWith("/");
    const copy = final.find((i) => i.op === "COPY" && i.args.startsWith(`--from=${stageNames[0]} `));
    expect(copy).toBeDefined();
    const [, src, dest] = copy!.args.split(" ");
    expect(src).toBe(outfile!);
    expect(dest).toBe("/usr/local/bin/kfp-sync");
    const entrypoint = final.find((i) => i.op === "ENTRYPOINT");
    expect(JSON.parse(entrypoint!.args)).toEqual([dest]);
  });

  test("the pinned kfp from requirements.txt, and KFP_SYNC_KFP_VERSION pins the same", () => {
    const pinned = /^kfp==(\S+)$/m.exec(fs.readFileSync(path.join(ROOT, "requirements.txt"), "utf8"))?.[1];
    expect(pinned).toBeDefined();
    const copy = final.find((i) => i.op === "COPY" && /^requirements\.txt /.test(i.args));
    expect(copy).toBeDefined();
    const inImage = copy!.args.split(" ")[1]!;
    const pip = final.find((i) => i.op === "RUN" && /pip install/.test(i.args));
    expect(pip!.args).toContain("--no-cache-dir");
    expect(pip!.args).toContain(`-r ${inImage}`);
    const env = final.filter((i) => i.op === "ENV").map((i) => i.args).join(" ");
    expect(env).toContain(`KFP_SYNC_KFP_VERSION=${pinned}`);
    expect(env).toContain("KFP_SYNC_PYTHON=/usr/local/bin/python3");
  });

  test("runner needs: git and node installed, a non-root user, /workspace", () => {
    expect(instructions.find((i) => i.op === "FROM" && i.stage === last)!.args).toMatch(/^python:3\.11-slim/);
    const apt = final.find((i) => i.op === "RUN" && /apt-get install/.test(i.args))!.args;
    expect(apt).toMatch(/\bgit\b/);
    expect(apt).toMatch(/\bnodejs\b/);
    const user = final.filter((i) => i.op === "USER").at(-1)?.args;
    expect(user).toBeDefined();
    expect(["root", "0"]).not.toContain(user!.split(":")[0]!);
    expect(final.filter((i) => i.op === "WORKDIR").at(-1)?.args).toBe("/workspace");
  });
});

describe("the binary without Bun or Node", () => {
  test("env -i ./kfp-sync --version", () => {
    const r = Bun.spawnSync(["/usr/bin/env", "-i", BIN, "--version"], { stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.stdout.toString().trim()).toBe(pkg.version);
  });

  test("a dry run over the examples with only KFP_SYNC_PYTHON and a PATH without bun or node", async () => {
    // Node lives in /usr/bin on many machines, so the PATH is a folder holding only git (for the commit).
    const bin = scratch();
    fs.symlinkSync(Bun.which("git")!, path.join(bin, "git"));
    const env = { KFP_SYNC_PYTHON: PYTHON, PATH: bin };
    for (const dir of env.PATH.split(":")) for (const tool of ["bun", "node"]) expect(fs.existsSync(path.join(dir, tool))).toBe(false);
    const out = scratch();
    const proc = Bun.spawn([BIN, "--dry-run", "--out-dir", out], { cwd: EXAMPLES, env, stdout: "pipe", stderr: "pipe" });
    const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
    expect(await proc.exited, stderr).toBe(0);
    const summary = JSON.parse(stdout);
    expect(summary.counts.compiled).toBe(6);
    expect(summary.counts.failed).toBe(0);
    expect(summary.commit).toMatch(/^[0-9a-f]{40}$/);
  });
});

// Just enough NetworkPolicy semantics to ask "is this connection allowed": label selectors,
// namespace selectors on the namespace's name label, numbered ports. No ipBlock, no named ports.
type Labels = Record<string, string>;
interface Pod {
  namespace: string;
  labels: Labels;
}

function selects(selector: any, labels: Labels): boolean {
  if (!selector) return true;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = e.key in labels;
    const ok = { In: has && e.values.includes(labels[e.key]), NotIn: !has || !e.values.includes(labels[e.key]), Exists: has, DoesNotExist: !has }[e.operator as string];
    if (!ok) return false;
  }
  return true;
}

function peerMatches(peer: any, policyNamespace: string, pod: Pod): boolean {
  if (peer.ipBlock) return false;
  const namespaceOk = peer.namespaceSelector ? selects(peer.namespaceSelector, { "kubernetes.io/metadata.name": pod.namespace }) : pod.namespace === policyNamespace;
  return namespaceOk && selects(peer.podSelector, pod.labels);
}

function portMatches(ports: any[] | undefined, port: number, protocol: string): boolean {
  return !ports?.length || ports.some((p) => (p.protocol ?? "TCP") === protocol && (p.port === undefined || p.port === port || (p.endPort !== undefined && port >= p.port && port <= p.endPort)));
}

/** Whether some policy that isolates `subject` in `direction` allows traffic with `peer` on port/protocol. */
function allowedBy(policies: any[], direction: "Ingress" | "Egress", subject: Pod, peer: Pod, port: number, protocol = "TCP"): boolean {
  const key = direction === "Ingress" ? "ingress" : "egress";
  const peersKey = direction === "Ingress" ? "from" : "to";
  return policies
    .filter((p) => p.metadata.namespace === subject.namespace && (p.spec.policyTypes ?? ["Ingress"]).includes(direction) && selects(p.spec.podSelector, subject.labels))
    .some((p) => (p.spec[key] ?? []).some((rule: any) => (!rule[peersKey]?.length || rule[peersKey].some((peer_: any) => peerMatches(peer_, p.metadata.namespace, peer))) && portMatches(rule.ports, port, protocol)));
}

describe("deploy/networkpolicy.yaml", () => {
  const docs = parseAllDocuments(fs.readFileSync(NETWORK_POLICY, "utf8"));
  const policies = docs.map((d) => d.toJS());
  const runner: Pod = { namespace: "gitea", labels: { app: "act-runner" } };
  const mlPipeline: Pod = { namespace: "kubeflow", labels: { app: "ml-pipeline" } };

  test("parses into NetworkPolicies, each with a namespace", () => {
    for (const d of docs) expect(d.errors).toEqual([]);
    expect(policies.length).toBeGreaterThan(0);
    for (const p of policies) {
      expect(p.apiVersion).toBe("networking.k8s.io/v1");
      expect(p.kind).toBe("NetworkPolicy");
      expect(p.metadata.namespace).toBeTruthy();
    }
  });

  test("ml-pipeline in kubeflow admits the gitea namespace on TCP 8888, and nothing more", () => {
    expect(allowedBy(policies, "Ingress", mlPipeline, runner, 8888)).toBe(true);
    expect(allowedBy(policies, "Ingress", mlPipeline, { namespace: "default", labels: {} }, 8888)).toBe(false);
    expect(allowedBy(policies, "Ingress", mlPipeline, runner, 8887)).toBe(false);
    expect(allowedBy(policies, "Ingress", mlPipeline, runner, 8888, "UDP")).toBe(false);
  });

  test("from gitea: egress to ml-pipeline:8888, ntfy:80 and DNS, not elsewhere", () => {
    expect(allowedBy(policies, "Egress", runner, mlPipeline, 8888)).toBe(true);
    expect(allowedBy(policies, "Egress", runner, { namespace: "observability", labels: { app: "ntfy" } }, 80)).toBe(true);
    const dns: Pod = { namespace: "kube-system", labels: { "k8s-app": "kube-dns" } };
    expect(allowedBy(policies, "Egress", runner, dns, 53, "UDP")).toBe(true);
    expect(allowedBy(policies, "Egress", runner, dns, 53, "TCP")).toBe(true);
    expect(allowedBy(policies, "Egress", runner, { namespace: "kubeflow", labels: { app: "minio" } }, 9000)).toBe(false);
    expect(allowedBy(policies, "Egress", runner, { namespace: "observability", labels: { app: "grafana" } }, 3000)).toBe(false);
  });
});
