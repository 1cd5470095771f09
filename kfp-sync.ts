#!/usr/bin/env bun
/**
 * kfp-sync — find, compile and upload Kubeflow Pipelines in one step.
 *
 * The file reads top-down like the job it does:
 *   types and config → run context and output → HTTP → discover → compile → upload → schedules → notify → report → main.
 * Each stage is a function from data to data, returning its results for the next; sync() composes
 * them. Processes, HTTP and the clock sit at the edges; secrets, signals and the exit code belong
 * to the run context, and every output goes through its one scrubbing writer.
 */
import { dlopen, FFIType } from "bun:ffi";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { defineCommand, renderUsage, runCommand, type ArgsDef } from "citty";
import { createConsola, type ConsolaReporter } from "consola";
import { FetchError, ofetch, type $Fetch } from "ofetch";
import YAML from "yaml";
import pkg from "./package.json" with { type: "json" };

export const VERSION: string = pkg.version;
// 2: one `state` per pipeline instead of `status` + `action`; `plan` holds "create" / "version" / "unchanged".
export const SUMMARY_SCHEMA_VERSION = 2;
const DEFAULT_HOST = "http://ml-pipeline.kubeflow.svc.cluster.local:8888";
const SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token";
// Limits the KFP API server enforces (pipeline_upload_server.go, resource validation); checked
// before sending so a bad pipeline fails with a clear local message instead of a server error.
const MAX_UPLOAD_BYTES = 32 << 20;
// Name limits count bytes, as the server does (validation/length.go): 43 × "日" is 129 bytes.
const MAX_PIPELINE_NAME = 128;
const MAX_VERSION_NAME = 127;
const MAX_NAMESPACE = 63;
// Tags: at most 20, keys and values at most 63 (the server refuses the whole upload beyond).
const MAX_TAGS = 20;
const MAX_TAG_TEXT = 63;
// Descriptions have no API limit, but the query rides in the request line: Go caps it with the
// headers at 1 MiB (431), and proxies in front of KFP far lower (nginx ingress: 8 KiB buffers by
// default). So the description, as percent-encoded, is kept within 6 KiB.
const MAX_DESCRIPTION_ENCODED = 6 * 1024;
const NAME_RULE = /^[a-z0-9][a-z0-9-]{0,127}$/;
// Real ntfy 2.13 (../shared/contracts/ntfy-2.13.0): a message of 4,096 bytes or more arrives as
// an attachment ("You received a file: attachment.txt"), a JSON body of 8,192 bytes or more is 413.
const NTFY_MAX_MESSAGE_BYTES = 4095;
const NTFY_MAX_BODY_BYTES = 8191;
const INTERRUPTED_NOTICE_MS = 5000;
// Answers are read into memory: an endless or huge body must end the request, not the runner.
// KFP's cap is above the 32 MiB spec limit because a version listing carries the whole spec as JSON.
const MAX_KFP_ANSWER_BYTES = 64 << 20;
const MAX_SMALL_ANSWER_BYTES = 1 << 20; // ntfy's publish answer and Gitea's version are a few bytes

// ─── Types ───────────────────────────────────────────────────────────────────────────────────────

/** A problem the user has to act on: what happened, where, and what to do. */
export interface Problem {
  stage: "discover" | "compile" | "upload" | "schedule" | "notify";
  message: string;
  file?: string;
  line?: number;
  hint?: string;
}

/** A configuration or usage mistake: exit code 2, nothing attempted. */
export class UsageError extends Error {
  override name = "UsageError";
}

export interface PipelineFile {
  /** Path as the user sees it: relative to the working directory when inside it. */
  path: string;
  abs: string;
  /** Which pipeline to compile when the file holds several (`--function FILE=NAME`). */
  functionName?: string;
  /** Another pipeline of the same file is compiled too: the output name then carries the function. */
  oneOfSeveral?: boolean;
}

/** How a person finds one pipeline of the run: its file, and the function when the file gives several. */
export function pipelineLabel(p: { file: string; function?: string }): string {
  return p.function ? `${p.file}:${p.function}` : p.file;
}

/** A pipeline's key in the run's record: its file, and its function when one was chosen. */
function reportKey(file: PipelineFile): string {
  return pipelineLabel({ file: file.path, function: file.functionName });
}

export interface CompiledSpec {
  file: PipelineFile;
  /** `pipelineInfo.name` of the compiled IR. */
  irName: string;
  description?: string;
  output: string;
  yaml: string;
  /** The YAML's documents, parsed once: the pipeline spec, then the platform spec if any. */
  documents: unknown[];
  /** Hash of the canonical spec: what "unchanged" compares (see Upload). */
  fingerprint: string;
  ms: number;
  /** Why the YAML is not at `output`: the out dir could not be written, so it was compiled in a scratch folder. */
  notKept?: string;
}

export type CompileResult =
  | ({ ok: true } & CompiledSpec)
  | { ok: false; file: PipelineFile; problem: Problem; ms: number };

/** What a real run did to one pipeline on the server. */
export type UploadState = "created" | "versioned" | "unchanged" | "failed";

/** What the upload stage decided (dry run) or did (real run) for one pipeline. */
export interface UploadOutcome {
  /** What happened on the server; in a dry run only "failed" (a read failed), else see `plan`. */
  state?: UploadState;
  /** What a dry run with a host found a real run would do (machine values; the log says them in words). */
  plan?: UploadPlan["kind"];
  pipelineName: string;
  pipelineId?: string;
  versionId?: string;
  versionName?: string;
  url?: string;
  problem?: Problem;
  /** What the new version changes against the server's latest (issue 17); [] when nothing would. */
  changes?: Change[];
}

export interface PipelineReport {
  file: string;
  /** Set when the file's pipeline was chosen with --function or a `# kfp-sync: function=` line. */
  function?: string;
  name?: string;
  output?: string;
  /** How far it got: "compiled" when no upload was made (dry run, no host); `error.stage` says where a failure happened. */
  state: "compiled" | UploadState;
  plan?: UploadPlan["kind"];
  pipelineId?: string;
  versionId?: string;
  versionName?: string;
  url?: string;
  /** What this sync changes (or, in a dry run, would change) against the server's latest version. */
  changes?: Change[];
  error?: Problem;
  timings: { compileMs?: number; uploadMs?: number };
}

export interface Summary {
  schemaVersion: typeof SUMMARY_SCHEMA_VERSION;
  tool: { name: "kfp-sync"; version: string };
  kfp?: { sdk: string; python: string };
  server?: { host: string; version?: string; multiUser?: boolean };
  dryRun: boolean;
  versionTag: string;
  commit?: string;
  runUrl?: string;
  counts: {
    found: number;
    compiled: number;
    uploaded: number;
    created: number;
    versioned: number;
    unchanged: number;
    failed: number;
  };
  pipelines: PipelineReport[];
  problems: Problem[];
  /** What discovery skipped on purpose (a second link to one file, a folder link pointing up): not failures. */
  notes?: Problem[];
  /** The schedules of kfp-sync.yaml and the owned recurring runs no longer in it; absent without the file. */
  schedules?: ScheduleOutcome[];
  interrupted?: "SIGINT" | "SIGTERM";
  durationMs: number;
}

// ─── Config ──────────────────────────────────────────────────────────────────────────────────────

// Flags are defined once; each has a description and, where it makes sense, an env fallback
// (named in the description, resolved in resolveConfig).
export const args = {
  paths: { type: "positional", required: false, description: "Files or folders to search (default: the working directory)" },
  pattern: { type: "string", description: "File name glob, repeatable (env KFP_SYNC_PATTERN, comma-separated) [*_pipeline.py]" },
  "max-depth": { type: "string", description: "How deep to search folders; 1 = only their top level (env KFP_SYNC_MAX_DEPTH) [1]" },
  exclude: { type: "string", description: "Glob of paths to skip, repeatable (env KFP_SYNC_EXCLUDE, comma-separated)" },
  function: { type: "string", description: "FILE=NAME: a pipeline to compile in a file holding several; repeat it for each (env KFP_SYNC_FUNCTION, comma-separated)" },
  "out-dir": { type: "string", description: "Where compiled YAML goes (env KFP_SYNC_OUT_DIR) [.kfp-sync]" },
  python: { type: "string", description: "Python interpreter with kfp installed (env KFP_SYNC_PYTHON) [python3]" },
  "kfp-version": { type: "string", description: "kfp SDK version you pinned; a different installed one is an error (env KFP_SYNC_KFP_VERSION)" },
  jobs: { type: "string", description: "Files compiled at once (env KFP_SYNC_JOBS) [CPU count]" },
  timeout: { type: "string", description: "Seconds one file may take to compile (env KFP_SYNC_TIMEOUT) [120]" },
  "dry-run": { type: "boolean", description: "Find and compile; with a host, only read what would change. No writes (env KFP_SYNC_DRY_RUN)" },
  host: { type: "string", description: `KFP API server (env KFP_HOST) [${DEFAULT_HOST}]` },
  "ui-url": { type: "string", description: "KFP UI base for links (env KFP_UI_URL) [the host]" },
  namespace: { type: "string", description: "Kubernetes namespace of the pipelines; in multi-user mode this or --shared (env KFP_NAMESPACE)" },
  shared: { type: "boolean", description: "Multi-user mode: upload as shared pipelines, visible to every namespace, instead of --namespace (env KFP_SHARED)" },
  token: { type: "string", description: "Bearer token (env KFP_TOKEN; else the file in KF_PIPELINES_SA_TOKEN_PATH or the service-account token; else KFP_COOKIE)" },
  "name-from": { type: "enum", options: ["ir", "file"], description: "Pipeline name from the IR's pipelineInfo.name or from the file name (env KFP_SYNC_NAME_FROM) [ir]" },
  "version-tag": { type: "string", description: "Version name for this run (env KFP_SYNC_VERSION_TAG) [vYYYYMMDD-HHMMSS, UTC]" },
  force: { type: "boolean", description: "Upload a new version even when the spec is unchanged (env KFP_SYNC_FORCE)" },
  "http-timeout": { type: "string", description: "Seconds one read may take; an upload gets four times as long (env KFP_SYNC_HTTP_TIMEOUT) [30]" },
  retries: { type: "string", description: "Retries of a failed read (env KFP_SYNC_RETRIES) [4]" },
  "ntfy-url": { type: "string", description: "ntfy topic URL to notify, e.g. https://ntfy.example/ci (env NTFY_URL)" },
  "ntfy-token": { type: "string", description: "ntfy access token, or user:password (env NTFY_TOKEN)" },
  "ntfy-required": { type: "boolean", description: "A failed notification fails the run (env NTFY_REQUIRED)" },
  "run-url": { type: "string", description: "Link to the CI run (env KFP_SYNC_RUN_URL) [built from GITHUB_* variables]" },
  "pr-comment": { type: "boolean", description: "On a pull_request run, post the plan as one comment on the pull request, edited on every push; needs GITEA_TOKEN or GITHUB_TOKEN (env KFP_SYNC_PR_COMMENT)" },
  config: { type: "string", description: `Schedules file: recurring runs and experiments to keep on the server (env KFP_SYNC_CONFIG) [${"kfp-sync.yaml"} when present]` },
  "prune-schedules": { type: "boolean", description: "Delete recurring runs kfp-sync made whose schedule left the file; without it they are only reported (env KFP_SYNC_PRUNE_SCHEDULES)" },
  verbose: { type: "boolean", description: "Show full errors and each HTTP request, never its headers (env KFP_SYNC_VERBOSE)" },
  version: { type: "boolean", description: "Print the version and exit" },
  help: { type: "boolean", alias: "h", description: "Show this help" },
} as const satisfies ArgsDef;

export interface Auth {
  kind: "token" | "cookie" | "none";
  /** Where it came from, for the log; never the value. */
  source: string;
  header?: { name: "Authorization" | "Cookie"; value: string };
}

export interface Config {
  cwd: string;
  paths: string[];
  patterns: string[];
  excludes: string[];
  maxDepth: number;
  /** Absolute file path → the pipelines to compile in it, in the order given. */
  functions: Map<string, string[]>;
  outDir: string;
  python: string;
  kfpVersion?: string;
  jobs: number;
  timeoutSec: number;
  dryRun: boolean;
  /** Undefined in a dry run without an explicit host: then no network call at all. */
  host?: string;
  uiUrl?: string;
  namespace?: string;
  /** No namespace on purpose: shared pipelines on a multi-user server. */
  shared: boolean;
  auth: Auth;
  nameFrom: "ir" | "file";
  versionTag: string;
  force: boolean;
  httpTimeoutMs: number;
  retries: number;
  ntfy?: { url: string; token?: string; required: boolean };
  runUrl?: string;
  commit?: string;
  /** Post the plan on the pull request (issue 17). */
  prComment: boolean;
  verbose: boolean;
  /** kfp-sync.yaml or --config/KFP_SYNC_CONFIG; undefined when there is none (no schedules stage). */
  scheduleFile?: string;
  pruneSchedules: boolean;
}

type Env = Record<string, string | undefined>;

/** All values of a repeatable flag, in order (citty keeps only the last). */
export function repeatedFlag(rawArgs: string[], name: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === "--") break;
    if (arg === `--${name}` && i + 1 < rawArgs.length) values.push(rawArgs[++i]!);
    else if (arg.startsWith(`--${name}=`)) values.push(arg.slice(name.length + 3));
  }
  return values;
}

/** citty ignores unknown flags; a typo must not silently change what a CI run does. */
export function unknownFlags(rawArgs: string[], def: ArgsDef): string[] {
  const known = new Set<string>();
  for (const [name, arg] of Object.entries(def)) {
    known.add(name);
    if (arg.type === "boolean") known.add(`no-${name}`);
    if ("alias" in arg) for (const alias of [arg.alias ?? []].flat()) known.add(alias);
  }
  const unknown: string[] = [];
  for (const arg of rawArgs) {
    if (arg === "--") break;
    const m = /^--?([^=]+)/.exec(arg);
    if (m && arg !== "-" && !known.has(m[1]!)) unknown.push(arg.split("=")[0]!);
  }
  return unknown;
}

function listFrom(flagValues: string[], envValue: string | undefined): string[] {
  const values = flagValues.length > 0 ? flagValues : (envValue ?? "").split(",");
  return values.map((v) => v.trim()).filter(Boolean);
}

function wholeNumber(value: string | undefined, fallback: number, what: string, min = 0): number {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${what} must be a whole number${min > 0 ? ` of at least ${min}` : ""}, got "${value}"`);
  return n;
}

function truthy(value: string | undefined): boolean {
  return value !== undefined && /^(1|true|yes|on)$/i.test(value.trim());
}

/** `v20260213-143022`: one tag for the whole run, in UTC. */
export function versionTagFor(now: Date): string {
  const iso = now.toISOString(); // 2026-02-13T14:30:22.123Z
  return `v${iso.slice(0, 10).replaceAll("-", "")}-${iso.slice(11, 19).replaceAll(":", "")}`;
}

/**
 * The link to this CI run. Gitea ≤ 1.25 and Forgejo link runs by number, GitHub and Gitea ≥ 1.26
 * by id. `giteaVersion` is the Gitea server's; unknown is taken as current Gitea, because there a
 * number is first tried as an id and can open another run of the repository, while an id is
 * always right (measured on 1.26.0 and 1.27.3). A trailing slash is dropped should one appear.
 */
export function runUrlFrom(env: Env, giteaVersion?: string): string | undefined {
  if (env.KFP_SYNC_RUN_URL) return env.KFP_SYNC_RUN_URL;
  const server = env.GITHUB_SERVER_URL?.replace(/\/+$/, "");
  const repo = env.GITHUB_REPOSITORY;
  if (!server || !repo) return undefined;
  const forgejo = truthy(env.FORGEJO_ACTIONS);
  const gitea = truthy(env.GITEA_ACTIONS) && !forgejo;
  const byNumber = forgejo || (gitea && giteaVersion !== undefined && !atLeast(giteaVersion, 1, 26));
  const run = byNumber ? (env.GITHUB_RUN_NUMBER ?? env.GITHUB_RUN_ID) : (env.GITHUB_RUN_ID ?? env.GITHUB_RUN_NUMBER);
  return run ? `${server}/${repo}/actions/runs/${run}` : undefined;
}

function atLeast(version: string | undefined, major: number, minor: number): boolean {
  const m = /(\d+)\.(\d+)/.exec(version ?? "");
  if (!m) return false;
  return Number(m[1]) > major || (Number(m[1]) === major && Number(m[2]) >= minor);
}

/**
 * The one client for the Gitea API of the server running this job. Its version decides the run
 * link's shape and the job's environment does not carry it. With REQUIRE_SIGNIN_VIEW the API
 * answers 403 anonymously, so a read is asked again with the job's token: Gitea's runner puts
 * ACTIONS_RUNTIME_TOKEN in every run step's environment and the endpoint accepts it. The token
 * goes only to the server that issued it. Reads only; each is one short try, since what it
 * learns only shapes a link.
 */
export function giteaClient(env: Env): { read<T>(route: string): Promise<T | undefined> } | undefined {
  if (!truthy(env.GITEA_ACTIONS) || truthy(env.FORGEJO_ACTIONS) || !env.GITHUB_SERVER_URL) return undefined;
  const $gitea = ofetch.create({ baseURL: `${env.GITHUB_SERVER_URL.replace(/\/+$/, "")}/api/v1`, retry: false }, { fetch: cappedFetch(MAX_SMALL_ANSWER_BYTES) });
  const tokens = [undefined, ...new Set([env.ACTIONS_RUNTIME_TOKEN, env.GITEA_TOKEN, env.GITHUB_TOKEN].filter((t): t is string => !!t))];
  return {
    async read<T>(route: string): Promise<T | undefined> {
      for (const token of tokens) {
        try {
          const headers: Record<string, string> = token ? { Authorization: `token ${token}` } : {};
          return await $gitea<T>(route, { headers, signal: AbortSignal.timeout(2000) });
        } catch (error) {
          const { status } = peerFailure(error);
          if (status !== 401 && status !== 403) return undefined;
        }
      }
      return undefined;
    },
  };
}

/** Gitea's version, for the run link (KFP_SYNC_GITEA_VERSION skips the call). */
async function giteaVersionOf(env: Env, gitea = giteaClient(env)): Promise<string | undefined> {
  if (env.KFP_SYNC_GITEA_VERSION) return env.KFP_SYNC_GITEA_VERSION;
  if (!gitea || env.KFP_SYNC_RUN_URL) return undefined;
  return (await gitea.read<{ version?: string }>("/version"))?.version;
}

/** --run-url, or the link built from the job's environment. Only a run that talks to servers asks Gitea for its version (a dry run without a host stays offline). */
async function resolveRunUrl(cfg: Pick<Config, "runUrl" | "host">, env: Env, log: { info(message: string): void }): Promise<string | undefined> {
  if (cfg.runUrl) return cfg.runUrl;
  const giteaVersion = cfg.host ? await giteaVersionOf(env) : undefined;
  const runUrl = runUrlFrom(env, giteaVersion);
  // The link's shape depends on the version; say which was seen, so a wrong link can be traced.
  if (runUrl && !env.KFP_SYNC_RUN_URL && truthy(env.GITEA_ACTIONS) && !truthy(env.FORGEJO_ACTIONS)) log.info(`Gitea ${giteaVersion ?? "version unknown"}: this run is ${runUrl}`);
  return runUrl;
}

function gitCommit(env: Env, cwd: string): string | undefined {
  if (env.GITHUB_SHA) return env.GITHUB_SHA;
  try {
    const r = Bun.spawnSync(["git", "rev-parse", "HEAD"], { cwd, stdout: "pipe", stderr: "ignore" });
    return r.exitCode === 0 ? r.stdout.toString().trim() || undefined : undefined;
  } catch {
    return undefined;
  }
}

/** kfp.Client's order: explicit token, the token file it is told of, the service-account token; then a cookie. */
export function resolveAuth(token: string | undefined, env: Env): Auth {
  if (token) return { kind: "token", source: "--token/KFP_TOKEN", header: { name: "Authorization", value: `Bearer ${token}` } };
  const tokenPath = env.KF_PIPELINES_SA_TOKEN_PATH;
  if (tokenPath) {
    let value: string;
    try {
      value = fs.readFileSync(tokenPath, "utf8").trim();
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new UsageError(
        code === "ENOENT"
          ? `KF_PIPELINES_SA_TOKEN_PATH names ${tokenPath}, which does not exist: mount the token there or unset the variable`
          : `cannot read the token file ${tokenPath} (${code}): check its permissions`,
        { cause: error },
      );
    }
    if (!value) throw new UsageError(`the token file ${tokenPath} is empty`);
    return { kind: "token", source: tokenPath, header: { name: "Authorization", value: `Bearer ${value}` } };
  }
  if (fs.existsSync(SA_TOKEN_PATH)) {
    try {
      const value = fs.readFileSync(SA_TOKEN_PATH, "utf8").trim();
      if (value) return { kind: "token", source: SA_TOKEN_PATH, header: { name: "Authorization", value: `Bearer ${value}` } };
    } catch {
      // An unreadable default token is not the user's choice; fall through to a cookie or none.
    }
  }
  const cookie = env.KFP_COOKIE;
  if (cookie) {
    // A bare value is Dex's session cookie, as oauth2-proxy/authservice in Kubeflow name it.
    const value = cookie.includes("=") ? cookie : `authservice_session=${cookie}`;
    return { kind: "cookie", source: "KFP_COOKIE", header: { name: "Cookie", value } };
  }
  return { kind: "none", source: "none" };
}

function parseHost(value: string, what: string, credentials = "use --token/KFP_TOKEN or KFP_COOKIE"): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`${what} "${redactUrl(value)}" is not a URL: give it as http://HOST:PORT`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`${what} "${redactUrl(value)}" must start with http:// or https://`);
  }
  if (url.username || url.password) throw new UsageError(`${what} must not carry credentials; ${credentials}`);
  return url.toString().replace(/\/+$/, "");
}

export function resolveConfig(parsed: Record<string, unknown>, rawArgs: string[], env: Env, cwd: string, now: Date): Config {
  const flag = (name: string) => {
    const v = parsed[name];
    return typeof v === "string" && v !== "" ? v : undefined;
  };
  const bool = (name: string, envName: string) => {
    const v = parsed[name];
    return typeof v === "boolean" ? v : truthy(env[envName]);
  };
  const positional = rawArgs.filter((a, i) => !a.startsWith("-") && !isFlagValue(rawArgs, i));

  // Repeatable per file: a file with several pipelines syncs each of them (issue 16).
  const functions = new Map<string, string[]>();
  for (const spec of listFrom(repeatedFlag(rawArgs, "function"), env.KFP_SYNC_FUNCTION)) {
    const at = spec.lastIndexOf("=");
    if (at <= 0 || at === spec.length - 1) throw new UsageError(`--function takes FILE=NAME, got "${spec}"`);
    const names = functions.get(path.resolve(cwd, spec.slice(0, at))) ?? [];
    if (!names.includes(spec.slice(at + 1))) names.push(spec.slice(at + 1));
    functions.set(path.resolve(cwd, spec.slice(0, at)), names);
  }

  const dryRun = bool("dry-run", "KFP_SYNC_DRY_RUN");
  const hostValue = flag("host") ?? env.KFP_HOST;
  // A dry run talks to a server only when told which one; a real run falls back to the in-cluster one.
  const host = hostValue ? parseHost(hostValue, "--host/KFP_HOST") : dryRun ? undefined : DEFAULT_HOST;
  const uiValue = flag("ui-url") ?? env.KFP_UI_URL;
  const token = flag("token") ?? env.KFP_TOKEN;
  const auth = host ? resolveAuth(token, env) : { kind: "none" as const, source: "none" };

  const ntfyUrl = flag("ntfy-url") ?? env.NTFY_URL;
  const ntfyToken = flag("ntfy-token") ?? env.NTFY_TOKEN;
  if (ntfyUrl) checkNtfyUrl(ntfyUrl); // checked now, not after the uploads

  const nameFrom = (flag("name-from") ?? env.KFP_SYNC_NAME_FROM ?? "ir") as Config["nameFrom"];
  if (nameFrom !== "ir" && nameFrom !== "file") throw new UsageError(`--name-from takes "ir" or "file", got "${nameFrom}"`);
  const versionTag = flag("version-tag") ?? env.KFP_SYNC_VERSION_TAG ?? versionTagFor(now);
  if (!NAME_RULE.test(versionTag) || Buffer.byteLength(versionTag) > MAX_VERSION_NAME) {
    throw new UsageError(`version tag "${versionTag}" breaks the server's name rule ${NAME_RULE.source} (max ${MAX_VERSION_NAME})`);
  }
  const jobs = wholeNumber(flag("jobs") ?? env.KFP_SYNC_JOBS, Math.max(1, os.availableParallelism()), "--jobs", 1);

  const namespace = flag("namespace") ?? env.KFP_NAMESPACE;
  const shared = bool("shared", "KFP_SHARED");
  if (namespace !== undefined && Buffer.byteLength(namespace) > MAX_NAMESPACE) {
    throw new UsageError(`--namespace/KFP_NAMESPACE is ${Buffer.byteLength(namespace)} bytes; the server allows ${MAX_NAMESPACE} (a Kubernetes namespace name)`);
  }
  if (namespace && shared) throw new UsageError("--shared/KFP_SHARED and --namespace/KFP_NAMESPACE exclude each other: a pipeline is either shared or in one namespace");

  const configValue = flag("config") ?? env.KFP_SYNC_CONFIG;
  const scheduleFile = path.resolve(cwd, configValue ?? "kfp-sync.yaml");
  if (configValue && !fs.existsSync(scheduleFile)) throw new UsageError(`--config/KFP_SYNC_CONFIG ${configValue}: no such file`);

  const outDir = path.resolve(cwd, flag("out-dir") ?? env.KFP_SYNC_OUT_DIR ?? ".kfp-sync");
  if (fs.existsSync(outDir) && !fs.statSync(outDir).isDirectory()) throw new UsageError(`--out-dir ${outDir} is a file, not a folder`);

  return {
    cwd,
    paths: positional,
    patterns: listFrom(repeatedFlag(rawArgs, "pattern"), env.KFP_SYNC_PATTERN),
    excludes: listFrom(repeatedFlag(rawArgs, "exclude"), env.KFP_SYNC_EXCLUDE),
    maxDepth: wholeNumber(flag("max-depth") ?? env.KFP_SYNC_MAX_DEPTH, 1, "--max-depth"),
    functions,
    outDir,
    python: flag("python") ?? env.KFP_SYNC_PYTHON ?? "python3",
    kfpVersion: flag("kfp-version") ?? env.KFP_SYNC_KFP_VERSION,
    jobs,
    timeoutSec: wholeNumber(flag("timeout") ?? env.KFP_SYNC_TIMEOUT, 120, "--timeout", 1),
    dryRun,
    host,
    uiUrl: uiValue ? parseHost(uiValue, "--ui-url/KFP_UI_URL", "a link needs none") : host,
    namespace,
    shared,
    auth,
    nameFrom,
    versionTag,
    force: bool("force", "KFP_SYNC_FORCE"),
    httpTimeoutMs: wholeNumber(flag("http-timeout") ?? env.KFP_SYNC_HTTP_TIMEOUT, 30, "--http-timeout", 1) * 1000,
    retries: wholeNumber(flag("retries") ?? env.KFP_SYNC_RETRIES, 4, "--retries"),
    ntfy: ntfyUrl ? { url: ntfyUrl, token: ntfyToken, required: bool("ntfy-required", "NTFY_REQUIRED") } : undefined,
    runUrl: flag("run-url"),
    commit: gitCommit(env, cwd),
    prComment: bool("pr-comment", "KFP_SYNC_PR_COMMENT"),
    verbose: bool("verbose", "KFP_SYNC_VERBOSE"),
    scheduleFile: fs.existsSync(scheduleFile) ? scheduleFile : undefined,
    pruneSchedules: bool("prune-schedules", "KFP_SYNC_PRUNE_SCHEDULES"),
  };
}

function isFlagValue(rawArgs: string[], i: number): boolean {
  const prev = rawArgs[i - 1];
  if (!prev?.startsWith("--") || prev.includes("=")) return false;
  const def = (args as ArgsDef)[prev.slice(2)];
  return def !== undefined && def.type !== "boolean";
}

/**
 * Every form a secret takes in what kfp-sync prints: as given, JSON-escaped (the summary),
 * URL-encoded (a query string) and, for user:password, the base64 of a Basic header. Longest
 * first, so a form that contains another is replaced whole.
 */
export function secretForms(values: (string | null | undefined)[]): string[] {
  const forms = new Set<string>();
  for (const value of values) {
    if (typeof value !== "string" || value.length < 4) continue;
    forms.add(value);
    forms.add(JSON.stringify(value).slice(1, -1));
    forms.add(encodeURIComponent(value));
    forms.add(new URLSearchParams({ s: value }).toString().slice(2)); // a space as +
    if (value.includes(":")) forms.add(Buffer.from(value).toString("base64"));
  }
  return [...forms].sort((a, b) => b.length - a.length);
}

/**
 * Every secret of the run, collected once from its environment and flags, in every form it may be
 * printed in: KFP's token (or token file) and cookie, ntfy's token and ?auth=, the CI job's tokens.
 */
export function secretsOf(env: Env, rawArgs: string[]): string[] {
  const tokens = [env.KFP_TOKEN, ...repeatedFlag(rawArgs, "token")];
  const tokenFiles = [env.KF_PIPELINES_SA_TOKEN_PATH, SA_TOKEN_PATH].map((file) => {
    try {
      return file ? fs.readFileSync(file, "utf8").trim() : undefined;
    } catch {
      return undefined; // resolveAuth says why, if the file is the one in use
    }
  });
  const cookieValues = (env.KFP_COOKIE ?? "").split(";").map((c) => c.slice(c.indexOf("=") + 1).trim());
  const ntfyTokens = [env.NTFY_TOKEN, ...repeatedFlag(rawArgs, "ntfy-token")];
  const ntfyAuths = [env.NTFY_URL, ...repeatedFlag(rawArgs, "ntfy-url")].flatMap((value) => {
    const auth = URL.canParse(value ?? "") ? ntfyAuthParamOf(new URL(value!)) : undefined;
    return auth ? [auth, ...credentialForms(Buffer.from(auth, "base64url").toString("utf8").trim())] : [];
  });
  return secretForms([
    ...tokens,
    ...tokenFiles,
    ...[...tokens, ...tokenFiles].map((t) => t && `Bearer ${t}`),
    env.KFP_COOKIE,
    ...cookieValues,
    ...ntfyTokens.flatMap((t) => [t, ...credentialForms(ntfyAuthorization(t))]),
    ...ntfyAuths,
    env.ACTIONS_RUNTIME_TOKEN,
    env.GITEA_TOKEN,
    env.GITHUB_TOKEN,
  ]);
}

// A secret cut short by a length limit leaves its head at the end of a line or field; a head this
// long is not found there by chance.
const CUT_SECRET_MIN = 8;
const FIELD_END = /[\s"'`\\|,;)\]}]/;

/** Replace every secret in a text with ***, also a secret cut short. Applied wherever text leaves the process. */
export function scrub(text: string, secrets: string[]): string {
  let out = text;
  for (const secret of secrets) out = out.split(secret).join("***");
  for (const secret of secrets) {
    // A header built around another secret ("Bearer …", "name=…") starts with words, not secret.
    if (secret.length <= CUT_SECRET_MIN || secrets.some((other) => other !== secret && secret.includes(other))) continue;
    const head = secret.slice(0, CUT_SECRET_MIN);
    for (let at = out.indexOf(head); at >= 0; at = out.indexOf(head, at + 1)) {
      let end = at + head.length;
      while (end < out.length && end - at < secret.length && out[end] === secret[end - at]) end++;
      if (end === out.length || FIELD_END.test(out[end]!)) out = `${out.slice(0, at)}***${out.slice(end)}`;
    }
  }
  return out;
}

/**
 * A copy of a record for output with every string scrubbed before it is serialized: a secret
 * JSON-escaped inside a value would be escaped again by JSON.stringify and missed by scrub().
 */
export function scrubbed<T>(value: T, secrets: string[]): T {
  return JSON.parse(JSON.stringify(value, (_key, v: unknown) => (typeof v === "string" ? scrub(v, secrets) : v)) ?? "null") as T;
}

/** A URL as it may be shown: credentials and ?auth= replaced, also in text that is no valid URL. */
export function redactUrl(value: string): string {
  return value.replace(/\/\/[^/?#\s]*@/g, "//***@").replace(/([?&]auth=)[^&#\s]*/gi, "$1***");
}

// ─── Run context and output ──────────────────────────────────────────────────────────────────────

/** The one way text leaves kfp-sync: every write is scrubbed of the run's secrets first. */
export interface Writer {
  /** stdout carries only the summary JSON; stderr the log and annotations; a file is appended to (Actions files). */
  write(to: "stdout" | "stderr" | { file: string }, text: string): void;
  /** A record with every string scrubbed, for what a peer serializes itself (a notification's JSON body). */
  scrubbed<T>(value: T): T;
}

export function writerFor(secrets: string[], streams: { stdout: { write(text: string): unknown }; stderr: { write(text: string): unknown } } = process): Writer {
  return {
    write(to, text) {
      const clean = scrub(text, secrets);
      if (to === "stdout") streams.stdout.write(clean);
      else if (to === "stderr") streams.stderr.write(clean);
      else fs.appendFileSync(to.file, clean, "utf8");
    },
    scrubbed: (value) => scrubbed(value, secrets),
  };
}

type Log = ReturnType<typeof createLog>;

function createLog(verbose: boolean, out: Writer) {
  const icons: Record<string, string> = { error: "✖", fatal: "✖", warn: "⚠", success: "✔", info: "ℹ", start: "◐", ready: "✔", debug: "⚙", log: "" };
  const reporter: ConsolaReporter = {
    log(entry) {
      const text = entry.args.map((a) => (a instanceof Error ? (verbose ? (a.stack ?? a.message) : a.message) : String(a))).join(" ");
      const icon = icons[entry.type] ?? "";
      out.write("stderr", `${icon ? `${icon} ` : ""}${text}\n`);
    },
  };
  return createConsola({ level: verbose ? 4 : 3, reporters: [reporter] });
}

/** What one run holds that is not configuration: its secrets, its output, its signal state, its exit code. */
export interface RunContext {
  secrets: string[];
  out: Writer;
  log: Log;
  stopped: boolean;
  signal?: "SIGINT" | "SIGTERM";
  /** Aborted with the signal: HTTP in flight ends at once. */
  abort: AbortController;
  /** The compile driver while it runs, so a signal can end it (and with it every child). */
  driver?: Bun.Subprocess;
  exitCode: number;
}

export function runContext(secrets: string[], verbose = false, out: Writer = writerFor(secrets)): RunContext {
  return { secrets, out, log: createLog(verbose, out), stopped: false, abort: new AbortController(), exitCode: 0 };
}

/** A first SIGINT/SIGTERM stops the run and reports what was done; a second exits at once. */
function stopRun(run: RunContext, signal: "SIGINT" | "SIGTERM"): void {
  if (run.stopped) process.exit(signal === "SIGINT" ? 130 : 143);
  run.log.warn(`${signal}: stopping; reporting what was done`);
  run.stopped = true;
  run.signal = signal;
  run.abort.abort();
  run.driver?.kill("SIGTERM");
}

// ─── HTTP, for every peer ────────────────────────────────────────────────────────────────────────

/** An answer over the cap: reading stopped there, so memory stays bounded. */
export class AnswerTooLarge extends Error {
  override name = "AnswerTooLarge";
  constructor(readonly limitBytes: number) {
    super(`the answer was larger than ${limitBytes / 2 ** 20} MiB`);
  }
}

/**
 * fetch whose answers end at `limitBytes`: a declared length over it fails at once, a streamed
 * body fails (and the connection is dropped) as soon as it passes it. ofetch reads every body
 * whole, so the cap has to sit under it.
 */
export function cappedFetch(limitBytes: number): typeof fetch {
  const capped = async (input: Parameters<typeof fetch>[0], init?: RequestInit): Promise<Response> => {
    const response = await fetch(input, init);
    if (Number(response.headers.get("content-length")) > limitBytes) {
      await response.body?.cancel().catch(() => {});
      throw new AnswerTooLarge(limitBytes);
    }
    if (!response.body) return response;
    const reader = response.body.getReader();
    let seen = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) return controller.close();
        seen += value.byteLength;
        if (seen > limitBytes) {
          await reader.cancel().catch(() => {});
          return controller.error(new AnswerTooLarge(limitBytes));
        }
        controller.enqueue(value);
      },
      cancel: (reason) => reader.cancel(reason),
    });
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
  return capped as typeof fetch;
}

/**
 * Failures no retry mends, in words: an answer over the cap, or https:// to a port that speaks
 * plain HTTP (the TLS handshake fails). `url` is what the user gave, for the suggestion.
 */
export function answerProblem(error: unknown, url?: string): string | undefined {
  const e = error as { cause?: unknown; code?: unknown; message?: unknown } | undefined;
  const cause = (e?.cause ?? e) as { code?: unknown; message?: unknown } | undefined;
  if (error instanceof AnswerTooLarge) return error.message;
  if (cause instanceof AnswerTooLarge) return cause.message;
  const tls = cause?.code === "EPROTO" || /TLS|SSL|handshake|wrong version number/i.test(String(cause?.message ?? ""));
  if (!tls || (url && !url.startsWith("https:"))) return undefined;
  const plain = URL.canParse(url ?? "") ? new URL(url!) : undefined;
  if (!plain) return "the server does not speak HTTPS on that port";
  plain.protocol = "http:";
  plain.search = "";
  return `the server does not speak HTTPS on that port; did you mean ${plain.toString().replace(/\/+$/, "")}?`;
}

/**
 * What went wrong with a request to any peer, taken apart once: the HTTP status and body when an
 * answer came, else whether it timed out, the network error's code, and a failure no retry mends.
 */
export function peerFailure(error: unknown, url?: string): { status?: number; data?: unknown; contentType?: string | null; statusText?: string; settled?: string; timedOut: boolean; code: string } {
  const fe = error as FetchError;
  const status = fe.response?.status;
  const cause = (fe.cause ?? fe) as { code?: string | number; name?: string; message?: string };
  // An AbortSignal timeout is a DOMException named TimeoutError whose numeric code says nothing.
  const code = typeof cause.code === "string" ? cause.code : (cause.name ?? "");
  return {
    status,
    data: fe.data,
    contentType: fe.response?.headers.get("content-type"),
    statusText: fe.response?.statusText,
    settled: status ? undefined : answerProblem(error, url),
    timedOut: /TimeoutError|ETIMEDOUT/.test(code),
    code,
  };
}

/** Backoff before read retry `attempt` (0-based): 250 ms doubling to 8 s, ±25 % so runners do not retry in step. */
export function readBackoff(attempt: number): number {
  return Math.min(8000, 250 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
}

// ─── 1. Discover ─────────────────────────────────────────────────────────────────────────────────

// Never worth searching, and searching them is slow: tool caches, environments, our own output.
const SKIPPED_DIRS = new Set([".git", "node_modules", ".venv", "venv", "__pycache__", ".kfp-sync", ".tox", ".mypy_cache"]);

/** A file can name its own pipelines, so CI needs no per-file flag: `# kfp-sync: function=outer,inner`. */
const FUNCTION_MARKER = /^#\s*kfp-sync:\s*function\s*=\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*$/m;

function functionMarker(file: string): string[] | undefined {
  try {
    return FUNCTION_MARKER.exec(fs.readFileSync(file, "latin1"))?.[1]!.split(",").map((name) => name.trim());
  } catch {
    return undefined;
  }
}

/** What a path is when it is not a regular file: said instead of opening it (a FIFO would block for ever). */
function kindOf(stat: fs.Stats): string {
  if (stat.isDirectory()) return "a folder";
  if (stat.isFIFO()) return "a FIFO";
  if (stat.isSocket()) return "a socket";
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return "a device";
  return "not a regular file";
}

export interface Discovery {
  files: PipelineFile[];
  problems: Problem[];
  /** Skipped on purpose, not failures: a second link to one file, a folder link pointing up, an empty search. */
  notes: Problem[];
}

/**
 * Find pipeline files: explicit files as given, folders searched like `find DIR -maxdepth N -name
 * PATTERN`. Symlinked folders are followed once (a link back up is noted, not followed). Several
 * names for one file compile it once, under the first name in sorted order, whatever the folder
 * order (which differs between file systems). A file with several pipelines to compile gives one
 * PipelineFile per pipeline.
 */
export function discover(cfg: Pick<Config, "cwd" | "paths" | "patterns" | "excludes" | "maxDepth" | "functions" | "outDir">): Discovery {
  const patternTexts = cfg.patterns.length > 0 ? cfg.patterns : ["*_pipeline.py"];
  const patterns = patternTexts.map((p) => new Bun.Glob(p));
  const excludes = cfg.excludes.map((p) => new Bun.Glob(p));
  const byReal = new Map<string, string[]>(); // real path → every path that reached it
  const reached = new Set<string>(); // every path given to add(), and its real path: what --function may name
  const problems: Problem[] = [];
  const notes: Problem[] = [];
  const display = (abs: string) => {
    const rel = path.relative(cfg.cwd, abs);
    return rel && !rel.startsWith("..") && !path.isAbsolute(rel) ? rel : abs;
  };
  const excluded = (abs: string) => {
    const rel = display(abs);
    return excludes.some((g) => g.match(rel) || g.match(path.basename(abs)));
  };
  const add = (abs: string) => {
    reached.add(abs);
    let real: string;
    let stat: fs.Stats;
    try {
      real = fs.realpathSync(abs);
      reached.add(real);
      stat = fs.statSync(real);
    } catch (error) {
      problems.push({ stage: "discover", file: display(abs), message: `cannot read: ${(error as NodeJS.ErrnoException).code ?? error}`, hint: "check the file's permissions" });
      return;
    }
    // Checked before anything opens it: reading a FIFO blocks, /dev/zero never ends (issue 9).
    if (!stat.isFile()) {
      problems.push({ stage: "discover", file: display(abs), message: `not a pipeline file: ${real === abs ? "it is" : `it links to ${real}, which is`} ${kindOf(stat)}`, hint: "name regular .py files" });
      return;
    }
    try {
      fs.accessSync(real, fs.constants.R_OK);
    } catch (error) {
      problems.push({ stage: "discover", file: display(abs), message: `cannot read: ${(error as NodeJS.ErrnoException).code ?? error}`, hint: "check the file's permissions" });
      return;
    }
    const names = byReal.get(real) ?? [];
    if (!names.includes(abs)) names.push(abs);
    byReal.set(real, names);
  };

  const walk = (dir: string, depth: number, seen: Set<string>) => {
    let entries: Buffer[];
    try {
      // Raw names: a name that is not UTF-8 must be reported, not silently mangled.
      entries = fs.readdirSync(dir, { encoding: "buffer" });
    } catch (error) {
      problems.push({ stage: "discover", file: display(dir), message: `cannot list folder: ${(error as NodeJS.ErrnoException).code ?? error}` });
      return;
    }
    for (const raw of entries) {
      const name = raw.toString("utf8");
      const abs = path.join(dir, name);
      if (!Buffer.from(name, "utf8").equals(raw)) {
        if (patterns.some((g) => g.match(name))) problems.push({ stage: "discover", file: display(abs), message: "file name is not valid UTF-8; Python cannot import it as a module", hint: "rename the file" });
        continue;
      }
      if (excluded(abs)) continue;
      let stat: fs.Stats | undefined;
      try {
        stat = fs.statSync(abs, { throwIfNoEntry: false });
      } catch (error) {
        // ELOOP (a link to itself), EACCES, ...: a problem only for a name we were looking for.
        const code = (error as NodeJS.ErrnoException).code;
        if (patterns.some((g) => g.match(name))) problems.push({ stage: "discover", file: display(abs), message: code === "ELOOP" ? "symbolic link loop" : `cannot read: ${code}` });
        continue;
      }
      if (!stat) {
        if (patterns.some((g) => g.match(name))) problems.push({ stage: "discover", file: display(abs), message: "broken symbolic link" });
        continue;
      }
      const isDir = stat.isDirectory();
      const matches = patterns.some((g) => g.match(name));
      if (isDir) {
        if (depth >= cfg.maxDepth || SKIPPED_DIRS.has(name) || abs === cfg.outDir) continue;
        const real = fs.realpathSync(abs);
        if (seen.has(real)) {
          // a/b/up -> .. : its files are found through the folder it points to (issue 9).
          notes.push({ stage: "discover", file: display(abs), message: `links to ${display(real)}, a folder this search is already in: not followed` });
          continue;
        }
        walk(abs, depth + 1, new Set(seen).add(real));
      } else if (matches && stat.isFile()) {
        add(abs);
      } else if (matches) {
        notes.push({ stage: "discover", file: display(abs), message: `${kindOf(stat)}, not a pipeline file: skipped` });
      }
    }
  };

  const roots = cfg.paths.length > 0 ? cfg.paths : ["."];
  for (const root of roots) {
    const abs = path.resolve(cfg.cwd, root);
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(abs, { throwIfNoEntry: false });
    } catch (error) {
      throw new UsageError(`${root}: cannot read (${(error as NodeJS.ErrnoException).code})`, { cause: error });
    }
    if (!stat) throw new UsageError(`${root}: no such file or folder`);
    if (stat.isDirectory()) walk(abs, 1, new Set([fs.realpathSync(abs)]));
    else add(abs);
  }

  // A --function for a file this run does not compile would be silently ignored: refuse the run.
  for (const [file, names] of cfg.functions) {
    let real: string | undefined;
    try {
      real = fs.realpathSync(file);
    } catch {
      real = undefined;
    }
    if (!reached.has(file) && !(real && reached.has(real))) {
      throw new UsageError(`--function ${display(file)}=${names.join(",")}: ${display(file)} is not one of the files this run found (${roots.join(", ")}; pattern ${patternTexts.join(", ")}, --max-depth ${cfg.maxDepth}): check the path, relative to the working directory`);
    }
  }

  const files: PipelineFile[] = [];
  for (const [real, names] of byReal) {
    const [kept, ...others] = names.sort((a, b) => compare(display(a), display(b)));
    for (const other of others) {
      notes.push({ stage: "discover", file: display(other), message: `the same file as ${display(kept!)}, which is compiled instead (the first name in sorted order)` });
    }
    const functions = [...names, real].map((n) => cfg.functions.get(n)).find(Boolean) ?? functionMarker(real) ?? [undefined];
    for (const functionName of functions) files.push({ path: display(kept!), abs: kept!, functionName, oneOfSeveral: functions.length > 1 || undefined });
  }
  if (files.length === 0 && problems.length === 0) {
    notes.push({
      stage: "discover",
      message: `no file matching ${patternTexts.join(" or ")} in ${roots.map((r) => display(path.resolve(cfg.cwd, r)) || ".").join(", ")} (--max-depth ${cfg.maxDepth}${cfg.excludes.length ? `, --exclude ${cfg.excludes.join(", ")}` : ""})`,
      hint: "name the files or folders, or change --pattern/--max-depth",
    });
  }
  // Stable: by path, then the functions in the order they were given.
  files.sort((a, b) => compare(a.path, b.path));
  return { files, problems, notes };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Stage 1 as the run sees it: the files, with what was unreadable or skipped said in the log. */
function findStage(cfg: Config, log: Log): Discovery {
  const found = discover(cfg);
  for (const p of found.problems) log.error(`${shown(p.file!)}: ${p.message}`);
  for (const n of found.notes) log.warn(n.file ? `${shown(n.file)}: ${n.message}` : n.message);
  const files = new Set(found.files.map((f) => f.path)).size;
  const several = files < found.files.length ? ` (${found.files.length} pipelines)` : "";
  log.info(`found ${files} pipeline file${files === 1 ? "" : "s"}${several}${found.problems.length ? `, ${found.problems.length} unreadable` : ""}`);
  return found;
}

// ─── 2. Compile ──────────────────────────────────────────────────────────────────────────────────

/**
 * The Python side, in one place. It imports kfp once and then forks one child per pipeline, a few
 * at a time: every compile starts from the same clean state (kfp keeps compile state in globals,
 * kubeflow/pipelines#7008) without paying the ~1 s kfp import per file. The selection rule and the
 * compile call are kfp's own (kfp.cli.compile_), so the YAML is byte-identical to
 * `kfp dsl compile --py FILE [--function NAME] --output OUT`.
 *
 * Protocol: after importing kfp it prints a "ready" event; then it reads one JSON request on
 * stdin and prints one "done" event per job. Events go to the original stdout, which nothing
 * else may use: a pipeline file's own prints go to a per-job log.
 *
 * Containment (issue 9): the driver and every compile child are child subreapers, so whatever a
 * pipeline file starts stays below them even after setsid or a double fork; a child ends all of
 * it before it exits, and the driver ends what a dead child left. A child dies with the driver
 * (PR_SET_PDEATHSIG), and kfp-sync ends what is left below itself when the driver is gone.
 */
export const COMPILE_DRIVER = String.raw`
import os, sys

# First, before any other import: Python puts the script's folder (kfp-sync's private scratch
# folder) first on sys.path; kfp dsl compile, a console script, has no user folder there either.
# Then a repository with types.py or json.py at its root cannot shadow the standard library (issue 16).
DRIVER = os.path.realpath(__file__)
if sys.path and sys.path[0] == os.path.dirname(DRIVER):
    del sys.path[0]
import json, select, signal, site, sysconfig, time, traceback

sys.dont_write_bytecode = True  # leave no __pycache__ in the user's checkout
# Deterministic output (issue 16): the default upb protobuf iterates maps in an order seeded per
# process, and kfp renames duplicated sub-pipeline components while iterating one, so a file
# could compile to other bytes on every run (and add a version on every sync). The pure-python
# protobuf keeps insertion order, which is one of the outputs kfp dsl compile gives. Its price
# is CPU: a few per cent on small pipelines, ~35 % on large ones such as GCPC's (bench/README.md).
os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"

events = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)

def emit(**event):
    events.write(json.dumps(event) + "\n")

# The main loop's wake-up pipe (written on SIGCHLD) and the signals that stop the driver.
WAKE = os.pipe()
for fd in WAKE:
    os.set_blocking(fd, False)
STOPPING = {signal.SIGTERM, signal.SIGINT}

try:
    import kfp
    from kfp import compiler
    from kfp.cli import compile_ as kfp_cli
    from kfp.dsl.pipeline_context import Pipeline
except BaseException as e:
    emit(event="fatal", error="%s: %s" % (type(e).__name__, e))
    sys.exit(3)

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def prctl(option, value):
        return libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0
except (ImportError, OSError, AttributeError):  # not Linux, or a Python without ctypes: the process groups below still apply
    def prctl(option, value):
        return False
prctl(PR_SET_CHILD_SUBREAPER, 1)

def children():
    """This process's children (zombies too), from /proc; empty where there is no /proc."""
    pids = set()
    try:
        for task in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % task) as f:
                pids.update(int(pid) for pid in f.read().split())
    except OSError:
        pass
    return pids

def end_strays(keep=()):
    """Kill and reap every child but keep: as a subreaper, that is all that is left of what a compile started."""
    for _ in range(1000):
        strays = children().difference(keep)
        if not strays:
            return
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in strays:
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass

emit(event="ready", kfp=kfp.__version__, python=sys.version.split()[0])

# Warm what every compile would otherwise import on its own, then keep the garbage collector off
# the inherited objects so forked children share the parent's pages instead of copying them.
import gc, inspect
import google.protobuf.descriptor_pb2  # noqa: F401  (imported lazily by the first compile)
inspect.stack()  # kfp calls it on set_cpu_limit & co.; the first call per process stats every module

WARM_UP = """
from kfp import dsl

@dsl.component(base_image="python:3.11-slim")
def step(n: int, data: dsl.Input[dsl.Dataset]) -> int:
    return n

@dsl.container_component
def tool(text: str, out: dsl.Output[dsl.Artifact]):
    return dsl.ContainerSpec(image="busybox", command=["echo"], args=[text, out.path])

@dsl.pipeline(name="kfp-sync-warm-up")
def pipeline(text: str = "a", n: int = 1):
    made = tool(text=text).set_cpu_limit("1").set_memory_limit("1G").set_caching_options(False)
    step(n=n, data=made.outputs["out"])
"""

def warm_up():
    """One compile in the parent, the way a child compiles, so that each child starts with kfp's
    lazy imports done and its caches filled instead of paying for them again (issue 16: speed).
    Every child inherits the same state, so the output stays that of a fresh kfp dsl compile
    (checked by the corpus parity test)."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "kfp_sync_warm_up.py")
        with open(source, "w") as f:
            f.write(WARM_UP)
        func = kfp_cli.collect_pipeline_or_component_func(python_file=source, function_name=None)
        compiler.Compiler().compile(pipeline_func=func, pipeline_parameters={}, package_path=os.path.join(folder, "out.yaml"), type_check=True)
        sys.modules.pop("kfp_sync_warm_up", None)
        sys.path_importer_cache.pop(folder, None)

try:
    warm_up()
except Exception:
    pass  # only slower
gc.freeze()

# Frames in these folders are Python's or kfp's, not the user's: an error points at the user's line.
LIBRARY_DIRS = tuple(os.path.join(os.path.realpath(p), "") for p in {
    *sysconfig.get_paths().values(), *site.getsitepackages(), site.getusersitepackages()})

def where(e, job):
    if isinstance(e, SyntaxError) and e.filename:
        return e.filename, e.lineno
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith("<") and not os.path.realpath(f.filename).startswith(LIBRARY_DIRS)
              and os.path.realpath(f.filename) != DRIVER]
    return (frames[-1].filename, frames[-1].lineno) if frames else (job["file"], None)

def compile_one(job, driver):
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != driver:
        os._exit(1)  # the driver died before the line above took effect
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    os.setpgid(0, 0)  # so a timeout also ends whatever the file started
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)  # blocked by the driver around fork
    signal.set_wakeup_fd(-1)
    os.close(WAKE[0])
    os.close(WAKE[1])
    os.close(events.fileno())  # a process the file leaves behind must not hold kfp-sync's channel open
    # As under python -c: a multiprocessing worker (spawn, forkserver) re-runs a __main__ that has
    # a file, and this one is the driver. Its frames stay cheap for inspect: the warm-up cached them.
    del sys.modules["__main__"].__file__
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    started = time.perf_counter()
    try:
        # Same switch as kfp dsl compile's --disable-execution-caching-by-default env var.
        off = os.environ.get("KFP_DISABLE_EXECUTION_CACHING_BY_DEFAULT", "").lower() in ("1", "true", "yes", "y", "on", "t")
        Pipeline._execution_caching_default = not off
        func = kfp_cli.collect_pipeline_or_component_func(python_file=job["file"], function_name=job.get("function"))
        compiler.Compiler().compile(pipeline_func=func, pipeline_parameters={}, package_path=job["output"], type_check=True)
        result = {"ok": True}
    except BaseException as e:
        file, line = where(e, job)
        if isinstance(e, SystemExit):
            message = "the file called sys.exit(%r) while being imported" % (e.code,)
        elif isinstance(e, SyntaxError):
            message = "SyntaxError: %s" % (e.msg,)
        else:
            message = "%s: %s" % (type(e).__name__, e)
        result = {"ok": False, "error": {"type": type(e).__name__, "message": message, "file": file, "line": line}}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    end_strays()
    with open(job["result"], "w") as f:
        json.dump(result, f)
    os._exit(0)

def kill(pid):
    """A compile child and its process group (what the file started and left in it)."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, signal.SIGKILL)
        except OSError:
            pass

def outcome(job, status, started):
    ms = round((time.monotonic() - started) * 1000, 1)
    try:
        with open(job["result"]) as f:
            return json.load(f)
    except (OSError, ValueError):
        pass
    if os.WIFSIGNALED(status):
        why = "was killed by signal %d" % os.WTERMSIG(status)
    else:
        why = "exited with code %d" % os.WEXITSTATUS(status)
    return {"ok": False, "ms": ms, "error": {"type": "Exited", "message": "the compile %s before it finished (os._exit or a crash in the file?)" % why, "file": job["file"], "line": None}}

def main():
    request = json.loads(sys.stdin.read() or "{}")
    jobs, parallel, timeout = request.get("jobs", []), max(1, request.get("parallel", 1)), request.get("timeout", 120)
    pending, running, parent, me = list(range(len(jobs))), {}, os.getppid(), os.getpid()

    def stop(*_):
        for pid in running:
            kill(pid)
        end_strays()
        os._exit(1)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A child's end wakes the loop at once (a free slot is refilled without waiting), through a
    # SIGCHLD handler and the wake-up pipe; the timeout only paces the deadline and parent checks.
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(WAKE[1])
    while pending or running:
        while pending and len(running) < parallel:
            index = pending.pop(0)
            # Until the child has its own handlers, a Ctrl-C or SIGTERM must not run the driver's stop() in it.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
            pid = os.fork()
            if pid == 0:
                compile_one(jobs[index], me)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)
            try:
                os.setpgid(pid, pid)  # also here: a kill may come before the child has run
            except OSError:
                pass
            running[pid] = (index, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid and pid not in running:
            continue  # a stray end_strays had not reaped yet
        if pid:
            index, started = running.pop(pid)
            try:
                os.killpg(pid, signal.SIGKILL)  # whatever the file started and left running
            except OSError:
                pass
            end_strays(keep=running)  # what escaped its group and outlived a child that died abruptly
            emit(event="done", index=index, **outcome(jobs[index], status, started))
            continue
        if os.getppid() != parent:
            stop()  # kfp-sync is gone: leave nothing behind
        now = time.monotonic()
        for pid, (index, started) in list(running.items()):
            if now - started > timeout:
                kill(pid)
                os.waitpid(pid, 0)
                del running[pid]
                end_strays(keep=running)
                emit(event="done", index=index, ok=False, ms=round((now - started) * 1000, 1), error={
                    "type": "Timeout", "file": jobs[index]["file"], "line": None,
                    "message": "compile did not finish in %g s and was stopped (an endless loop or a hang at import?)" % timeout})
        select.select([WAKE[0]], [], [], 0.1)
        try:
            os.read(WAKE[0], 4096)
        except BlockingIOError:
            pass

main()
`;

const DRIVER_FILE = "kfp_sync_driver.py";

interface DriverEvent {
  event: "ready" | "fatal" | "done";
  kfp?: string;
  python?: string;
  error?: string | { type: string; message: string; file: string; line: number | null };
  index?: number;
  ok?: boolean;
  ms?: number;
}

// Linux limits; the YAML is first written as NAME.<pid>.tmp.yaml (pid ≤ 4194304), which must fit too.
const NAME_MAX = 255;
const PATH_MAX = 4095;
const TMP_SUFFIX_MAX = ".4194304.tmp.yaml".length;

/** A name cut to `max` bytes at a character boundary, with a hash of the whole name: stable and unique. */
function fitted(name: string, max: number): string {
  if (Buffer.byteLength(name) <= max) return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 16);
  let cut = name.slice(0, max);
  while (Buffer.byteLength(cut) > max - hash.length - 1) cut = cut.slice(0, -1);
  return `${cut}-${hash}`;
}

/**
 * Where a pipeline's compiled YAML goes: its file's path mirrored under the out dir, `.py` →
 * `.yaml`, or `.<function>.yaml` when the file gives several pipelines. A name or path too long
 * for the file system is shortened with a hash (issue 16: a 254-byte name crashed the run).
 */
export function outputPathFor(file: PipelineFile, cwd: string, outDir: string): string {
  const dirs = path.relative(cwd, file.abs).split(path.sep).map((part) => (part === ".." ? "__" : part));
  const stem = dirs.pop()!.replace(/\.py$/, "") + (file.oneOfSeveral && file.functionName ? `.${file.functionName}` : "");
  const name = `${fitted(stem, NAME_MAX - TMP_SUFFIX_MAX)}.yaml`;
  const mirrored = path.join(outDir, ...dirs.map((d) => fitted(d, NAME_MAX)), name);
  if (Buffer.byteLength(mirrored) + TMP_SUFFIX_MAX <= PATH_MAX) return mirrored;
  // Too deep to mirror: one folder per source folder, named by its hash.
  return path.join(outDir, `_deep-${createHash("sha256").update(dirs.join("/")).digest("hex").slice(0, 16)}`, name);
}

// What pipeline code must not see (issue 9): the run's credentials, by name and by value.
const SECRET_VARIABLES = new Set(["KFP_TOKEN", "KFP_COOKIE", "NTFY_TOKEN", "NTFY_URL", "ACTIONS_RUNTIME_TOKEN", "GITHUB_TOKEN", "GITEA_TOKEN"]);

/** The compile driver's environment: ours minus every variable that names or holds a secret. */
export function driverEnv(env: Env, secrets: string[]): Record<string, string> {
  const clean: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || SECRET_VARIABLES.has(name) || secrets.some((secret) => value.includes(secret))) continue;
    clean[name] = value;
  }
  return clean;
}

/**
 * Before any pipeline code runs (Linux prctl): make kfp-sync a child subreaper, so that what a
 * compile started and the killed driver left behind is re-parented to us instead of init and
 * endLeftovers can still find it; and make it non-dumpable, so that pipeline code running as the
 * same user cannot read kfp-sync's /proc/PID/environ, which holds KFP_TOKEN & co. (the driver's
 * environment has none of them, see driverEnv).
 */
function adoptOrphans(): void {
  try {
    const libc = dlopen("libc.so.6", { prctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64], returns: FFIType.i32 } });
    libc.symbols.prctl(36 /* PR_SET_CHILD_SUBREAPER */, 1n, 0n, 0n, 0n);
    libc.symbols.prctl(4 /* PR_SET_DUMPABLE */, 0n, 0n, 0n, 0n);
  } catch {
    // Not Linux or no glibc: the driver's own containment still applies.
  }
}

/** Kill every process still below kfp-sync once the driver is gone (nothing else of ours runs then). */
function endLeftovers(): void {
  const me = String(process.pid);
  for (let round = 0; round < 100; round++) {
    let alive = 0;
    for (const entry of fs.readdirSync("/proc", { withFileTypes: false }) as string[]) {
      if (!/^\d+$/.test(entry)) continue;
      let fields: string[];
      try {
        const stat = fs.readFileSync(`/proc/${entry}/stat`, "latin1");
        fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      } catch {
        continue;
      }
      if (fields[1] !== me || fields[0] === "Z") continue;
      alive++;
      try {
        process.kill(Number(entry), "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (alive === 0) return;
    Bun.sleepSync(2);
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of stream) {
    buffered += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
    }
  }
  if (buffered) yield buffered;
}

export interface CompileRun {
  results: CompileResult[];
  kfp?: { sdk: string; python: string };
}

/** `run.driver` is the handle a signal uses to end the compiler (and with it every child). */
export async function compileAll(
  files: PipelineFile[],
  cfg: Pick<Config, "cwd" | "outDir" | "python" | "kfpVersion" | "jobs" | "timeoutSec">,
  run: Pick<RunContext, "stopped" | "driver" | "secrets">,
  onResult: (result: CompileResult) => void = () => {},
): Promise<CompileRun> {
  if (run.stopped) {
    // A signal during the steps before (e.g. the Gitea lookup) is acted on now, not after compiling (issue 9).
    return { results: files.map((file) => ({ ok: false, file, ms: 0, problem: { stage: "compile", file: file.path, message: "not compiled: the run was interrupted" } })) };
  }
  adoptOrphans();
  // The driver runs from a file, not `python -c`: kfp calls inspect.stack() in every
  // set_cpu_limit & co., and a frame without a source file costs it a scan of all of sys.modules
  // (~8 ms per compile on the bench's pipelines, issue 16).
  let work = "";
  try {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "kfp-sync-"));
    fs.writeFileSync(path.join(work, DRIVER_FILE), COMPILE_DRIVER);
  } catch (error) {
    if (work) fs.rmSync(work, { recursive: true, force: true });
    throw new UsageError(`cannot make a scratch folder in ${os.tmpdir()} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): point TMPDIR at a writable folder with free space`, { cause: error });
  }
  let driver: Bun.Subprocess<"pipe", "pipe", "pipe">;
  try {
    driver = Bun.spawn([cfg.python, path.join(work, DRIVER_FILE)], { cwd: cfg.cwd, env: driverEnv(process.env as Env, run.secrets), stdin: "pipe", stdout: "pipe", stderr: "pipe" });
  } catch (error) {
    fs.rmSync(work, { recursive: true, force: true });
    throw new UsageError(`cannot run Python "${cfg.python}": ${(error as Error).message}. Install Python 3 or point --python/KFP_SYNC_PYTHON at one`, { cause: error });
  }
  run.driver = driver;
  const stderr = new Response(driver.stderr).text();
  const jobs = files.map((file, i) => {
    const output = outputPathFor(file, cfg.cwd, cfg.outDir);
    // Compiled next to its final place, then renamed: a concurrent run never reads half a file.
    return { file: file.abs, function: file.functionName, output: output.replace(/\.yaml$/, `.${process.pid}.tmp.yaml`), final: output, result: path.join(work, `${i}.result.json`), log: path.join(work, `${i}.log`), notKept: undefined as string | undefined };
  });
  const results = new Map<number, CompileResult>();
  let kfp: CompileRun["kfp"];
  try {
    for await (const line of lines(driver.stdout)) {
      let event: DriverEvent;
      try {
        event = JSON.parse(line) as DriverEvent;
      } catch {
        continue; // not ours: the driver's own channel only carries events
      }
      if (event.event === "fatal") {
        throw new UsageError(
          `kfp is not importable with ${cfg.python} (${event.error}). Install it: ${cfg.python} -m pip install -r requirements.txt, or point --python/KFP_SYNC_PYTHON at a venv that has it`,
        );
      }
      if (event.event === "ready") {
        kfp = { sdk: event.kfp ?? "?", python: event.python ?? "?" };
        if (cfg.kfpVersion && kfp.sdk !== cfg.kfpVersion) {
          throw new UsageError(`${cfg.python} has kfp ${kfp.sdk}, but ${cfg.kfpVersion} is pinned: install the pinned one (pip install -r requirements.txt) or change --kfp-version/KFP_SYNC_KFP_VERSION`);
        }
        jobs.forEach((job, i) => {
          job.notKept = claimOutput(job, cfg.outDir);
          // Compiled all the same, where we can write: a dry run needs no YAML kept, and a compile error still shows.
          if (job.notKept) job.output = path.join(work, `${i}.yaml`);
        });
        driver.stdin.write(JSON.stringify({ jobs, parallel: cfg.jobs, timeout: cfg.timeoutSec }));
        await driver.stdin.end();
        continue;
      }
      const index = event.index!;
      const result = await resultOf(files[index]!, jobs[index]!, event);
      results.set(index, result);
      onResult(result);
    }
  } finally {
    if (driver.exitCode === null) driver.kill("SIGTERM");
    await driver.exited;
    run.driver = undefined;
    endLeftovers(); // a driver killed with -9 ends nothing itself
    for (const job of jobs) {
      try {
        fs.rmSync(job.output, { force: true }); // what a failed compile left of claimOutput's file
      } catch {
        // a folder that turned unwritable keeps an empty scratch file; the run's report matters more
      }
    }
    fs.rmSync(work, { recursive: true, force: true });
  }
  const tail = (await stderr).trim().slice(-500);
  if (!kfp && !run.stopped) {
    if (driver.exitCode === 127 || /No such file|not found/i.test(tail)) {
      throw new UsageError(`cannot run Python "${cfg.python}": install Python 3 or point --python/KFP_SYNC_PYTHON at one`);
    }
    throw new UsageError(`the Python compile driver (${cfg.python}) failed to start (exit ${driver.exitCode ?? driver.signalCode}): ${tail}`);
  }
  const missing = run.stopped
    ? "not compiled: the run was interrupted"
    : `not compiled: the compile driver ended early (exit ${driver.exitCode ?? driver.signalCode})${tail ? `: ${tail.replace(/\s+/g, " ")}` : ""}`;
  return {
    kfp,
    results: files.map((file, i) => results.get(i) ?? { ok: false, file, ms: 0, problem: { stage: "compile", file: file.path, message: missing } }),
  };
}

/** Make room for a file's YAML: its folder, no stale YAML, a file we may write. Why not, when it cannot. */
function claimOutput(job: { output: string; final: string }, outDir: string): string | undefined {
  try {
    fs.mkdirSync(path.dirname(job.output), { recursive: true });
    fs.rmSync(job.final, { force: true }); // a failed compile must not leave last run's YAML behind
    fs.closeSync(fs.openSync(job.output, "w")); // root ignores mode bits, not a read-only mount: only a write tells
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "";
    try {
      if (fs.lstatSync(outDir).isSymbolicLink() && !fs.existsSync(outDir)) return `the out dir is a symbolic link to ${fs.readlinkSync(outDir)}, which does not exist`;
    } catch {
      // no out dir at all: the code below says why it could not be made
    }
    const reasons: Record<string, string> = {
      EROFS: "read-only file system",
      EACCES: "permission denied",
      EPERM: "permission denied",
      ENOTDIR: "a part of the path is a file, not a folder",
      EISDIR: "a folder is in the way",
      ERR_FS_EISDIR: "a folder is in the way",
      EEXIST: "a file is in the way",
      ELOOP: "symbolic link loop",
      ENOSPC: "no space left on the device",
      EDQUOT: "disk quota exceeded",
    };
    return reasons[code] ? `${reasons[code]} (${code.replace(/^ERR_FS_/, "")})` : (error as Error).message;
  }
}

async function resultOf(file: PipelineFile, job: { output: string; final: string; log: string; notKept?: string }, event: DriverEvent): Promise<CompileResult> {
  const ms = event.ms ?? 0;
  if (!event.ok) {
    if (!fs.existsSync(file.abs)) {
      return { ok: false, file, ms, problem: { stage: "compile", file: file.path, message: "the file was removed after it was found (deleted while kfp-sync ran?)" } };
    }
    const e = typeof event.error === "object" ? event.error : { message: String(event.error), file: file.abs, line: null };
    let message = e.message.replace(/\s*\n\s*/g, " ").trim(); // one line: CI logs and notifications
    if (/exited with code|killed by signal/.test(message)) {
      const tail = tailOf(job.log, 400);
      if (tail) message += `; its last output: ${tail}`;
    }
    const encoding = notUtf8(file.abs);
    if (encoding) {
      // Python may import such a file and then fail far away ("could not get source code").
      return { ok: false, file, ms, problem: { stage: "compile", file: file.path, line: encoding.line, message: `${message} — the file is not valid UTF-8 (byte 0x${encoding.byte} on line ${encoding.line}): save it as UTF-8` } };
    }
    return { ok: false, file, ms, problem: { stage: "compile", file: displayPath(e.file, file), line: e.line ?? undefined, message } };
  }
  let yaml: string;
  try {
    yaml = await Bun.file(job.output).text();
  } catch {
    yaml = "";
  }
  // kfp's compiler said it succeeded: no spec means the file changed the compiler under us.
  const interfered = "the file interfered with kfp's compiler (does it replace kfp.compiler.Compiler or sys.modules['kfp']?)";
  let docs: unknown[];
  try {
    docs = yamlDocuments(yaml);
  } catch {
    docs = [];
  }
  const spec = docs[0] as { pipelineInfo?: { name?: string; description?: string } } | undefined;
  const irName = spec?.pipelineInfo?.name;
  if (!irName) {
    const what = yaml.trim() ? "the compiled YAML is no pipeline spec (no pipelineInfo.name)" : "the compile wrote no YAML";
    return { ok: false, file, ms, problem: { stage: "compile", file: file.path, message: `${what}: ${interfered}` } };
  }
  try {
    if (!job.notKept) fs.renameSync(job.output, job.final);
  } catch (error) {
    return { ok: false, file, ms, problem: { stage: "compile", file: file.path, message: `cannot write the compiled YAML to ${shown(job.final)}: ${(error as Error).message}` } };
  }
  return { ok: true, file, ms, irName, description: spec.pipelineInfo?.description, output: job.final, yaml, documents: docs, fingerprint: fingerprintOf(docs[0], docs[1]), notKept: job.notKept };
}

/**
 * The documents of a compiled YAML stream (the pipeline spec, then the platform spec if any),
 * parsed by Bun's native YAML 1.2 parser: ~20× faster than the yaml package on IR specs, which
 * was a third of a run's own CPU (issue 16). Bun returns a lone document as itself and a stream
 * as an array; an empty document first makes every stream an array, a list document included.
 */
export function yamlDocuments(text: string): unknown[] {
  // Bun 1.4 merges a quoted '<<' key as if it were the merge key; PyYAML writes a dict key "<<" so.
  if (text.includes("<<")) return YAML.parseAllDocuments(text).map((d) => d.toJS());
  const parsed = Bun.YAML.parse(`{}\n...\n${text.replace(/^\uFEFF/, "")}`) as unknown;
  return Array.isArray(parsed) ? parsed.slice(1) : [];
}

function notUtf8(file: string): { line: number; byte: string } | undefined {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return undefined;
  } catch {
    const text = bytes.toString("utf8");
    const at = text.indexOf("\uFFFD");
    const offset = Buffer.byteLength(text.slice(0, at));
    return { line: text.slice(0, at).split("\n").length, byte: (bytes[offset] ?? 0).toString(16).toUpperCase().padStart(2, "0") };
  }
}

function displayPath(reported: string, file: PipelineFile): string {
  if (path.resolve(reported) === path.resolve(file.abs)) return file.path;
  const rel = path.relative(path.dirname(file.abs), reported);
  return rel.startsWith("..") ? reported : path.join(path.dirname(file.path), rel);
}

function tailOf(file: string, bytes: number): string {
  try {
    const fd = fs.openSync(file, "r");
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(bytes, size));
    fs.readSync(fd, buf, 0, buf.length, size - buf.length);
    fs.closeSync(fd);
    return buf.toString("utf8").trim().replace(/\s+/g, " ");
  } catch {
    return "";
  }
}

/** Stage 2 as the run sees it: each result logged; a YAML that could not be kept fails a real run's pipeline. */
async function compileStage(files: PipelineFile[], cfg: Config, run: RunContext): Promise<CompileRun & { unkept: Problem[] }> {
  const log = run.log;
  const compiled = await compileAll(files, cfg, run, (r) => {
    if (r.ok) log.success(`${shown(r.file.path)} → ${shown(r.irName)} (${Math.round(r.ms)} ms)`);
    else log.error(`${shown(r.problem.file ?? r.file.path)}${r.problem.line ? `:${r.problem.line}` : ""}: ${r.file.functionName ? `${r.file.functionName}: ` : ""}${r.problem.message}`);
  });
  // An out dir that cannot be written fails a real run's pipelines; a dry run keeps no YAML anyway.
  const unkept: Problem[] = [];
  const hint = "make the out dir writable, or point --out-dir/KFP_SYNC_OUT_DIR at a folder that is";
  const results = compiled.results.map((r): CompileResult => {
    if (!r.ok || !r.notKept) return r;
    const message = `cannot write the compiled YAML to ${shown(path.relative(cfg.cwd, r.output) || r.output)}: ${r.notKept}`;
    if (cfg.dryRun) {
      unkept.push({ stage: "compile", file: r.file.path, message: `compiled in a temporary folder; the YAML was not kept: ${message}`, hint });
      log.warn(`${shown(r.file.path)}: the YAML was not kept: ${message}`);
      return r;
    }
    log.error(`${shown(r.file.path)}: ${message}`);
    return { ok: false, file: r.file, ms: r.ms, problem: { stage: "compile", file: r.file.path, message, hint } };
  });
  return { ...compiled, results, unkept };
}

// ─── 3. Upload ───────────────────────────────────────────────────────────────────────────────────

/** The v2beta1 objects kfp-sync reads (snake_case, as the server marshals them). */
export interface KfpPipeline {
  pipeline_id: string;
  name?: string;
  display_name?: string;
  namespace?: string;
}
export interface KfpPipelineVersion {
  pipeline_id: string;
  pipeline_version_id: string;
  name?: string;
  display_name?: string;
  description?: string;
  pipeline_spec?: unknown;
  created_at?: string;
}
interface KfpHealth {
  commit_sha?: string;
  tag_name?: string;
  multi_user?: boolean;
}

/** A failed call to the KFP API, with the server's own message and what to do about it. */
export class KfpError extends Error {
  override name = "KfpError";
  /**
   * The answer shows kfp-sync is not talking to the KFP API as itself (a login page, the UI, a
   * proxy's `{}`, a refused identity): no further write can go well, so the run stops writing.
   */
  notKfp = false;
  /** Met by a read (or healthz) with notKfp, 401 or 403: no write of this run should follow. */
  onRead = false;
  constructor(
    message: string,
    readonly status?: number,
    /** The request was sent but no answer came back: it may or may not have taken effect. */
    readonly answerLost = false,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** An answer that is not the KFP API's, said as what it most likely is (issues 9 and 15). */
function notKfpError(what: string, reason: string, status?: number): KfpError {
  const error = new KfpError(`${what}: ${reason}`, status);
  error.notKfp = true;
  return error;
}

// A login page means an identity-aware proxy (Dex, oauth2-proxy, authservice) did not accept us.
const LOGIN_PAGE = /dex|oauth2|oidc|authservice|sign[ _-]?in|log[ _-]?in|\/auth\b|keycloak/i;
const LOGIN_ADVICE = "check KFP_TOKEN/KFP_COOKIE (an expired or missing session) or point --host/KFP_HOST at ml-pipeline directly";

/** What an HTML answer or a redirect means, for a person. */
function notApiAnswer(status: number, location: string | undefined, body: string): string {
  if (location !== undefined) {
    return LOGIN_PAGE.test(location)
      ? `the server redirected to a login page (${location.split("?")[0]}): the credentials were not accepted; ${LOGIN_ADVICE}`
      : `the server redirected to ${location.split("?")[0]} instead of answering: check --host/KFP_HOST (http vs https, the path)`;
  }
  if (LOGIN_PAGE.test(body)) return `the server answered with a login page (HTTP ${status}): the credentials were not accepted; ${LOGIN_ADVICE}`;
  return `the server answered with a web page (HTTP ${status}), not the KFP API: --host/KFP_HOST most likely points at the KFP UI (ml-pipeline-ui) or another web server; point it at the API server, e.g. ${DEFAULT_HOST}`;
}

function looksLikeHtml(contentType: string | null, body: unknown): boolean {
  return /html/i.test(contentType ?? "") || (typeof body === "string" && /^\s*</.test(body));
}

/**
 * Every value percent-encoded on its own. Go refuses a whole query holding a raw `;` or a bad
 * %-escape (the upload then fails as "Failed to read pipeline from file"), and reads a raw `+` as
 * a space; ofetch's serializer leaves `;` raw (issue 15).
 */
export function queryString(query: Record<string, string | undefined> = {}): string {
  const pairs = Object.entries(query).filter(([, v]) => v !== undefined && v !== "");
  return pairs.length === 0 ? "" : `?${pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v!)}`).join("&")}`;
}

/** The server's message from either body shape: gateway `{code,message}`, upload `{error_message}`, or text. */
export function serverMessage(data: unknown): string | undefined {
  let body = data;
  if (typeof data === "string") {
    try {
      body = JSON.parse(data);
    } catch {
      return oneLine(data.replace(/<[^>]*>/g, " ")) || undefined; // a proxy's HTML error page too
    }
  }
  if (body && typeof body === "object") {
    const b = body as Record<string, unknown>;
    // Gateway errors carry the clean text in details[0].error_message and the whole chain in message.
    const detail = Array.isArray(b.details) ? (b.details[0] as Record<string, unknown> | undefined)?.error_message : undefined;
    // The real 2.17 gateway puts the clean text in details[0].message (a google.rpc.Status).
    const first = Array.isArray(b.details) ? (b.details[0] as Record<string, unknown> | undefined) : undefined;
    const message = detail ?? (typeof first?.message === "string" ? first.message : undefined) ?? b.error_message ?? b.message ?? b.error;
    if (typeof message === "string" && message) return oneLine(message);
  }
  return undefined;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim().slice(0, 500);
}

const STATUS_HINTS: Record<number, string> = {
  400: "the server rejected the request as invalid",
  401: "no identity reached the server: set KFP_TOKEN, KF_PIPELINES_SA_TOKEN_PATH or KFP_COOKIE",
  403: "the server knows who you are and refused: check the namespace (--namespace/KFP_NAMESPACE) and your profile's RBAC",
  404: "not found: check --host/KFP_HOST points at the ml-pipeline API, not the UI",
  409: "it already exists on the server",
  413: "the pipeline is larger than the server accepts (32 MiB)",
  500: "the server failed: retry later, or read the ml-pipeline pod's log",
  502: "a proxy in front of ml-pipeline failed: retry later",
  503: "the server is unavailable: retry later",
  504: "the server did not answer in time: retry later",
};

function toKfpError(error: unknown, what: string, host: string, timeoutMs: number): KfpError {
  if (error instanceof KfpError) return error;
  const { status, data, contentType, statusText, settled, timedOut, code } = peerFailure(error, host);
  // An error page in HTML (a login page's 401, the UI's 404): say what it is, not its markup.
  if (status && looksLikeHtml(contentType ?? null, data)) {
    return notKfpError(what, notApiAnswer(status, undefined, String(data)), status);
  }
  if (status) {
    const detail = serverMessage(data) ?? statusText ?? "";
    const hint = STATUS_HINTS[status] ?? (status >= 500 ? STATUS_HINTS[500] : "");
    return new KfpError(`${what}: HTTP ${status}${detail ? ` — ${detail}` : ""}${hint ? ` (${hint})` : ""}`, status, false, { cause: error });
  }
  // An answer over the cap may come after the server acted: as unknown as a lost answer.
  if (settled) return new KfpError(`${what}: ${settled}`, undefined, error instanceof AnswerTooLarge || (error as FetchError).cause instanceof AnswerTooLarge, { cause: error });
  const reason = timedOut
    ? `no answer within ${timeoutMs / 1000} s`
    : /ECONNREFUSED|ConnectionRefused/.test(code)
      ? `connection refused by ${host}: check --host/KFP_HOST and that the network lets this runner reach ml-pipeline`
      : /ENOTFOUND|EAI_AGAIN|DNS/.test(code)
        ? `cannot resolve ${new URL(host).hostname}: check --host/KFP_HOST`
        : `network error (${code || ((error as FetchError).cause as Error | undefined)?.message || (error as Error).message || "connection lost"})`;
  return new KfpError(`${what}: ${reason}`, undefined, true, { cause: error });
}

/** Read failures worth another try: the network, a stalled answer, a gateway, a mangled body. */
function retryable(error: KfpError): boolean {
  if (answerProblem(error.cause)) return false; // the same answer again, or the same handshake
  return error.status === undefined || error.status === 502 || error.status === 503 || error.status === 504;
}

export interface KfpApi {
  read<T>(what: string, route: string, query?: Record<string, string | undefined>): Promise<T>;
  write<T>(what: string, route: string, query: Record<string, string | undefined>, file: { name: string; text: string }): Promise<T>;
  /** A JSON call that changes something (experiments, recurring runs): sent once, never retried here (see writeChecked). */
  send<T>(what: string, method: "POST" | "DELETE", route: string, body?: Record<string, unknown>): Promise<T>;
  /** The server's clock as far as its Date headers tell, never ahead of it (they have whole seconds). */
  serverNow(): number;
}

/**
 * The one client for the KFP API: base URL, auth and timeout in one place. Reads retry with
 * backoff; writes never retry (ofetch would retry a POST on 409/5xx): a write whose answer was
 * lost is checked by a read before anything is sent again (see uploadOne).
 */
export function kfpClient(
  cfg: Pick<Config, "host" | "auth" | "httpTimeoutMs" | "retries">,
  log: { debug(msg: string): void; warn(msg: string): void },
  /** Aborted on SIGINT/SIGTERM: requests in flight end at once, and nothing is retried. */
  stop: AbortSignal = new AbortController().signal,
  sleep: (ms: number) => Promise<void> = Bun.sleep,
): KfpApi {
  const host = cfg.host!;
  const $kfp: $Fetch = ofetch.create({
    baseURL: `${host}/apis/v2beta1`,
    headers: cfg.auth.header ? { [cfg.auth.header.name]: cfg.auth.header.value } : {},
    retry: false,
    onResponse: ({ request, response, options }) => log.debug(`${options.method ?? "GET"} ${String(request)} → ${response.status}`),
  }, { fetch: cappedFetch(MAX_KFP_ANSWER_BYTES) });
  // Redirects are not followed: a gateway sends an expired session to its login page, and the
  // page's 200 must not pass for the API's answer.
  // Without a Date header yet, assume the server's clock may be a second ahead of ours.
  let clockOffset = -1000;
  const call = async (what: string, route: string, query: Record<string, string | undefined> | undefined, init: { method?: "POST" | "DELETE"; body?: FormData | Record<string, unknown>; timeoutMs: number }): Promise<unknown> => {
    const response = await $kfp.raw(`${route}${queryString(query)}`, { method: init.method, body: init.body, redirect: "manual", signal: AbortSignal.any([stop, AbortSignal.timeout(init.timeoutMs)]) });
    const data: unknown = response._data;
    const date = Date.parse(response.headers.get("date") ?? "");
    if (!Number.isNaN(date)) clockOffset = date - Date.now();
    if (response.status >= 300 && response.status < 400) throw notKfpError(what, notApiAnswer(response.status, response.headers.get("location") ?? "", ""), response.status);
    if (looksLikeHtml(response.headers.get("content-type"), data)) throw notKfpError(what, notApiAnswer(response.status, undefined, String(data)), response.status);
    return data;
  };

  return {
    serverNow: () => Date.now() + clockOffset,
    async read<T>(what: string, route: string, query?: Record<string, string | undefined>): Promise<T> {
      for (let attempt = 0; ; attempt++) {
        try {
          const data = await call(what, route, query, { timeoutMs: cfg.httpTimeoutMs });
          // A body cut off mid-way parses as a string, not an object.
          if (!data || typeof data !== "object") throw new KfpError(`${what}: the server sent a malformed answer`, undefined, true);
          return data as T;
        } catch (error) {
          if (stop.aborted) throw new KfpError(`${what}: interrupted`);
          const failure = toKfpError(error, what, host, cfg.httpTimeoutMs);
          // A read that meets a login page or a refused identity stops the run before it writes.
          if (failure.notKfp || failure.status === 401 || failure.status === 403) failure.onRead = true;
          if (!retryable(failure) || attempt >= cfg.retries) throw failure;
          const delay = readBackoff(attempt);
          log.warn(`${failure.message}; retrying in ${(delay / 1000).toFixed(1)} s (${attempt + 1}/${cfg.retries})`);
          await sleep(delay);
        }
      }
    },
    async write<T>(what: string, route: string, query: Record<string, string | undefined>, file: { name: string; text: string }): Promise<T> {
      const form = new FormData();
      form.append("uploadfile", new Blob([file.text], { type: "application/x-yaml" }), file.name);
      try {
        // Uploads are large and the server validates them: give them more time than a read.
        return (await call(what, route, query, { method: "POST", body: form, timeoutMs: cfg.httpTimeoutMs * 4 })) as T;
      } catch (error) {
        if (stop.aborted) throw new KfpError(`${what}: interrupted while sending; the next sync will see whether it arrived`);
        const failure = toKfpError(error, what, host, cfg.httpTimeoutMs * 4);
        // A gateway's 502/504 may come after ml-pipeline acted: as unknown as a lost answer.
        if (failure.status === 502 || failure.status === 504) throw new KfpError(failure.message, failure.status, true, { cause: error });
        throw failure;
      }
    },
    // JSON writes for the schedules stage; like uploads, a lost answer is settled by a read, not a resend.
    async send<T>(what: string, method: "POST" | "DELETE", route: string, body?: Record<string, unknown>): Promise<T> {
      try {
        return (await call(what, route, undefined, { method, body, timeoutMs: cfg.httpTimeoutMs })) as T;
      } catch (error) {
        if (stop.aborted) throw new KfpError(`${what}: interrupted while sending; the next sync will see whether it arrived`);
        const failure = toKfpError(error, what, host, cfg.httpTimeoutMs);
        if (failure.status === 502 || failure.status === 504) throw new KfpError(failure.message, failure.status, true, { cause: error });
        throw failure;
      }
    },
  };
}

// Spec comparison. The server stores the spec re-marshalled through protobuf: keys reordered,
// defaults dropped, and with a platform spec as {"pipeline_spec":…,"platform_spec":…}. So both
// sides are brought to one canonical form before hashing; sdkVersion is dropped so that an SDK
// patch bump alone is not a change.
// Fields holding google.protobuf.Value/Struct data: the server keeps their zeros, so do we.
const VALUE_FIELDS = new Set(["defaultValue", "constant", "constantValue", "config"]);

function canonical(value: unknown, inValue = false): unknown {
  if (Array.isArray(value)) return value.map((v) => canonical(v, inValue) ?? null); // an element is never dropped
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = canonical((value as Record<string, unknown>)[key], inValue || VALUE_FIELDS.has(key));
      if (v !== undefined) out[key] = v;
    }
    return inValue || Object.keys(out).length > 0 ? out : undefined;
  }
  // A str default that kfp's YAML 1.1 writer leaves unquoted ("1e-4", "0o17") is read by the
  // server as a number and stored so; either form is the same spec (contract get-version-defaults).
  if (inValue) return typeof value === "string" ? (yamlNumber(value) ?? value) : value;
  // proto3 does not marshal a message field's default scalar; it means the same as no field.
  return value === null || value === false || value === 0 || value === "" ? undefined : value;
}

/**
 * The number the server makes of a string that YAML 1.1 (kfp's PyYAML) leaves unquoted but YAML
 * 1.2 (the server's) reads as a number: an exponent without a dot or without a sign, `0o` octal.
 * Other numeric-looking strings are quoted by kfp and stay strings on the server, so "1" and "+1"
 * remain different.
 */
function yamlNumber(text: string): number | undefined {
  if (!/^[-+]?(?:[0-9]+[eE][-+]?[0-9]+|[0-9]*\.[0-9]*[eE][0-9]+)$|^0o[0-7]+$/.test(text)) return undefined;
  const n: unknown = YAML.parse(text);
  return typeof n === "number" && Number.isFinite(n) ? n : undefined;
}

export function fingerprintOf(pipelineSpec: unknown, platformSpec: unknown): string {
  // The diff (Spec diff, below) reads this same form.
  const json = JSON.stringify(canonicalSpec(pipelineSpec, platformSpec));
  return createHash("sha256").update(json).digest("hex");
}

/** Fingerprint of a version's pipeline_spec as the server returns it. */
export function serverFingerprint(pipelineSpec: unknown): string {
  const ps = pipelineSpec as Record<string, unknown> | undefined;
  if (ps && typeof ps === "object" && "pipeline_spec" in ps && !("pipelineInfo" in ps)) return fingerprintOf(ps.pipeline_spec, ps.platform_spec);
  return fingerprintOf(ps, undefined);
}

const FINGERPRINT_MARK = /kfp-sync spec sha256:([0-9a-f]{64})/;

function sameSpec(version: KfpPipelineVersion, fingerprint: string): boolean {
  const stored = FINGERPRINT_MARK.exec(version.description ?? "")?.[1];
  if (stored === fingerprint) return true;
  return version.pipeline_spec !== undefined && serverFingerprint(version.pipeline_spec) === fingerprint;
}

// ─── Spec diff (issue 17) ────────────────────────────────────────────────────────────────────────

// What changed between the server's latest version and the compiled spec, read from the same
// canonical form the fingerprint hashes: "unchanged" and "no changes" can never disagree, and the
// server's re-marshalling (1e-4 → 0.0001, dropped zeros, the {pipeline_spec, platform_spec}
// wrapper) is no change. Pure functions: canonical specs in, records and one-line texts out.

export type ChangeKind =
  | "new" | "parameter" | "task" | "image" | "command" | "args" | "env" | "resources" | "caching" | "retry"
  | "control-flow" | "input" | "platform" | "other" | "unavailable";

/** One change of one pipeline: a record for machines and `text`, one line for people. */
export interface Change {
  kind: ChangeKind;
  /** Dotted path in the canonical {pipeline_spec, platform_spec} document. */
  path?: string;
  /** The task it concerns, when it concerns one. */
  task?: string;
  change?: "added" | "removed" | "changed";
  before?: unknown;
  after?: unknown;
  text: string;
}

type CanonicalSpec = { pipeline_spec?: Record<string, any>; platform_spec?: Record<string, any> };

/** The canonical document of a compiled spec (its two YAML documents) or of the server's stored one. */
export function canonicalSpec(pipelineSpec: unknown, platformSpec: unknown): CanonicalSpec {
  const spec = pipelineSpec && typeof pipelineSpec === "object" ? { ...(pipelineSpec as Record<string, unknown>) } : {};
  delete spec.sdkVersion;
  return (canonical({ pipeline_spec: spec, platform_spec: platformSpec ?? null }) ?? {}) as CanonicalSpec;
}

/** The server's stored spec: the IR, or {pipeline_spec, platform_spec} when it carried a platform spec. */
export function canonicalServerSpec(stored: unknown): CanonicalSpec {
  const ps = stored as Record<string, unknown> | undefined;
  if (ps && typeof ps === "object" && "pipeline_spec" in ps && !("pipelineInfo" in ps)) return canonicalSpec(ps.pipeline_spec, ps.platform_spec);
  return canonicalSpec(ps, undefined);
}

const MAX_VALUE_TEXT = 160;
const SHORT_LIST = 60;

/** A value as a person reads it on one line: strings bare, an env entry as NAME=value, the rest as JSON, long ones cut. */
function valueText(value: unknown): string {
  if (value === undefined) return "(none)";
  const isEntry = (v: unknown): v is { name: string; value: unknown } =>
    !!v && typeof v === "object" && typeof (v as { name?: unknown }).name === "string" && Object.keys(v).length === 2 && "value" in v;
  const text =
    typeof value === "string" ? value
    : isEntry(value) ? `${value.name}=${valueText(value.value)}`
    : Array.isArray(value) && value.length > 0 && value.every(isEntry) ? value.map(valueText).join(", ")
    : JSON.stringify(value);
  return text.length > MAX_VALUE_TEXT ? `${text.slice(0, MAX_VALUE_TEXT - 1)}…` : text;
}

/** Before → after; for long lists only what came and went (`+ --bf16`), which is what a reader looks for. */
function arrowText(before: unknown, after: unknown): string {
  const full = `${valueText(before)} → ${valueText(after)}`;
  if (!Array.isArray(before) || !Array.isArray(after) || (JSON.stringify(before).length <= SHORT_LIST && JSON.stringify(after).length <= SHORT_LIST)) return full;
  const keys = (list: unknown[]) => list.map((v) => JSON.stringify(v));
  const [b, a] = [keys(before), keys(after)];
  const added = after.filter((_, i) => !b.includes(a[i]!)).map((v) => `+ ${valueText(v)}`);
  const removed = before.filter((_, i) => !a.includes(b[i]!)).map((v) => `- ${valueText(v)}`);
  return added.length + removed.length > 0 ? [...removed, ...added].join(", ") : `reordered: ${full}`;
}

interface RawDiff { path: string[]; before: unknown; after: unknown }

/** Leaf differences; a key present on one side only is one difference, lists are compared whole. */
function rawDiff(a: unknown, b: unknown, at: string[] = []): RawDiff[] {
  const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);
  if (isObj(a) && isObj(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => rawDiff(a[k], b[k], [...at, k]));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [{ path: at, before: a, after: b }];
}

const RESOURCE_NAMES: Record<string, string> = {
  cpuLimit: "CPU limit", resourceCpuLimit: "CPU limit", cpuRequest: "CPU request", resourceCpuRequest: "CPU request",
  memoryLimit: "memory limit", resourceMemoryLimit: "memory limit", memoryRequest: "memory request", resourceMemoryRequest: "memory request",
};

/** Executor label → the tasks that run it, in every DAG of the spec. */
function tasksByExecutor(spec: CanonicalSpec): Map<string, string[]> {
  const ps = spec.pipeline_spec ?? {};
  const components: Record<string, any> = ps.components ?? {};
  const dags = [ps.root?.dag, ...Object.values(components).map((c) => c?.dag)];
  const byExecutor = new Map<string, string[]>();
  for (const dag of dags) {
    for (const [task, t] of Object.entries<any>(dag?.tasks ?? {})) {
      const executor = components[t?.componentRef?.name]?.executorLabel;
      if (typeof executor === "string") byExecutor.set(executor, [...(byExecutor.get(executor) ?? []), task].sort());
    }
  }
  return byExecutor;
}

function parameterSummary(p: any): string {
  const type = p?.parameterType ? ` ${p.parameterType}` : "";
  const dflt = p && "defaultValue" in p ? ` = ${valueText(p.defaultValue)}` : "";
  // kfp marks every parameter with a default optional: said only when that is not why.
  return `${type}${dflt}${p?.isOptional && !dflt ? " (optional)" : ""}`;
}

/** A pipeline seen for the first time: "new", with its parameters. */
export function newPipelineChanges(name: string, after: CanonicalSpec): Change[] {
  const params = Object.entries<any>(after.pipeline_spec?.root?.inputDefinitions?.parameters ?? {});
  const listed = params.map(([p, d]) => `${p}${parameterSummary(d)}`).join(", ");
  return [{ kind: "new", change: "added", after: Object.fromEntries(params), text: `${name}: new pipeline${params.length ? `, parameters ${listed}` : ", no parameters"}` }];
}

const KIND_ORDER: ChangeKind[] = ["new", "parameter", "task", "image", "command", "args", "env", "resources", "caching", "retry", "control-flow", "input", "platform", "other", "unavailable"];

/** Every change from `before` (the server's latest) to `after` (compiled), parameters first, in a stable order. */
export function diffSpecs(name: string, before: CanonicalSpec, after: CanonicalSpec): Change[] {
  const execTasks = new Map([...tasksByExecutor(before), ...tasksByExecutor(after)]);
  const changes: Change[] = [];
  const movedTasks = new Set<string>(); // tasks added or removed: their component and executor go with them
  const diffs = rawDiff(before, after);
  const what = (d: RawDiff): Change["change"] => (d.before === undefined ? "added" : d.after === undefined ? "removed" : "changed");
  const arrow = (d: RawDiff) => arrowText(d.before, d.after);
  const add = (d: RawDiff, kind: ChangeKind, text: string, task?: string) =>
    changes.push({ kind, path: d.path.join("."), task, change: what(d), before: d.before, after: d.after, text: `${name}: ${text}` });
  const later: RawDiff[] = [];
  for (const d of diffs) {
    const p = d.path;
    const [doc, s1, s2, s3, s4] = p;
    // root.inputDefinitions.parameters.P[.field]
    if (doc === "pipeline_spec" && s1 === "root" && s2 === "inputDefinitions" && s3 === "parameters" && s4 !== undefined) {
      const field = p[5];
      if (field === undefined) add(d, "parameter", d.after === undefined ? `parameter ${s4} removed` : d.before === undefined ? `parameter ${s4} added:${parameterSummary(d.after)}` : `parameter ${s4} ${arrow(d)}`);
      else if (field === "defaultValue") add(d, "parameter", `parameter ${s4} default ${arrow(d)}`);
      else if (field === "parameterType") add(d, "parameter", `parameter ${s4} type ${arrow(d)}`);
      else if (field === "isOptional") add(d, "parameter", `parameter ${s4} optional ${d.before ? "yes" : "no"} → ${d.after ? "yes" : "no"}`);
      else add(d, "parameter", `parameter ${s4} ${p.slice(5).join(".")} ${arrow(d)}`);
      continue;
    }
    // Tasks of the root DAG or of a sub-DAG (conditions, loops, exit handlers are sub-DAGs).
    const dagAt = doc === "pipeline_spec" && s1 === "root" && s2 === "dag" && s3 === "tasks" ? 4 : doc === "pipeline_spec" && s1 === "components" && p[3] === "dag" && p[4] === "tasks" ? 5 : -1;
    if (dagAt > 0 && p[dagAt] !== undefined) {
      const task = p[dagAt]!;
      const where = dagAt === 5 ? ` (in ${s2!.replace(/^comp-/, "")})` : "";
      const rest = p.slice(dagAt + 1);
      if (rest.length === 0) {
        if (d.before === undefined || d.after === undefined) movedTasks.add(task);
        add(d, "task", `task ${task} ${d.before === undefined ? "added" : d.after === undefined ? "removed" : arrow(d)}${where}`, task);
      } else if (rest[0] === "cachingOptions") add(d, "caching", `task ${task} caching ${d.before ? "on" : "off"} → ${d.after ? "on" : "off"}`, task);
      else if (rest[0] === "retryPolicy") add(d, "retry", `task ${task} retry ${rest.slice(1).join(".") || "policy"} ${arrow(d)}`, task);
      else if (rest[0] === "triggerPolicy" && rest[1] === "condition") add(d, "control-flow", `task ${task} condition ${arrow(d)}`, task);
      else if (rest[0] === "triggerPolicy" && rest[1] === "strategy") add(d, "control-flow", `task ${task} exit handler trigger ${arrow(d)}`, task);
      else if (rest[0] === "parameterIterator" || rest[0] === "artifactIterator" || rest[0] === "iteratorPolicy") add(d, "control-flow", `task ${task} loop ${rest.join(".")} ${arrow(d)}`, task);
      else if (rest[0] === "inputs" && rest[2] !== undefined) add(d, "input", `task ${task} input ${rest[2]} ${arrow(d)}`, task);
      else add(d, "other", `task ${task} ${rest.join(".")} ${arrow(d)}`, task);
      continue;
    }
    later.push(d);
  }
  for (const d of later) {
    const p = d.path;
    const executor = p[0] === "pipeline_spec" && p[1] === "deploymentSpec" && p[2] === "executors" ? p[3] : p[0] === "platform_spec" && p[1] === "platforms" && p[3] === "deploymentSpec" && p[4] === "executors" ? p[5] : undefined;
    const tasks = executor ? (execTasks.get(executor) ?? []) : [];
    const who = executor ? (tasks.length ? `task ${tasks.join(", ")}` : `executor ${executor}`) : "";
    const whole = (executor && p.length === (p[0] === "pipeline_spec" ? 4 : 6)) || (p[1] === "components" && p.length === 3);
    if (whole && (d.before === undefined || d.after === undefined)) {
      // A component or executor that comes or goes with its tasks is said by "task … added/removed".
      const compTasks = p[1] === "components" ? tasksOfComponent(before, after, p[2]!) : tasks;
      if (compTasks.length > 0 && compTasks.every((t) => movedTasks.has(t))) continue;
    }
    if (executor && p[0] === "pipeline_spec") {
      const field = p[5];
      const task = tasks[0];
      if (p[4] === "container" && field === "image") add(d, "image", `${who} image ${imageArrow(d.before, d.after)}`, task);
      else if (p[4] === "container" && (field === "command" || field === "args" || field === "env")) add(d, field, `${who} ${field} ${arrow(d)}`, task);
      else if (p[4] === "container" && field === "resources") {
        const r = p.slice(6);
        // kfp 2.17 writes each limit twice, as the old number (cpuLimit: 2.0) and the new text
        // (resourceCpuLimit: "2"): the new one is said, the old one only where it stands alone.
        const sides = [before, after].map((side) => valueAt(side, p.slice(0, r[0] === "accelerator" ? 7 : 6)) as Record<string, unknown> | undefined);
        const newer = r[0] === "accelerator" ? { count: "resourceCount", type: "resourceType" }[r[1] ?? ""] : `resource${(r[0] ?? "").charAt(0).toUpperCase()}${(r[0] ?? "").slice(1)}`;
        if (newer && r.length === (r[0] === "accelerator" ? 2 : 1) && sides.some((o) => o && typeof o === "object" && newer in o)) continue;
        const label = r[0] === "accelerator" ? `accelerator ${r[1] === "count" || r[1] === "resourceCount" ? "count" : r[1] === "type" || r[1] === "resourceType" ? "type" : r.slice(1).join(".") || ""}`.trim() : (RESOURCE_NAMES[r[0] ?? ""] ?? (r.join(".") || "resources"));
        add(d, "resources", `${who} ${label} ${arrow(d)}`, task);
      } else add(d, "other", `${who} ${p.slice(4).join(".") || "executor"} ${arrow(d)}`, task);
      continue;
    }
    if (p[0] === "platform_spec") {
      const detail = executor ? p.slice(6).join(".") : p.slice(1).join(".");
      add(d, "platform", `${executor ? `${who} ` : ""}${p[2] ?? "platform"} ${detail || "config"} ${arrow(d)}`.replace(/\s+/g, " "), tasks[0]);
      continue;
    }
    add(d, "other", `${p.join(".")} ${arrow(d)}`);
  }
  return changes.map((c, i) => ({ c, i })).sort((x, y) => KIND_ORDER.indexOf(x.c.kind) - KIND_ORDER.indexOf(y.c.kind) || x.i - y.i).map(({ c }) => c);
}

function valueAt(doc: unknown, at: string[]): unknown {
  return at.reduce<unknown>((v, k) => (v && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined), doc);
}

/** The tasks that use a component, on either side. */
function tasksOfComponent(before: CanonicalSpec, after: CanonicalSpec, component: string): string[] {
  const found: string[] = [];
  for (const spec of [before, after]) {
    const ps = spec.pipeline_spec ?? {};
    const dags = [ps.root?.dag, ...Object.values<any>(ps.components ?? {}).map((c) => c?.dag)];
    for (const dag of dags) for (const [task, t] of Object.entries<any>(dag?.tasks ?? {})) if (t?.componentRef?.name === component) found.push(task);
  }
  return found;
}

/** `vllm/vllm-openai:v0.5.4 → v0.6.1`: the repository said once when only the tag moved. */
function imageArrow(before: unknown, after: unknown): string {
  if (typeof before === "string" && typeof after === "string") {
    const at = (s: string) => s.search(/[:@][^/:@]*$/);
    const [i, j] = [at(before), at(after)];
    if (i > 0 && j > 0 && before.slice(0, i) === after.slice(0, j)) return `${before} → ${after.slice(j + 1)}`;
  }
  return `${valueText(before)} → ${valueText(after)}`;
}

/** The first `max` change texts, then "and N more changes": for the places with little room. */
export function changeLines(changes: Change[], max: number): string[] {
  const lines = changes.slice(0, max).map((c) => c.text);
  return changes.length > max ? [...lines, `and ${changes.length - max} more change${changes.length - max === 1 ? "" : "s"}`] : lines;
}

/** A new version's description: its changes, which fitDescription cuts further to the request line's limit. */
export function changesDescription(changes: Change[]): string | undefined {
  return changes.length > 0 ? ["Changes:", ...changeLines(changes, 40).map((line) => `- ${line}`)].join("\n") : undefined;
}

/** The changes a sync of the compiled `documents` makes to `name`, against the server's latest stored spec (none: a new pipeline). */
export function changesOf(name: string, documents: unknown[], latest: { pipeline_spec?: unknown } | undefined): Change[] {
  try {
    const after = canonicalSpec(documents[0], documents[1]);
    if (!latest) return newPipelineChanges(name, after);
    if (!latest.pipeline_spec || typeof latest.pipeline_spec !== "object") {
      return [{ kind: "unavailable", text: `${name}: changes not available: the server's latest version carries no readable spec` }];
    }
    return diffSpecs(name, canonicalServerSpec(latest.pipeline_spec), after);
  } catch (error) {
    return [{ kind: "unavailable", text: `${name}: changes not available: ${(error as Error).message.split("\n")[0]}` }];
  }
}

/** `document_ingestion_pipeline.py` → `document-ingestion-pipeline`. */
export function nameFromFile(file: string): string {
  return path
    .basename(file, ".py")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

/** Problems the server would reject, found before anything is sent. */
export function checkUploadable(name: string, yaml: string): string | undefined {
  const nameBytes = Buffer.byteLength(name);
  if (nameBytes > MAX_PIPELINE_NAME) return `pipeline name "${name}" is ${nameBytes} bytes; the server allows ${MAX_PIPELINE_NAME}`;
  if (!NAME_RULE.test(name)) return `pipeline name "${name}" breaks the server's name rule ${NAME_RULE.source}: use lowercase letters, digits and dashes`;
  const bytes = Buffer.byteLength(yaml);
  if (bytes > MAX_UPLOAD_BYTES) return `compiled spec is ${(bytes / 2 ** 20).toFixed(1)} MiB; the server accepts at most 32 MiB`;
  return undefined;
}

export interface UploadContext {
  api: KfpApi;
  namespace?: string;
  /** Multi-user server and --shared: pipelines without a namespace, looked up among the shared ones. */
  shared?: boolean;
  multiUser?: boolean;
  /** Whether any credentials go with the requests, for advice on refusals (never the value). */
  authKind?: Auth["kind"];
  versionTag: string;
  force: boolean;
  dryRun: boolean;
  uiUrl: string;
  describe: (spec: CompiledSpec) => string;
  /** Labels for pipelines and versions; only servers from 2.17 on know the `tags` parameter. */
  tags?: Record<string, string>;
  /** Said once per cut value (a description or tag the server would refuse). */
  warn?: (message: string) => void;
  /** Set by the first answer that shows no write can go well: no write is sent after it. */
  halt?: { error?: KfpError };
}

type UploadPlan =
  | { kind: "create" }
  | { kind: "version"; pipeline: KfpPipeline; newest: KfpPipelineVersion[] }
  | { kind: "unchanged"; pipeline: KfpPipeline; version: KfpPipelineVersion };

/** An answer must carry the id that makes it what it claims to be; `{}` from a proxy is not "not found". */
function mustCarry<T>(what: string, data: T, key: string, thing: string, onRead = true): T {
  const id = (data as Record<string, unknown> | null)?.[key];
  if (typeof id === "string" && id !== "") return data;
  const shown = JSON.stringify(data)?.slice(0, 80) ?? String(data);
  const error = notKfpError(what, `the server answered ${shown}, which is not ${thing} (no ${key})${onRead ? "" : ": the write is not confirmed"}; --host/KFP_HOST may point at a proxy or the KFP UI, not the ml-pipeline API`, 200);
  error.onRead = onRead;
  throw error;
}

async function findPipeline(ctx: UploadContext, name: string): Promise<KfpPipeline | undefined> {
  const what = `look up pipeline ${name}`;
  if (ctx.shared && ctx.multiUser) {
    // Looked up by name without a namespace, the server returns the newest pipeline of that name
    // in any namespace; listing without one returns only the shared ones.
    const filter = JSON.stringify({ predicates: [{ key: "name", operation: "EQUALS", string_value: name }] });
    const page = await ctx.api.read<{ pipelines?: KfpPipeline[] }>(what, "/pipelines", { filter, page_size: "200" }).catch((error: unknown) => {
      if (error instanceof KfpError && error.status === 400 && /Namespace is required/.test(error.message)) {
        throw new KfpError(`${what}: this server allows no shared pipelines (REQUIRE_NAMESPACE_FOR_PIPELINES): use --namespace/KFP_NAMESPACE instead of --shared`, 400, false, { cause: error });
      }
      throw error;
    });
    const found = (page.pipelines ?? []).find((p) => p.name === name && !p.namespace);
    return found && mustCarry(what, found, "pipeline_id", "a pipeline");
  }
  try {
    const found = await ctx.api.read<KfpPipeline>(what, `/pipelines/names/${encodeURIComponent(name)}`, { namespace: ctx.namespace });
    return mustCarry(what, found, "pipeline_id", "a pipeline");
  } catch (error) {
    if (error instanceof KfpError && error.status === 404 && !error.notKfp) return undefined;
    throw error;
  }
}

/**
 * The versions that count as "latest": all those created in the newest second. created_at has
 * whole seconds and the server orders same-second versions by random id, so asking for one would
 * pick any of them.
 */
async function newestVersions(ctx: UploadContext, pipeline: KfpPipeline): Promise<KfpPipelineVersion[]> {
  const what = `list versions of ${pipeline.name ?? pipeline.pipeline_id}`;
  const newest: KfpPipelineVersion[] = [];
  let pageToken: string | undefined;
  for (;;) {
    const page = await ctx.api.read<{ pipeline_versions?: KfpPipelineVersion[]; next_page_token?: string }>(
      what,
      `/pipelines/${encodeURIComponent(pipeline.pipeline_id)}/versions`,
      pageToken ? { page_token: pageToken, page_size: "10" } : { page_size: "10", sort_by: "created_at desc" },
    );
    const versions = page.pipeline_versions ?? [];
    if (!Array.isArray(versions)) throw Object.assign(notKfpError(what, "the server answered something that is not a list of versions", 200), { onRead: true });
    for (const v of versions) {
      mustCarry(what, v, "pipeline_version_id", "a pipeline version");
      if (newest.length > 0 && v.created_at !== newest[0]!.created_at) return newest;
      newest.push(v);
    }
    if (!page.next_page_token || versions.length === 0) return newest;
    pageToken = page.next_page_token;
  }
}

/** Decide with reads only: what a sync of this spec would do. The dry run stops here. */
async function planUpload(ctx: UploadContext, name: string, fingerprint: string): Promise<UploadPlan> {
  const pipeline = await findPipeline(ctx, name);
  if (!pipeline) return { kind: "create" };
  const newest = await newestVersions(ctx, pipeline);
  // Unchanged only when every version of the newest second is this spec: whichever of them the
  // server or the UI takes for the latest, it is ours. A tie with another spec gets a new version,
  // which is then the one newest.
  if (newest.length > 0 && !ctx.force && newest.every((v) => sameSpec(v, fingerprint))) return { kind: "unchanged", pipeline, version: newest[0]! };
  return { kind: "version", pipeline, newest };
}

/**
 * Wait, if need be, until the server's clock is past the second of its newest version: a version
 * added in that same second would tie with it (see newestVersions), and the next sync could not
 * tell which is the latest. Waits only when the newest version is a second or two old; at most 3 s.
 */
async function outlastNewest(ctx: UploadContext, newest: KfpPipelineVersion[]): Promise<void> {
  const second = Date.parse(newest[0]?.created_at ?? "");
  if (Number.isNaN(second)) return;
  const wait = Math.min(3000, second + 1000 - ctx.api.serverNow());
  if (wait > 0) await Bun.sleep(wait);
}

/** At most 20 tags, keys and values cut to 63 bytes: the server would refuse the whole upload. */
function tagsOf(ctx: UploadContext): string | undefined {
  if (!ctx.tags) return undefined;
  const entries = Object.entries(ctx.tags).slice(0, MAX_TAGS);
  if (entries.length < Object.keys(ctx.tags).length) ctx.warn?.(`only the first ${MAX_TAGS} tags are sent: the server takes no more`);
  const cut = (text: string, what: string) => {
    if (Buffer.byteLength(text) <= MAX_TAG_TEXT) return text;
    ctx.warn?.(`tag ${what} "${text}" cut to ${MAX_TAG_TEXT} bytes: the server refuses longer ones`);
    return cutBytes(text, MAX_TAG_TEXT);
  };
  return JSON.stringify(Object.fromEntries(entries.map(([k, v]) => [cut(k, "key"), cut(v, "value")])));
}

/** The longest prefix of `text` within `bytes` UTF-8 bytes, never splitting a character. */
function cutBytes(text: string, bytes: number): string {
  const buf = Buffer.from(text);
  if (buf.length <= bytes) return text;
  let end = bytes;
  while (end > 0 && (buf[end]! & 0xc0) === 0x80) end--; // back off a continuation byte
  return buf.subarray(0, end).toString("utf8");
}

/**
 * A description whose percent-encoded form fits MAX_DESCRIPTION_ENCODED; `keep` (the line with the
 * fingerprint) always survives whole, the pipeline's own text is cut with a note.
 */
export function fitDescription(text: string | undefined, keep: string, warn?: (message: string) => void): string {
  const joined = [text, keep].filter(Boolean).join("\n\n");
  if (!text || encodeURIComponent(joined).length <= MAX_DESCRIPTION_ENCODED) return joined;
  const bytes = Buffer.byteLength(text);
  const note = ` … [cut by kfp-sync: ${bytes} bytes is more than a request line can carry]`;
  let room = MAX_DESCRIPTION_ENCODED - encodeURIComponent(`${note}\n\n${keep}`).length;
  let cut = "";
  for (const ch of text) {
    room -= encodeURIComponent(ch).length;
    if (room < 0) break;
    cut += ch;
  }
  warn?.(`description cut to ${Buffer.byteLength(cut)} of its ${bytes} bytes: the server takes it in the request line, which the server and proxies before it cap`);
  return `${cut}${note}\n\n${keep}`;
}

function linkTo(ctx: UploadContext, pipelineId?: string, versionId?: string): string | undefined {
  if (!pipelineId) return undefined;
  return versionId ? `${ctx.uiUrl}/#/pipelines/details/${pipelineId}/version/${versionId}` : `${ctx.uiUrl}/#/pipelines/details/${pipelineId}`;
}

/**
 * In multi-user mode the upload routes answer a missing or refused identity with a bare 400
 * "Failed to create a pipeline" (the gateway routes say 401 / 403): say what it most likely means.
 */
function withIdentityAdvice(ctx: UploadContext, error: unknown): unknown {
  if (!(error instanceof KfpError) || error.status !== 400 || !ctx.multiUser || !ctx.namespace) return error;
  if (!/HTTP 400 — Failed to create a pipeline( version)? \(/.test(error.message)) return error;
  const advice =
    ctx.authKind === "none"
      ? `no identity was sent, and in multi-user mode the upload routes refuse that with this 400 (the other routes say 401): set KFP_TOKEN, KF_PIPELINES_SA_TOKEN_PATH or KFP_COOKIE`
      : `in multi-user mode the upload routes answer a refused identity with this 400 (the other routes say 403): check that your identity may create pipelines in namespace ${ctx.namespace} (profile contributors, RBAC)`;
  return new KfpError(`${error.message.replace(/ \([^()]*\)$/, "")}: ${advice}`, 400, false, { cause: error });
}

/** Create, version or leave alone one compiled pipeline. Never deletes or overwrites. */
export async function uploadOne(ctx: UploadContext, spec: CompiledSpec, name: string): Promise<UploadOutcome> {
  const done = (state: UploadState, pipeline?: KfpPipeline, version?: KfpPipelineVersion): UploadOutcome => ({
    state,
    pipelineName: name,
    pipelineId: pipeline?.pipeline_id ?? version?.pipeline_id,
    versionId: version?.pipeline_version_id,
    versionName: version?.name ?? version?.display_name,
    url: linkTo(ctx, pipeline?.pipeline_id ?? version?.pipeline_id, version?.pipeline_version_id),
  });
  const fingerprint = spec.fingerprint;
  const file = { name: `${name}.yaml`, text: spec.yaml };
  const description = ctx.describe(spec);
  // Another pipeline's read met a login page or a refused identity: write nothing more.
  const write = async <T>(what: string, route: string, query: Record<string, string | undefined>): Promise<T> => {
    if (ctx.halt?.error) throw new KfpError(`${what}: not sent, the run stopped writing after: ${ctx.halt.error.message}`);
    try {
      return await ctx.api.write<T>(what, route, query, file);
    } catch (error) {
      throw withIdentityAdvice(ctx, error);
    }
  };

  let plan = await planUpload(ctx, name, fingerprint);
  const planned = plan;
  // A pipeline without versions is as good as new: nothing to compare with.
  const changes = plan.kind === "unchanged" ? [] : changesOf(name, spec.documents, plan.kind === "version" ? plan.newest[0] : undefined);
  if (ctx.dryRun) {
    if (plan.kind === "unchanged") return { ...done("unchanged", plan.pipeline, plan.version), state: undefined, plan: "unchanged", changes };
    const pipelineId = plan.kind === "version" ? plan.pipeline.pipeline_id : undefined;
    return { pipelineName: name, pipelineId, url: linkTo(ctx, pipelineId), plan: plan.kind, changes };
  }

  if (plan.kind === "create") {
    const what = `create pipeline ${name}`;
    const query = { name, display_name: name, description: fitDescription(spec.description, description, ctx.warn), namespace: ctx.namespace, tags: tagsOf(ctx) };
    const result = await writeChecked(
      async () => ({ created: mustCarry(what, await write<KfpPipeline>(what, "/pipelines/upload", query), "pipeline_id", "a created pipeline", false) }),
      // 409: another sync created it first. Lost answer: ours may have arrived. Either way it may exist now.
      async (error, sent) => {
        const existing = await findPipeline(ctx, name);
        return existing && { existing, ours: error.answerLost || sent > 1 };
      },
    );
    if ("created" in result) return { ...done("created", result.created, (await newestVersions(ctx, result.created).catch(() => []))[0]), changes };
    const newest = await newestVersions(ctx, result.existing);
    const same = newest.find((v) => sameSpec(v, fingerprint));
    if (same) return done(result.ours ? "created" : "unchanged", result.existing, same);
    plan = { kind: "version", pipeline: result.existing, newest };
  }
  if (plan.kind === "unchanged") return { ...done("unchanged", plan.pipeline, plan.version), changes: [] };

  const pipeline = plan.pipeline;
  // Raced into "version" by a create that lost (409): the diff is against what the other sync made.
  const versionChanges = plan === planned ? changes : changesOf(name, spec.documents, plan.newest[0]);
  await outlastNewest(ctx, plan.newest);
  // The KFP UI shows a version's description: it says why the version exists (issue 17).
  const query = { pipelineid: pipeline.pipeline_id, name: ctx.versionTag, display_name: ctx.versionTag, description: fitDescription(changesDescription(versionChanges), description, ctx.warn), tags: tagsOf(ctx) };
  const what = `add version ${ctx.versionTag} to ${name}`;
  const result = await writeChecked(
    async () => ({ version: mustCarry(what, await write<KfpPipelineVersion>(what, "/pipelines/upload_version", query), "pipeline_version_id", "a created version", false) }),
    async (error, sent) => {
      // Ours arrived (lost answer, or a late first send) or a concurrent sync uploaded the same spec first.
      const settled = (await newestVersions(ctx, pipeline)).find((v) => sameSpec(v, fingerprint));
      if (settled) return { settled, ours: settled.name === ctx.versionTag && (error.answerLost || sent > 1) };
      if (error.status === 409) {
        throw new KfpError(`${what}: a different version named ${ctx.versionTag} already exists (another sync with the same tag?); nothing was overwritten — rerun, or pass another --version-tag`, 409);
      }
      return undefined;
    },
  );
  if ("version" in result) return { ...done("versioned", pipeline, result.version), changes: versionChanges };
  return { ...done(result.ours ? "versioned" : "unchanged", pipeline, result.settled), changes: result.ours ? versionChanges : [] };
}

/**
 * Send a write at most twice. When it conflicts (409) or its answer is lost, `settle` reads what
 * the server now holds: a result ends it; nothing found after a lost answer sends it once more.
 */
async function writeChecked<T, S>(send: () => Promise<T>, settle: (error: KfpError, sent: number) => Promise<S | undefined>): Promise<T | S> {
  for (let sent = 1; ; sent++) {
    try {
      return await send();
    } catch (error) {
      if (!(error instanceof KfpError) || !(error.status === 409 || error.answerLost)) throw error;
      const settled = await settle(error, sent);
      if (settled !== undefined) return settled;
      if (error.status === 409 || sent >= 2) throw error;
    }
  }
}

export interface ServerInfo {
  version?: string;
  multiUser?: boolean;
}

/** healthz: who is on the other end, and whether it needs a namespace. */
export async function preflight(api: KfpApi, namespace: string | undefined, shared = false): Promise<ServerInfo> {
  const what = "reach the KFP API (healthz)";
  let health: KfpHealth;
  try {
    health = await api.read<KfpHealth>(what, "/healthz");
  } catch (error) {
    // A login page or the UI's web page before anything is written: a setup mistake (exit 2).
    if (error instanceof KfpError && error.notKfp) throw new UsageError(error.message, { cause: error });
    throw error;
  }
  // ml-pipeline's healthz always carries both (json.Marshal of a struct without omitempty).
  if (typeof health.multi_user !== "boolean" || !("tag_name" in health)) {
    throw new UsageError(`${what}: the server answered ${JSON.stringify(health).slice(0, 120)}, which is not ml-pipeline's healthz: --host/KFP_HOST most likely points at the KFP UI or a proxy; point it at the API server, e.g. ${DEFAULT_HOST}`);
  }
  const info = { version: health.tag_name || undefined, multiUser: health.multi_user === true };
  if (info.multiUser && !namespace && !shared) {
    throw new UsageError(
      "the KFP server runs in multi-user mode: choose where the pipelines go — --namespace/KFP_NAMESPACE for your profile's namespace, or --shared/KFP_SHARED for shared pipelines every namespace can see",
    );
  }
  return info;
}

/** Is version a older than b? Compares the numeric parts; unknown versions never warn. */
export function olderThan(a: string | undefined, b: string | undefined): boolean {
  const parse = (v?: string) => /(\d+)\.(\d+)\.(\d+)/.exec(v ?? "")?.slice(1).map(Number);
  const x = parse(a);
  const y = parse(b);
  if (!x || !y) return false;
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i]! < y[i]!;
  return false;
}

/**
 * The skew worth a warning: a server a minor release (or more) behind the SDK. Patch releases of
 * one minor share the IR, so a 2.17.0 server takes what the 2.17.3 SDK compiles.
 */
export function skewWarning(server: string | undefined, sdk: string | undefined): string | undefined {
  const minorOf = (v?: string) => /(\d+)\.(\d+)/.exec(v ?? "")?.slice(1, 3).join(".");
  const s = minorOf(server);
  const k = minorOf(sdk);
  if (!s || !k || !olderThan(`${s}.0`, `${k}.0`)) return undefined;
  return `the server (${server}) is a minor release behind the kfp SDK that compiled (${sdk}): it may refuse the compiled spec or ignore what it does not know (newer IR fields, kfp-kubernetes options), and runs may then fail or miss settings (kubeflow/pipelines#8682); pin kfp ${s}.* in requirements.txt or upgrade the server`;
}

/** Upload every compiled spec, a few at a time; one pipeline's failure never stops the others. */
export async function uploadAll(
  ctx: UploadContext,
  specs: { spec: CompiledSpec; name: string }[],
  concurrency: number,
  onOutcome: (spec: CompiledSpec, outcome: UploadOutcome, ms: number) => void,
  stopped: () => boolean,
): Promise<void> {
  const queue = [...specs];
  ctx.halt ??= {};
  const halt = ctx.halt;
  const worker = async () => {
    for (let item = queue.shift(); item; item = queue.shift()) {
      const started = performance.now();
      let outcome: UploadOutcome;
      const localProblem = checkUploadable(item.name, item.spec.yaml);
      if (stopped()) {
        outcome = { state: "failed", pipelineName: item.name, problem: { stage: "upload", file: item.spec.file.path, message: "not uploaded: the run was interrupted" } };
      } else if (halt.error) {
        outcome = { state: "failed", pipelineName: item.name, problem: { stage: "upload", file: item.spec.file.path, message: `not uploaded: ${halt.error.message}` } };
      } else if (localProblem) {
        outcome = { state: "failed", pipelineName: item.name, problem: { stage: "upload", file: item.spec.file.path, message: localProblem } };
      } else {
        try {
          outcome = await uploadOne(ctx, item.spec, item.name);
        } catch (error) {
          // The first answer that rules out every later write stops them (one message, not one per pipeline).
          if (error instanceof KfpError && (error.notKfp || error.onRead)) halt.error ??= error;
          const message = error instanceof Error ? error.message : String(error);
          outcome = { state: "failed", pipelineName: item.name, problem: { stage: "upload", file: item.spec.file.path, message } };
        }
      }
      onOutcome(item.spec, outcome, performance.now() - started);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, specs.length)) }, worker));
}

/** Uploads in flight at once: the server validates each spec, so more only queue there. */
const UPLOAD_CONCURRENCY = 4;

/** One pipeline's upload outcome, by the file it came from; `ms` when a request was made for it. */
export interface UploadRecord {
  file: PipelineFile;
  outcome: UploadOutcome;
  ms?: number;
}

export interface UploadRun {
  server?: Summary["server"];
  uploads: UploadRecord[];
  /** The KFP client, for the stages after this one (one client per peer). */
  api?: KfpApi;
}

/** The log's words for a machine value of `plan`. */
const PLAN_WORDS: Record<UploadPlan["kind"], string> = { create: "would create", version: "would add version", unchanged: "unchanged" };

/** The description's kfp-sync line: where the spec came from, and the fingerprint "unchanged" compares. */
function describeFor(cfg: Pick<Config, "commit" | "runUrl">): (spec: CompiledSpec) => string {
  return (spec) =>
    [`Synced by kfp-sync from ${spec.file.path}`, cfg.commit && `commit ${cfg.commit}`, cfg.runUrl && `run ${cfg.runUrl}`, `kfp-sync spec sha256:${spec.fingerprint}`].filter(Boolean).join(" · ");
}

/** Only servers from 2.17 on know the `tags` parameter; an older one would refuse the upload. */
function tagsFor(cfg: Pick<Config, "commit">, server: ServerInfo): Record<string, string> | undefined {
  if (!server.version || olderThan(server.version, "2.17.0")) return undefined;
  return { "synced-by": "kfp-sync", ...(cfg.commit ? { commit: cfg.commit } : {}) };
}

/** The pipeline's name: the IR's, or the file's; with several pipelines from one file, the file's name alone would name them all alike. */
function pipelineNameOf(spec: CompiledSpec, nameFrom: Config["nameFrom"]): string {
  if (nameFrom === "ir") return spec.irName;
  const f = spec.file;
  return nameFromFile(f.oneOfSeveral ? `${f.path.replace(/\.py$/, "")}-${f.functionName}` : f.path);
}

/** Two files with one pipeline name would take turns versioning it: both are refused, each naming the other. */
function nameClashes(named: { spec: CompiledSpec; name: string }[]): UploadRecord[] {
  const byName = Map.groupBy(named, (n) => n.name);
  return named
    .filter((n) => byName.get(n.name)!.length > 1)
    .map(({ spec, name }) => {
      const others = byName.get(name)!.filter((o) => o.spec !== spec).map((o) => reportKey(o.spec.file));
      const message = `pipeline name "${shown(name)}" is also the name of ${others.map(shown).join(", ")}: give each pipeline its own name (@dsl.pipeline(name=...))`;
      return { file: spec.file, outcome: { state: "failed", pipelineName: name, problem: { stage: "upload", file: spec.file.path, message } } };
    });
}

/** Stage 3: check the server, name the pipelines, upload each (or, in a dry run, plan it). */
async function uploadStage(compiled: CompileRun, cfg: Config, run: RunContext): Promise<UploadRun> {
  const log = run.log;
  const specs = compiled.results.filter((r): r is Extract<CompileResult, { ok: true }> => r.ok);
  if (!cfg.host) {
    if (specs.length > 0) log.info("dry run without --host/KFP_HOST: nothing was compared with a server");
    return { uploads: [] };
  }
  const failAll = (message: string): UploadRecord[] =>
    specs.map((spec) => ({ file: spec.file, outcome: { state: "failed", pipelineName: spec.irName, problem: { stage: "upload", file: spec.file.path, message } } }));
  if (specs.length === 0) return { uploads: [] };
  if (run.stopped) return { uploads: failAll("not uploaded: the run was interrupted") };
  const api = kfpClient(cfg, log, run.abort.signal);
  const server: NonNullable<Summary["server"]> = { host: cfg.host };
  try {
    Object.assign(server, await preflight(api, cfg.namespace, cfg.shared));
  } catch (error) {
    if (error instanceof UsageError) throw error;
    // The server is unreachable or refuses us: every pipeline fails the same way, say it once.
    log.error((error as Error).message);
    return { server, uploads: failAll((error as Error).message) };
  }
  const auth = cfg.auth.kind === "none" ? "no credentials" : `${cfg.auth.kind} from ${cfg.auth.source}`;
  log.info(`KFP server ${cfg.host}: version ${server.version ?? "unknown"}, ${server.multiUser ? `multi-user (${cfg.shared ? "shared pipelines" : `namespace ${cfg.namespace}`})` : "single-user"}, ${auth}`);
  const skew = skewWarning(server.version, compiled.kfp?.sdk);
  if (skew) log.warn(skew);
  const warned = new Set<string>();
  const ctx: UploadContext = {
    api,
    namespace: cfg.namespace,
    shared: cfg.shared,
    multiUser: server.multiUser,
    authKind: cfg.auth.kind,
    warn: (message) => {
      if (!warned.has(message)) log.warn(message);
      warned.add(message);
    },
    halt: {},
    versionTag: cfg.versionTag,
    force: cfg.force,
    dryRun: cfg.dryRun,
    uiUrl: cfg.uiUrl ?? cfg.host,
    tags: tagsFor(cfg, server),
    describe: describeFor(cfg),
  };
  const named = specs.map((spec) => ({ spec, name: pipelineNameOf(spec, cfg.nameFrom) }));
  const uploads = nameClashes(named);
  for (const { file, outcome } of uploads) log.error(`${shown(file.path)}: ${outcome.problem!.message}`);
  const clashing = new Set(uploads.map((u) => u.file));
  const record = (spec: CompiledSpec, outcome: UploadOutcome, ms: number) => {
    uploads.push({ file: spec.file, outcome, ms });
    const { pipelineName: name, state, plan, versionName, problem, changes } = outcome;
    if (problem) log.error(`${shown(name)}: ${problem.message}`);
    else log.success(`${shown(name)}: ${plan ? PLAN_WORDS[plan] : state}${versionName ? ` (${versionName})` : ""}`);
    for (const change of problem ? [] : (changes ?? [])) log.log(`  ${shown(change.text)}`);
  };
  await uploadAll(ctx, named.filter((n) => !clashing.has(n.spec.file)), UPLOAD_CONCURRENCY, record, () => run.stopped);
  // A read answered by a login page or a web page: a setup mistake found before writing (exit 2).
  if (ctx.halt?.error?.notKfp && ctx.halt.error.onRead) throw new UsageError(ctx.halt.error.message, { cause: ctx.halt.error });
  return { server, uploads, api };
}

// ─── 3b. Schedules ───────────────────────────────────────────────────────────────────────────────

// Recurring runs and experiments declared in kfp-sync.yaml (issue 18). KFP has no update for a
// recurring run (kubeflow/pipelines#3789), so a changed one is replaced: create the new one
// disabled, disable the old, enable the new, delete the old. Ownership is a marker in the
// description; runs without it are never touched.

export const SCHEDULE_FILE = "kfp-sync.yaml";
const SCHEDULE_MARK = /kfp-sync schedule (\S+) sha256:([0-9a-f]{64})/;
const SCHEDULE_KEYS = new Set(["pipeline", "name", "experiment", "cron", "every", "parameters", "version", "max_concurrency", "catchup", "enabled"]);
// api/v2beta1 recurring_run.proto validation (contract create-recurring-run-max-concurrency-11).
const MAX_CONCURRENCY = 10;

/** One schedule as declared in kfp-sync.yaml, checked. */
export interface ScheduleEntry {
  pipeline: string;
  name: string;
  experiment: string;
  cron?: string;
  everySeconds?: number;
  parameters: Record<string, unknown>;
  version: "latest" | "pinned";
  maxConcurrency: number;
  catchup: boolean;
  enabled: boolean;
  /** `kfp-sync.yaml:LINE`, for messages and the description. */
  where: string;
}

export type ScheduleState = "created" | "replaced" | "unchanged" | "orphaned" | "deleted" | "skipped" | "failed";

/** What the schedules stage decided (dry run) or did for one declared schedule or one owned run. */
export interface ScheduleOutcome {
  pipeline: string;
  name: string;
  /** `kfp-sync.yaml:LINE` of the entry; absent for an orphaned run. */
  where?: string;
  /** Absent in a dry run that would change it, and without a host (only checked). */
  state?: ScheduleState;
  /** In a dry run with a host; the English is in SCHEDULE_PLAN_WORDS, for the log. */
  plan?: "create" | "replace" | "unchanged" | "orphaned" | "delete";
  recurringRunId?: string;
  experimentId?: string;
  /** After a failed replace: what the old and the new recurring run were left as. */
  leftAs?: { old?: string; new?: string };
  /** Why it was skipped or left, for people. */
  message?: string;
  error?: Problem;
}

/** The log's words for a machine value of a schedule's `plan`, as PLAN_WORDS for pipelines. */
const SCHEDULE_PLAN_WORDS: Record<NonNullable<ScheduleOutcome["plan"]>, string> = { create: "would create", replace: "would replace", unchanged: "unchanged", orphaned: "orphaned", delete: "would delete" };

/** A 5-field cron as a person means it, and what KFP's controller reads instead. */
const CRON_FIELDS = [
  { name: "second", min: 0, max: 59 },
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day-of-month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"] },
  { name: "day-of-week", min: 0, max: 6, names: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] },
];

/**
 * Whether KFP runs this cron as written. Its scheduled-workflow controller parses with robfig/cron
 * v1 `cron.Parse` (backend/src/crd/controller/scheduledworkflow/util/cron_schedule.go): the SECOND
 * comes first and day-of-week is optional. So the API accepts "0 2 * * *", and the controller runs
 * it at second 0 of minute 2 of every hour, not at 02:00. Only six fields are taken.
 */
export function cronProblem(cron: string): string | undefined {
  const fields = cron.trim().split(/\s+/).filter(Boolean);
  if (cron.trim().startsWith("@")) return `cron "${cron}": write six fields (second minute hour day-of-month month day-of-week), or use every: for an interval`;
  if (fields.length === 5) {
    const read = fields.map((f, i) => `${CRON_FIELDS[i]!.name} ${f}`).join(", ");
    return `cron "${cron}" has 5 fields, and KFP reads cron with seconds first (robfig/cron v1): it would run at ${read}, any day-of-week — not the crontab meaning. For minute ${fields[0]} of hour ${fields[1]} write "0 ${cron}" (second minute hour day-of-month month day-of-week)`;
  }
  if (fields.length !== 6) return `cron "${cron}" has ${fields.length} field${fields.length === 1 ? "" : "s"}; KFP takes six: second minute hour day-of-month month day-of-week, e.g. "0 0 2 * * *" for 02:00 every day`;
  for (let i = 0; i < 6; i++) {
    const spec = CRON_FIELDS[i]!;
    const value = (text: string) => {
      const at = spec.names?.indexOf(text.toLowerCase()) ?? -1;
      const n = at >= 0 ? at + (spec.name === "month" ? 1 : 0) : /^\d+$/.test(text) ? Number(text) : NaN;
      return n >= spec.min && n <= spec.max ? n : undefined;
    };
    for (const part of fields[i]!.split(",")) {
      const m = /^(\*|\?|[A-Za-z0-9]+)(?:-([A-Za-z0-9]+))?(?:\/(\d+))?$/.exec(part);
      const bad = !m || (m[1] !== "*" && m[1] !== "?" && value(m[1]!) === undefined) || (m[2] !== undefined && (value(m[2]) === undefined || (m[1] === "*" || m[1] === "?"))) || (m[3] !== undefined && Number(m[3]) < 1);
      if (bad) return `cron "${cron}": ${spec.name} "${part}" is not a value, range or step within ${spec.min}–${spec.max}${spec.names ? ` (or ${spec.names[0]}–${spec.names.at(-1)})` : ""}`;
    }
  }
  return undefined;
}

/** `every: 6h`, `90m`, `1d12h`, `30s` → seconds. */
export function everySeconds(text: string): number | undefined {
  const m = /^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(text.trim());
  if (!m || text.trim() === "") return undefined;
  const seconds = Number(m[1] ?? 0) * 86400 + Number(m[2] ?? 0) * 3600 + Number(m[3] ?? 0) * 60 + Number(m[4] ?? 0);
  return seconds > 0 ? seconds : undefined;
}

export interface ScheduleFile {
  /** As the user sees it (relative to the working directory when inside it). */
  path: string;
  entries: ScheduleEntry[];
  /** Entries refused as written, each with its line. */
  refused: ScheduleOutcome[];
}

/** Read and check kfp-sync.yaml as far as it can be checked without the compiled pipelines. */
export function readScheduleFile(file: string, cwd: string): ScheduleFile {
  const shownPath = path.relative(cwd, file).startsWith("..") ? file : path.relative(cwd, file);
  const lines = new YAML.LineCounter();
  const doc = YAML.parseDocument(fs.readFileSync(file, "utf8"), { lineCounter: lines, uniqueKeys: true });
  const at = (node: unknown) => `${shownPath}:${lines.linePos((node as { range?: [number] })?.range?.[0] ?? 0).line}`;
  const fileWide = (message: string): ScheduleFile => ({ path: shownPath, entries: [], refused: [{ pipeline: "", name: "", where: at(doc.contents), state: "failed", error: { stage: "schedule", file: shownPath, message } }] });
  if (doc.errors.length > 0) return fileWide(`not valid YAML: ${doc.errors[0]!.message.split("\n")[0]}`);
  const schedules = YAML.isMap(doc.contents) ? doc.contents.get("schedules", true) : undefined;
  if (schedules === undefined || schedules === null || (YAML.isScalar(schedules) && schedules.value === null)) {
    return YAML.isMap(doc.contents) || doc.contents === null ? { path: shownPath, entries: [], refused: [] } : fileWide("expected a mapping with a schedules: list");
  }
  if (!YAML.isSeq(schedules)) return fileWide("schedules: must be a list of schedules");
  const entries: ScheduleEntry[] = [];
  const refused: ScheduleOutcome[] = [];
  const seen = new Map<string, string>();
  for (const item of schedules.items) {
    const where = at(item);
    const raw = (YAML.isMap(item) ? item.toJSON() : undefined) as Record<string, unknown> | undefined;
    const pipeline = typeof raw?.pipeline === "string" ? raw.pipeline : "";
    const name = typeof raw?.name === "string" ? raw.name : "";
    const refuse = (message: string) => {
      refused.push({ pipeline, name, where, state: "failed", error: { stage: "schedule", file: shownPath, line: Number(where.split(":").at(-1)), message: `${where}: ${message}` } });
    };
    if (!raw) {
      refuse("each schedule is a mapping (pipeline:, name:, cron: or every:, …)");
      continue;
    }
    const unknown = Object.keys(raw).filter((k) => !SCHEDULE_KEYS.has(k));
    if (unknown.length > 0) {
      refuse(`unknown key${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}: a schedule takes ${[...SCHEDULE_KEYS].join(", ")}`);
      continue;
    }
    if (!pipeline) {
      refuse("pipeline: is required: the pipeline's name as in the summary");
      continue;
    }
    if (!name || name.trim() !== name) {
      refuse("name: is required (a text without leading or trailing spaces): it becomes the recurring run's display name");
      continue;
    }
    const key = `${pipeline}/${name}`;
    if (seen.has(key)) {
      refuse(`a second schedule named "${name}" for pipeline ${pipeline} (the first is at ${seen.get(key)}): names are unique per pipeline`);
      continue;
    }
    seen.set(key, where);
    if ((raw.cron === undefined) === (raw.every === undefined)) {
      refuse(raw.cron === undefined ? "give cron: or every: (when it runs)" : "give cron: or every:, not both");
      continue;
    }
    if (raw.cron !== undefined && typeof raw.cron !== "string") {
      refuse(`cron: must be a quoted text such as "0 0 2 * * *"`);
      continue;
    }
    const cronIssue = typeof raw.cron === "string" ? cronProblem(raw.cron) : undefined;
    if (cronIssue) {
      refuse(cronIssue);
      continue;
    }
    const every = raw.every === undefined ? undefined : everySeconds(String(raw.every));
    if (raw.every !== undefined && every === undefined) {
      refuse(`every: "${String(raw.every)}" is not an interval such as 30m, 6h or 1d`);
      continue;
    }
    const version = raw.version ?? "latest";
    if (version !== "latest" && version !== "pinned") {
      refuse(`version: takes latest (always the newest version) or pinned (the version of this run), got ${JSON.stringify(version)}`);
      continue;
    }
    const maxConcurrency = raw.max_concurrency ?? 1;
    if (typeof maxConcurrency !== "number" || !Number.isInteger(maxConcurrency) || maxConcurrency < 1 || maxConcurrency > MAX_CONCURRENCY) {
      refuse(`max_concurrency: must be a whole number from 1 to ${MAX_CONCURRENCY} (the server's range), got ${JSON.stringify(maxConcurrency)}`);
      continue;
    }
    const flag = (key: string, fallback: boolean) => (raw[key] === undefined ? fallback : raw[key]);
    const catchup = flag("catchup", false);
    const enabled = flag("enabled", true);
    if (typeof catchup !== "boolean" || typeof enabled !== "boolean") {
      refuse(`${typeof catchup !== "boolean" ? "catchup" : "enabled"}: must be true or false`);
      continue;
    }
    const parameters = raw.parameters ?? {};
    if (typeof parameters !== "object" || Array.isArray(parameters) || parameters === null) {
      refuse("parameters: must be a mapping of parameter name to value");
      continue;
    }
    const experiment = raw.experiment ?? "Default";
    if (typeof experiment !== "string" || experiment.trim() === "") {
      refuse("experiment: must be a name");
      continue;
    }
    entries.push({ pipeline, name, experiment, cron: raw.cron as string | undefined, everySeconds: every, parameters: parameters as Record<string, unknown>, version, maxConcurrency, catchup, enabled, where });
  }
  return { path: shownPath, entries, refused };
}

/** The pipeline's own inputs, from the compiled IR, for checking a schedule's parameters. */
interface PipelineInput {
  type: string;
  required: boolean;
}

export function pipelineInputs(pipelineSpec: unknown): Map<string, PipelineInput> {
  const ir = pipelineSpec as { root?: { inputDefinitions?: { parameters?: Record<string, { parameterType?: string; isOptional?: boolean; defaultValue?: unknown }> } } } | undefined;
  const inputs = new Map<string, PipelineInput>();
  for (const [name, p] of Object.entries(ir?.root?.inputDefinitions?.parameters ?? {})) {
    inputs.set(name, { type: p.parameterType ?? "STRING", required: !p.isOptional && p.defaultValue === undefined });
  }
  return inputs;
}

const PARAMETER_TYPES: Record<string, [string, (v: unknown) => boolean]> = {
  STRING: ["a text", (v) => typeof v === "string"],
  NUMBER_INTEGER: ["a whole number", (v) => typeof v === "number" && Number.isInteger(v)],
  NUMBER_DOUBLE: ["a number", (v) => typeof v === "number"],
  BOOLEAN: ["true or false", (v) => typeof v === "boolean"],
  LIST: ["a list", (v) => Array.isArray(v)],
  STRUCT: ["a mapping", (v) => typeof v === "object" && v !== null && !Array.isArray(v)],
};

/** What is wrong with a schedule's parameters for this pipeline, or undefined. */
export function parameterProblem(entry: ScheduleEntry, inputs: Map<string, PipelineInput>): string | undefined {
  for (const [name, value] of Object.entries(entry.parameters)) {
    const input = inputs.get(name);
    if (!input) return `parameter ${name} is not an input of pipeline ${entry.pipeline} (its inputs: ${[...inputs.keys()].join(", ") || "none"})`;
    const [what, fits] = PARAMETER_TYPES[input.type] ?? ["", () => true];
    if (!fits(value)) return `parameter ${name} of pipeline ${entry.pipeline} is ${input.type}: give ${what}, not ${JSON.stringify(value)}`;
  }
  const missing = [...inputs].filter(([name, input]) => input.required && !(name in entry.parameters)).map(([name]) => name);
  if (missing.length > 0) return `pipeline ${entry.pipeline} needs parameter${missing.length > 1 ? "s" : ""} ${missing.join(", ")} (no default): add ${missing.length > 1 ? "them" : "it"} under parameters:`;
  return undefined;
}

function sortedJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(sortedJson).join(",")}]`;
  if (value && typeof value === "object") return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${sortedJson((value as Record<string, unknown>)[k])}`).join(",")}}`;
  return JSON.stringify(value);
}

/** The hash of the declared form: what "unchanged" compares (a pinned run's version is compared on its own). */
export function scheduleHash(entry: ScheduleEntry): string {
  const { where: _where, ...declared } = entry;
  return createHash("sha256").update(sortedJson(declared)).digest("hex");
}

function scheduleKey(pipeline: string, name: string): string {
  return `${pipeline}/${encodeURIComponent(name)}`;
}

export interface KfpExperiment {
  experiment_id: string;
  display_name?: string;
  namespace?: string;
  storage_state?: string;
}

export interface KfpRecurringRun {
  recurring_run_id: string;
  display_name?: string;
  description?: string;
  pipeline_version_reference?: { pipeline_id?: string; pipeline_version_id?: string };
  status?: string;
  mode?: string;
  experiment_id?: string;
  namespace?: string;
}

/** What the schedules stage knows of each pipeline of this run. */
export interface ScheduledPipeline {
  pipelineId?: string;
  versionId?: string;
  /** The compiled pipeline spec (parsed IR): its inputs are what a schedule's parameters must fit. */
  spec: unknown;
  /** Why its schedules are left as they are (it failed in this run). */
  failed?: string;
}

export interface ScheduleContext {
  api?: KfpApi;
  namespace?: string;
  multiUser?: boolean;
  dryRun: boolean;
  prune: boolean;
  uiUrl?: string;
  /** Set by writeChecked's settle reads to tell our own create apart. */
  nonce: () => string;
  log: { info(msg: string): void; warn(msg: string): void };
}

type SchedulePlan =
  | { kind: "create"; experiment?: KfpExperiment }
  | { kind: "unchanged"; experiment?: KfpExperiment; run: KfpRecurringRun }
  | { kind: "replace"; experiment?: KfpExperiment; run: KfpRecurringRun };

async function ownedRecurringRuns(ctx: ScheduleContext): Promise<KfpRecurringRun[]> {
  const what = "list recurring runs";
  const owned: KfpRecurringRun[] = [];
  let pageToken: string | undefined;
  for (;;) {
    // Multi-user servers list only by namespace or experiment (contract mu-list-recurring-runs-no-namespace).
    const page = await ctx.api!.read<{ recurringRuns?: KfpRecurringRun[]; next_page_token?: string }>(what, "/recurringruns", { namespace: ctx.multiUser ? ctx.namespace : undefined, page_size: "100", page_token: pageToken });
    for (const run of page.recurringRuns ?? []) {
      mustCarry(what, run, "recurring_run_id", "a recurring run");
      if (SCHEDULE_MARK.test(run.description ?? "")) owned.push(run);
    }
    if (!page.next_page_token) return owned;
    pageToken = page.next_page_token;
  }
}

async function findExperiment(ctx: ScheduleContext, name: string): Promise<KfpExperiment | undefined> {
  const filter = JSON.stringify({ predicates: [{ key: "display_name", operation: "EQUALS", string_value: name }] });
  const page = await ctx.api!.read<{ experiments?: KfpExperiment[] }>(`look up experiment ${name}`, "/experiments", { filter, namespace: ctx.namespace, page_size: "10" });
  const found = (page.experiments ?? []).find((e) => e.display_name === name);
  return found && mustCarry(`look up experiment ${name}`, found, "experiment_id", "an experiment");
}

/** The experiment, created when missing and unarchived when archived. */
async function ensureExperiment(ctx: ScheduleContext, name: string, known?: KfpExperiment): Promise<KfpExperiment> {
  let experiment = known;
  if (!experiment) {
    const what = `create experiment ${name}`;
    experiment = await writeChecked(
      async () => mustCarry(what, await ctx.api!.send<KfpExperiment>(what, "POST", "/experiments", { display_name: name, ...(ctx.namespace ? { namespace: ctx.namespace } : {}) }), "experiment_id", "a created experiment", false),
      () => findExperiment(ctx, name), // 409: another sync made it; a lost answer: ours may have
    );
    ctx.log.info(`experiment ${shown(name)}: created`);
  }
  if (experiment.storage_state === "ARCHIVED") {
    const what = `unarchive experiment ${name}`;
    const id = encodeURIComponent(experiment.experiment_id);
    await writeChecked(
      () => ctx.api!.send(what, "POST", `/experiments/${id}:unarchive`),
      async () => ((await ctx.api!.read<KfpExperiment>(what, `/experiments/${id}`)).storage_state === "AVAILABLE" ? {} : undefined),
    );
    ctx.log.info(`experiment ${shown(name)}: unarchived`);
  }
  return experiment;
}

/** Is this owned run the declared schedule, as the pipeline now stands? */
function isCurrent(run: KfpRecurringRun, entry: ScheduleEntry, pipeline: ScheduledPipeline): boolean {
  if (SCHEDULE_MARK.exec(run.description ?? "")?.[2] !== scheduleHash(entry)) return false;
  const reference = run.pipeline_version_reference ?? {};
  if (reference.pipeline_id !== pipeline.pipelineId) return false;
  // pinned: the version of this run; latest: no version, so a new version needs no change.
  if (entry.version === "pinned" ? reference.pipeline_version_id !== pipeline.versionId : !!reference.pipeline_version_id) return false;
  return (run.status === "ENABLED") === entry.enabled;
}

function recurringRunBody(ctx: ScheduleContext, entry: ScheduleEntry, pipeline: ScheduledPipeline, experimentId: string, nonce: string, mode?: "ENABLE"): Record<string, unknown> {
  return {
    display_name: entry.name,
    description: `Scheduled by kfp-sync from ${entry.where} · kfp-sync schedule ${scheduleKey(entry.pipeline, entry.name)} sha256:${scheduleHash(entry)} · ${nonce}`,
    pipeline_version_reference: { pipeline_id: pipeline.pipelineId, ...(entry.version === "pinned" ? { pipeline_version_id: pipeline.versionId } : {}) },
    runtime_config: { parameters: entry.parameters },
    // int64 travels as a JSON string (contract create-recurring-run-cron6).
    max_concurrency: String(entry.maxConcurrency),
    no_catchup: !entry.catchup,
    trigger: entry.cron ? { cron_schedule: { cron: entry.cron } } : { periodic_schedule: { interval_second: String(entry.everySeconds) } },
    experiment_id: experimentId,
    ...(ctx.namespace ? { namespace: ctx.namespace } : {}),
    // Without mode the server creates it disabled (contract create-recurring-run-periodic-latest).
    ...(mode ? { mode } : {}),
  };
}

async function createRecurringRun(ctx: ScheduleContext, entry: ScheduleEntry, pipeline: ScheduledPipeline, experimentId: string, mode?: "ENABLE"): Promise<KfpRecurringRun> {
  const what = `create recurring run ${entry.name} of ${entry.pipeline}`;
  const nonce = ctx.nonce();
  return writeChecked(
    async () => mustCarry(what, await ctx.api!.send<KfpRecurringRun>(what, "POST", "/recurringruns", recurringRunBody(ctx, entry, pipeline, experimentId, nonce, mode)), "recurring_run_id", "a created recurring run", false),
    // A lost answer: ours arrived when a run carries this create's nonce.
    async () => (await ownedRecurringRuns(ctx)).find((r) => r.description?.endsWith(` · ${nonce}`)),
  );
}

async function setEnabled(ctx: ScheduleContext, run: KfpRecurringRun, enabled: boolean): Promise<void> {
  const verb = enabled ? "enable" : "disable";
  const what = `${verb} recurring run ${run.display_name ?? ""} (${run.recurring_run_id})`;
  const id = encodeURIComponent(run.recurring_run_id);
  await writeChecked(
    () => ctx.api!.send(what, "POST", `/recurringruns/${id}:${verb}`),
    async () => ((await ctx.api!.read<KfpRecurringRun>(what, `/recurringruns/${id}`)).status === (enabled ? "ENABLED" : "DISABLED") ? {} : undefined),
  );
}

async function deleteRecurringRun(ctx: ScheduleContext, run: KfpRecurringRun): Promise<void> {
  const what = `delete recurring run ${run.display_name ?? ""} (${run.recurring_run_id})`;
  const id = encodeURIComponent(run.recurring_run_id);
  await writeChecked(
    () => ctx.api!.send(what, "DELETE", `/recurringruns/${id}`),
    () =>
      ctx.api!.read(what, `/recurringruns/${id}`).then(
        () => undefined,
        (error: unknown) => {
          if (error instanceof KfpError && error.status === 404 && !error.notKfp) return {};
          throw error;
        },
      ),
  );
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

/**
 * Replace `old` by the declared schedule without a moment with two enabled, or none when the
 * new one cannot be made: a failure at any step leaves the old as it was and removes the new.
 */
async function replaceRecurringRun(ctx: ScheduleContext, entry: ScheduleEntry, pipeline: ScheduledPipeline, experimentId: string, old: KfpRecurringRun): Promise<Pick<ScheduleOutcome, "state" | "recurringRunId" | "leftAs" | "message"> & { failure?: string }> {
  const oldWasEnabled = old.status === "ENABLED";
  const oldState = oldWasEnabled ? "enabled" : "disabled";
  let created: KfpRecurringRun;
  try {
    created = await createRecurringRun(ctx, entry, pipeline, experimentId);
  } catch (error) {
    return { state: "failed", recurringRunId: old.recurring_run_id, leftAs: { old: `${oldState}, unchanged` }, failure: `replace: ${messageOf(error)}; the old recurring run ${old.recurring_run_id} is left as it was` };
  }
  const undo = async (step: string, error: unknown, reenableOld: boolean) => {
    const leftAs: NonNullable<ScheduleOutcome["leftAs"]> = {};
    let oldNote = "";
    if (reenableOld) {
      try {
        await setEnabled(ctx, old, true);
        leftAs.old = "enabled again";
      } catch (again) {
        leftAs.old = "DISABLED";
        oldNote = `; re-enabling the old one failed too (${messageOf(again)}): enable ${old.recurring_run_id} by hand`;
      }
    } else leftAs.old = `${oldState}, unchanged`;
    let newNote = "";
    try {
      await deleteRecurringRun(ctx, created);
      leftAs.new = "removed";
    } catch (again) {
      leftAs.new = `left disabled (${created.recurring_run_id})`;
      newNote = `; removing the new one failed (${messageOf(again)}): it is left disabled, the next sync reports it`;
    }
    return { state: "failed" as const, recurringRunId: old.recurring_run_id, leftAs, failure: `replace: ${step}: ${messageOf(error)}${oldNote}${newNote}` };
  };
  if (oldWasEnabled) {
    try {
      await setEnabled(ctx, old, false);
    } catch (error) {
      return undo("disabling the old recurring run failed", error, false);
    }
  }
  if (entry.enabled) {
    try {
      await setEnabled(ctx, created, true);
    } catch (error) {
      return undo("enabling the new recurring run failed", error, oldWasEnabled);
    }
  }
  try {
    await deleteRecurringRun(ctx, old);
  } catch (error) {
    // Issue 18: whatever step fails, the old one stays as it was and the new one goes. The new one
    // is disabled first, so that the two never run side by side; if even that fails, the new one
    // stays the only enabled one and the report says so.
    if (entry.enabled) {
      try {
        await setEnabled(ctx, created, false);
      } catch (again) {
        return { state: "failed", recurringRunId: created.recurring_run_id, leftAs: { old: `disabled, not deleted (${old.recurring_run_id})`, new: "enabled" }, failure: `replace: deleting the old recurring run failed (${messageOf(error)}), and disabling the new one to go back failed too (${messageOf(again)}): the new one runs as declared, the old one is left disabled and reported as orphaned next time` };
      }
    }
    return undo("deleting the old recurring run failed", error, oldWasEnabled);
  }
  return { state: "replaced", recurringRunId: created.recurring_run_id };
}

/**
 * Stage 3b: check every declared schedule against this run's pipelines, plan with reads only, then
 * create, replace or leave each one; report owned runs no longer declared, delete them only when
 * asked. One schedule's failure never stops the others.
 */
export async function syncSchedules(ctx: ScheduleContext, file: ScheduleFile, pipelines: Map<string, ScheduledPipeline>, uncompiled: string[]): Promise<ScheduleOutcome[]> {
  const outcomes: ScheduleOutcome[] = [...file.refused];
  const fail = (entry: ScheduleEntry, message: string, extra: Partial<ScheduleOutcome> = {}): ScheduleOutcome => ({
    pipeline: entry.pipeline,
    name: entry.name,
    where: entry.where,
    ...extra,
    state: "failed",
    error: { stage: "schedule", file: file.path, line: Number(entry.where.split(":").at(-1)), message: `${entry.where}: ${message}` },
  });
  const ready: ScheduleEntry[] = [];
  for (const entry of file.entries) {
    const pipeline = pipelines.get(entry.pipeline);
    if (!pipeline) {
      const known = [...pipelines.keys()].join(", ") || "none";
      // A file that failed to compile has no name yet: its schedules may be the ones asked for.
      if (uncompiled.length > 0) {
        outcomes.push({ pipeline: entry.pipeline, name: entry.name, where: entry.where, state: "skipped", message: `left as it is: no pipeline named ${entry.pipeline} compiled in this run (pipelines: ${known}); ${uncompiled.join(", ")} failed to compile and may hold it — if not, check the name` });
      } else outcomes.push(fail(entry, `no pipeline named ${entry.pipeline} in this run (pipelines: ${known})`));
      continue;
    }
    const problem = parameterProblem(entry, pipelineInputs(pipeline.spec));
    if (problem) outcomes.push(fail(entry, problem));
    else if (pipeline.failed) outcomes.push({ pipeline: entry.pipeline, name: entry.name, where: entry.where, state: "skipped", message: `left as it is: pipeline ${entry.pipeline} failed in this run (${pipeline.failed})` });
    else ready.push(entry);
  }
  if (!ctx.api) {
    for (const entry of ready) outcomes.push({ pipeline: entry.pipeline, name: entry.name, where: entry.where, message: "checked; not compared with a server (no --host/KFP_HOST)" });
    return outcomes;
  }
  if (ctx.multiUser && !ctx.namespace) {
    for (const entry of ready) outcomes.push(fail(entry, "on a multi-user server recurring runs live in a namespace: use --namespace/KFP_NAMESPACE (not --shared) to sync schedules"));
    return outcomes;
  }

  let owned: KfpRecurringRun[];
  try {
    owned = await ownedRecurringRuns(ctx);
  } catch (error) {
    for (const entry of ready) outcomes.push(fail(entry, messageOf(error)));
    return outcomes;
  }
  const byKey = Map.groupBy(owned, (r) => SCHEDULE_MARK.exec(r.description ?? "")![1]!);
  const experiments = new Map<string, Promise<KfpExperiment | undefined>>();
  const experimentOf = (name: string) => {
    if (!experiments.has(name)) experiments.set(name, findExperiment(ctx, name));
    return experiments.get(name)!;
  };
  // Runs of a declared key beyond the one kept (left by an interrupted replace) are reported as orphans.
  const leftovers: KfpRecurringRun[] = [];

  for (const entry of ready) {
    const pipeline = pipelines.get(entry.pipeline)!;
    const mine = byKey.get(scheduleKey(entry.pipeline, entry.name)) ?? [];
    const current = mine.find((r) => isCurrent(r, entry, pipeline)) ?? mine.find((r) => r.status === "ENABLED") ?? mine[0];
    leftovers.push(...mine.filter((r) => r !== current));
    let plan: SchedulePlan;
    try {
      const experiment = await experimentOf(entry.experiment);
      plan = !current ? { kind: "create", experiment } : isCurrent(current, entry, pipeline) && current.experiment_id === experiment?.experiment_id ? { kind: "unchanged", experiment, run: current } : { kind: "replace", experiment, run: current };
    } catch (error) {
      outcomes.push(fail(entry, messageOf(error)));
      continue;
    }
    const base = { pipeline: entry.pipeline, name: entry.name, where: entry.where, experimentId: plan.experiment?.experiment_id };
    if (plan.kind === "unchanged") {
      const unchanged: ScheduleOutcome = { ...base, state: "unchanged", ...(ctx.dryRun ? { plan: "unchanged" as const } : {}), recurringRunId: plan.run.recurring_run_id };
      // Its experiment was archived since: the declared state includes an experiment in use.
      if (plan.experiment?.storage_state === "ARCHIVED") {
        if (ctx.dryRun) unchanged.message = `experiment ${entry.experiment} is archived: would unarchive it`;
        else {
          try {
            experiments.set(entry.experiment, Promise.resolve({ ...(await ensureExperiment(ctx, entry.experiment, plan.experiment)), storage_state: "AVAILABLE" }));
            unchanged.message = `experiment ${entry.experiment} unarchived`;
          } catch (error) {
            outcomes.push(fail(entry, messageOf(error), base));
            continue;
          }
        }
      }
      outcomes.push(unchanged);
      continue;
    }
    if (ctx.dryRun) {
      outcomes.push({ ...base, plan: plan.kind, recurringRunId: plan.kind === "replace" ? plan.run.recurring_run_id : undefined });
      continue;
    }
    try {
      const experiment = await ensureExperiment(ctx, entry.experiment, plan.experiment);
      experiments.set(entry.experiment, Promise.resolve({ ...experiment, storage_state: "AVAILABLE" }));
      if (plan.kind === "create") {
        const run = await createRecurringRun(ctx, entry, pipeline, experiment.experiment_id, entry.enabled ? "ENABLE" : undefined);
        outcomes.push({ ...base, experimentId: experiment.experiment_id, state: "created", recurringRunId: run.recurring_run_id });
      } else {
        const { failure, ...result } = await replaceRecurringRun(ctx, entry, pipeline, experiment.experiment_id, plan.run);
        outcomes.push(failure ? fail(entry, failure, { ...base, ...result }) : { ...base, experimentId: experiment.experiment_id, ...result });
      }
    } catch (error) {
      outcomes.push(fail(entry, messageOf(error), base));
    }
  }

  // In the file's order, as the user wrote them; orphans after.
  const lineOf = (o: ScheduleOutcome) => Number(o.where?.split(":").at(-1) ?? 0);
  outcomes.sort((a, b) => lineOf(a) - lineOf(b));

  // Owned, and no longer declared (or a leftover): reported; deleted only with --prune-schedules.
  const declared = new Set([...file.entries, ...file.refused].map((e) => scheduleKey(e.pipeline, e.name)));
  const orphans = [...owned.filter((r) => !declared.has(SCHEDULE_MARK.exec(r.description ?? "")![1]!)), ...leftovers];
  for (const run of orphans) {
    const [pipeline = "", encoded = ""] = SCHEDULE_MARK.exec(run.description ?? "")![1]!.split("/");
    const base = { pipeline, name: safeDecode(encoded), recurringRunId: run.recurring_run_id, experimentId: run.experiment_id };
    if (!ctx.prune) {
      outcomes.push({ ...base, state: "orphaned", ...(ctx.dryRun ? { plan: "orphaned" as const } : {}), message: `owned by kfp-sync, no longer in ${file.path} (${run.status?.toLowerCase() ?? "state unknown"}): --prune-schedules deletes it` });
    } else if (ctx.dryRun) {
      outcomes.push({ ...base, plan: "delete", message: `owned by kfp-sync, no longer in ${file.path}` });
    } else {
      try {
        await deleteRecurringRun(ctx, run);
        outcomes.push({ ...base, state: "deleted", message: `no longer in ${file.path}: deleted (--prune-schedules)` });
      } catch (error) {
        outcomes.push({ ...base, state: "failed", error: { stage: "schedule", file: file.path, message: messageOf(error) } });
      }
    }
  }
  return outcomes;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Stage 3b: keep the recurring runs equal to kfp-sync.yaml; nothing without the file. */
async function scheduleStage(found: Discovery, compiled: CompileRun, uploaded: UploadRun, cfg: Config, run: RunContext): Promise<ScheduleOutcome[] | undefined> {
  if (!cfg.scheduleFile) return undefined;
  const log = run.log;
  let file: ScheduleFile;
  try {
    file = readScheduleFile(cfg.scheduleFile, cfg.cwd);
  } catch (error) {
    const where = path.relative(cfg.cwd, cfg.scheduleFile) || cfg.scheduleFile;
    log.error(`${shown(where)}: ${messageOf(error)}`);
    return [{ pipeline: "", name: "", where, state: "failed", error: { stage: "schedule", file: where, message: `${where}: cannot read it: ${messageOf(error)}` } }];
  }
  const outcomes = new Map(uploaded.uploads.map((u) => [reportKey(u.file), u.outcome]));
  const pipelines = new Map<string, ScheduledPipeline>();
  for (const r of compiled.results) {
    if (!r.ok) continue;
    const o = outcomes.get(reportKey(r.file));
    // A version this dry run would add is not the one a pinned schedule points at.
    const versionId = o?.plan === "version" ? undefined : o?.versionId;
    const failed = o?.state === "failed" ? (o.problem?.message ?? "upload failed") : run.stopped ? "the run was interrupted" : undefined;
    pipelines.set(o?.pipelineName ?? r.irName, { pipelineId: o?.pipelineId, versionId, spec: r.documents[0], failed });
  }
  // A file that did not compile may hold the pipeline a schedule names.
  const uncompiled = [...found.problems.map((p) => p.file!), ...compiled.results.filter((r) => !r.ok).map((r) => reportKey(r.file))].map(shown);
  const upOk = uploaded.server !== undefined && [...pipelines.values()].some((p) => !p.failed);
  const ctx: ScheduleContext = {
    api: cfg.host && upOk ? uploaded.api : undefined,
    namespace: cfg.namespace,
    multiUser: uploaded.server?.multiUser,
    dryRun: cfg.dryRun,
    prune: cfg.pruneSchedules,
    uiUrl: cfg.uiUrl,
    nonce: () => `sync ${crypto.randomUUID().slice(0, 8)}`,
    log,
  };
  const results = await syncSchedules(ctx, file, pipelines, uncompiled);
  for (const o of results) {
    const who = o.pipeline ? `schedule ${shown(o.pipeline)}/${shown(o.name)}` : `schedules`;
    if (o.error) log.error(`${who}: ${o.error.message}${o.leftAs ? ` [old: ${o.leftAs.old ?? "-"}, new: ${o.leftAs.new ?? "-"}]` : ""}`);
    else if (o.state === "skipped" || o.state === "orphaned") log.warn(`${who}: ${o.state}: ${o.message}`);
    else log.success(`${who}: ${o.plan ? SCHEDULE_PLAN_WORDS[o.plan] : (o.state ?? o.message)}`);
  }
  return results;
}

// ─── 4. Notify ───────────────────────────────────────────────────────────────────────────────────

/** What ntfy's JSON publish API takes (https://docs.ntfy.sh/publish/#publish-as-json). */
export interface Notification {
  topic: string;
  title: string;
  message: string;
  priority: number;
  tags: string[];
  click?: string;
  actions?: { action: "view"; label: string; url: string }[];
}

/** Split a topic URL into the server root (where JSON is published) and the topic. */
export function ntfyTarget(topicUrl: string): { root: string; topic: string } {
  const url = new URL(topicUrl);
  const parts = url.pathname.split("/").filter(Boolean);
  const topic = parts.pop() ?? "";
  if (!/^[-_A-Za-z0-9]{1,64}$/.test(topic)) {
    // Origin and path only: the query may hold ?auth=.
    throw new UsageError(`--ntfy-url/NTFY_URL must end with a topic name (letters, digits, - and _), got "${url.origin}${url.pathname}"`);
  }
  url.pathname = parts.length > 0 ? `/${parts.join("/")}/` : "/";
  return { root: url.toString(), topic }; // the query stays: ntfy takes ?auth= on every route
}

/** ntfy reads `authorization`, then `auth`, from the query in place of the Authorization header. */
function ntfyAuthParamOf(url: URL): string | undefined {
  return url.searchParams.get("authorization") || url.searchParams.get("auth") || undefined;
}

/** The Authorization value for NTFY_TOKEN: user:password is Basic, even for a user named tk_…; a token is Bearer. */
export function ntfyAuthorization(token: string | undefined): string | undefined {
  if (!token) return undefined;
  return token.includes(":") ? `Basic ${Buffer.from(token).toString("base64")}` : `Bearer ${token}`;
}

/** An Authorization value and the credentials inside it: every form that must never be printed. */
function credentialForms(header: string | undefined): string[] {
  if (!header) return [];
  const credential = header.replace(/^\S+\s+/, "");
  const forms = [header, credential];
  if (/^basic\s/i.test(header)) {
    const userPassword = Buffer.from(credential, "base64").toString("utf8");
    forms.push(userPassword, userPassword.slice(userPassword.indexOf(":") + 1));
  }
  return forms;
}

/**
 * Why ntfy could not read an ?auth= value, or undefined when it can: the whole Authorization
 * value, "Bearer tk_…" or "Basic base64(user:password)", as base64url without padding (ntfy
 * decodes it with Go's base64.RawURLEncoding; padded or standard base64 is a 500 there).
 */
export function unreadableNtfyAuth(value: string): string | undefined {
  if (value.includes("=")) return "it has = padding, which ntfy cannot decode";
  // An unencoded + reaches us (and ntfy) as a space.
  if (/[+/ ]/.test(value)) return "it is standard base64 (with + or /), not URL-safe base64";
  if (!/^[A-Za-z0-9_-]+$/.test(value) || value.length % 4 === 1) return "it is not base64url";
  const header = Buffer.from(value, "base64url").toString("utf8").trim();
  // ntfy matches "Bearer" case-sensitively and hands anything else to Go's BasicAuth, which ignores case.
  if (/^Bearer\s+\S+$/.test(header)) return undefined;
  const basic = /^basic ([A-Za-z0-9+/]+={0,2})$/i.exec(header);
  if (basic && basic[1]!.length % 4 === 0 && Buffer.from(basic[1]!, "base64").toString("utf8").includes(":")) return undefined;
  return 'it does not decode to an Authorization value ("Bearer tk_…" or "Basic " and base64 of user:password)';
}

/**
 * Check NTFY_URL before anything is uploaded; returns the secrets its ?auth= holds. No error
 * repeats the URL's query or credentials.
 */
export function checkNtfyUrl(value: string): string[] {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError("--ntfy-url/NTFY_URL is not a URL: give the topic URL, e.g. https://ntfy.example/ci");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError("--ntfy-url/NTFY_URL must start with http:// or https://");
  if (url.username || url.password) {
    throw new UsageError("--ntfy-url/NTFY_URL must not carry credentials: give a tk_ token or user:password in --ntfy-token/NTFY_TOKEN");
  }
  ntfyTarget(value);
  const auth = ntfyAuthParamOf(url);
  if (auth === undefined) return [];
  const why = unreadableNtfyAuth(auth);
  if (why) {
    throw new UsageError(
      `--ntfy-url/NTFY_URL: ntfy cannot read its auth= parameter (${why}). auth= takes the whole Authorization ` +
        `value, "Bearer tk_…" or "Basic " and base64 of user:password, as base64url without padding: ` +
        `printf '%s' "Bearer $TOKEN" | base64 -w0 | tr '+/' '-_' | tr -d '='. Or leave auth= out and set --ntfy-token/NTFY_TOKEN`,
    );
  }
  return [auth, ...credentialForms(Buffer.from(auth, "base64url").toString("utf8").trim())];
}

/** Keep a list within a budget (UTF-8 bytes, or a test of the whole text), ending with "and N more" when it had to cut. */
export function fitList(items: string[], budget: number | ((text: string) => boolean)): string {
  const fits = typeof budget === "number" ? (text: string) => Buffer.byteLength(text) <= budget : budget;
  const out: string[] = [];
  for (let i = 0; i < items.length; i++) {
    const rest = items.length - i - 1;
    const candidate = [...out, items[i]!].join(", ");
    const more = rest > 0 ? ` and ${rest} more` : "";
    if (!fits(candidate + more)) {
      return out.length > 0 ? `${out.join(", ")} and ${items.length - out.length} more` : `${items.length} pipeline${items.length === 1 ? "" : "s"}`;
    }
    out.push(items[i]!);
  }
  return out.join(", ");
}

export function buildNotification(summary: Summary, topic: string, repository?: string, uiUrl?: string): Notification {
  const c = summary.counts;
  const failedNames = summary.pipelines.filter((p) => p.state === "failed").map((p) => shown(p.name ?? pipelineLabel(p)));
  const what = repository ? `${repository}: ` : "";
  const title = summary.interrupted
    ? `${what}kfp-sync interrupted (${summary.interrupted})`
    : c.failed === 0
      ? summary.schedules?.some((o) => o.state === "failed")
        ? `${what}kfp-sync: ${summary.schedules.filter((o) => o.state === "failed").length} schedule(s) failed`
        : `${what}kfp-sync ${summary.dryRun ? "dry run " : ""}ok, ${c.uploaded} uploaded`
      : c.failed === c.found
        ? `${what}kfp-sync failed: all ${c.failed} pipelines`
        : `${what}kfp-sync: ${c.failed} of ${c.found} pipelines failed`;
  const head = [
    ...(summary.interrupted ? [`interrupted by ${summary.interrupted}: what was not compiled or uploaded is listed as failed`] : []),
    `compiled ${c.compiled} · uploaded ${c.uploaded} (created ${c.created}, versioned ${c.versioned}) · unchanged ${c.unchanged} · failed ${c.failed}`,
    `version ${summary.versionTag}${summary.commit ? ` · commit ${summary.commit.slice(0, 8)}` : ""}`,
    ...(summary.schedules ? [`schedules: ${scheduleLine(summary.schedules)}`] : []),
  ];
  const tail = [summary.runUrl ? `run: ${summary.runUrl}` : "", uiUrl ? `kubeflow: ${uiUrl}/#/pipelines` : ""].filter(Boolean);
  const actions: Notification["actions"] = [];
  if (summary.runUrl) actions.push({ action: "view", label: "CI run", url: summary.runUrl });
  if (uiUrl) actions.push({ action: "view", label: "Kubeflow", url: `${uiUrl}/#/pipelines` });
  const bad = c.failed > 0 || summary.interrupted !== undefined || summary.schedules?.some((o) => o.state === "failed") === true;
  const noteWith = (failedList?: string, changed: string[] = []): Notification => ({
    topic,
    title,
    message: [...head, ...(failedList === undefined ? [] : [`failed: ${failedList}`]), ...changed, ...tail].join("\n"),
    priority: bad ? 4 : 3,
    tags: bad ? ["warning", "kubeflow"] : ["white_check_mark", "kubeflow"],
    click: summary.runUrl,
    actions: actions.length > 0 ? actions : undefined,
  });
  // The whole request counts, as sent: names full of quotes, backslashes or control characters
  // take two to six bytes each in the JSON body.
  const within = (note: Notification) =>
    Buffer.byteLength(note.message) <= NTFY_MAX_MESSAGE_BYTES && Buffer.byteLength(JSON.stringify(note)) <= NTFY_MAX_BODY_BYTES;
  const failedList = failedNames.length > 0 ? fitList(failedNames, (list) => within(noteWith(list))) : undefined;
  // The first changes of each new version (issue 17), as many as the size budget leaves room for.
  const changes = summary.pipelines.filter((p) => p.state === "created" || p.state === "versioned" || p.plan === "create" || p.plan === "version").flatMap((p) => changeLines(p.changes ?? [], 3).map(shown));
  const changed: string[] = [];
  for (const [i, line] of changes.entries()) {
    const more = changes.length - i;
    if (!within(noteWith(failedList, [...changed, line, `and ${more} more`]))) {
      changed.push(`and ${more} more`);
      break;
    }
    changed.push(line);
  }
  const note = noteWith(failedList, changed);
  if (within(note)) return note;
  // Only links of absurd length (--run-url, KFP_UI_URL) get here: keep the title and the counts.
  const counts = [...head, ...(failedNames.length > 0 ? [`failed: ${failedNames.length} pipeline${failedNames.length === 1 ? "" : "s"}`] : [])].join("\n");
  return { topic, title, message: counts, priority: note.priority, tags: note.tags };
}

export interface NtfyClient {
  /** Publish, best effort; `tries` bounds the retries of ntfy's request limit. */
  publish(note: Notification, timeoutMs: number, stop?: AbortSignal, tries?: number): Promise<void>;
}

/**
 * The one client for ntfy: topic root and auth in one place. The request limit (429/42901) is
 * retried with backoff, as ntfy sends no Retry-After and refuses before it publishes; too many
 * failed logins (429/42909) is not, since ntfy now refuses every login from this address for a
 * while and each try would only count as one more failure. Nothing else is retried.
 */
export function ntfyClient(ntfy: NonNullable<Config["ntfy"]>, sleep: (ms: number) => Promise<void> = Bun.sleep): NtfyClient {
  const { root } = ntfyTarget(ntfy.url);
  const auth = ntfyAuthorization(ntfy.token);
  const $ntfy = ofetch.create({ headers: auth ? { Authorization: auth } : {}, retry: false }, { fetch: cappedFetch(MAX_SMALL_ANSWER_BYTES) });
  return {
    async publish(note, timeoutMs, stop = new AbortController().signal, tries = 4) {
      for (let attempt = 1; ; attempt++) {
        try {
          await $ntfy(root, { method: "POST", body: note, signal: AbortSignal.any([stop, AbortSignal.timeout(timeoutMs)]) });
          return;
        } catch (error) {
          const { status, data, settled, timedOut } = peerFailure(error, ntfy.url);
          const code = (data as { code?: unknown } | undefined)?.code;
          if (status === 429 && code !== 42909 && attempt < tries && !stop.aborted) {
            await sleep(1000 * 2 ** (attempt - 1));
            continue;
          }
          if (settled) throw new Error(`notification not sent: ${settled}`, { cause: error });
          const fe = error as FetchError;
          const detail = serverMessage(data);
          const hint =
            status === 401 || status === 403
              ? "check NTFY_TOKEN (a tk_ token or user:password) and that it may write to the topic"
              : status === 429 && code === 42909
                ? "earlier credentials from this address were refused too often, so ntfy refuses every login from it for now: wait a minute, then check NTFY_TOKEN"
                : status === 429
                  ? `ntfy rate-limited this runner; gave up after ${attempt} ${attempt === 1 ? "try" : "tries"}`
                  : status
                    ? ""
                    : timedOut
                      ? `no answer from ${new URL(root).host} within ${timeoutMs / 1000} s`
                      : `cannot reach ${new URL(root).host}`;
          const what = stop.aborted ? "the run was interrupted" : status ? `HTTP ${status}` : ((fe.cause as Error)?.message ?? fe.message);
          throw new Error(`notification not sent: ${what}${detail ? ` — ${detail}` : ""}${hint && !stop.aborted ? ` (${hint})` : ""}`, { cause: error });
        }
      }
    },
  };
}

/** One publish with a client of its own (tests; the run builds one client in notifyStage). */
export async function publish(
  ntfy: NonNullable<Config["ntfy"]>,
  note: Notification,
  timeoutMs: number,
  stop?: AbortSignal,
  sleep: (ms: number) => Promise<void> = Bun.sleep,
  tries = 4,
): Promise<void> {
  return ntfyClient(ntfy, sleep).publish(note, timeoutMs, stop, tries);
}

/** Stage 4: tell ntfy how the run went. Returns the problem a failed notification is; never fails the sync itself. */
async function notifyStage(summary: Summary, cfg: Config, env: Env, run: RunContext): Promise<Problem[]> {
  const log = run.log;
  if (!cfg.ntfy) {
    // An unset secret reaches the job as an empty string: say so, or a typo in its name goes unseen.
    log.info("no --ntfy-url/NTFY_URL: no notification is sent");
    return [];
  }
  const ntfy = cfg.ntfy;
  const client = ntfyClient(ntfy);
  const topic = ntfyTarget(ntfy.url).topic;
  const noteOf = (s: Summary) => run.out.scrubbed(buildNotification(s, topic, env.GITHUB_REPOSITORY, s.server ? cfg.uiUrl : undefined));
  const where = ntfy.url.split("?")[0];
  if (cfg.dryRun) {
    log.info(`dry run: would notify ${where}:\n${JSON.stringify(noteOf(summary), null, 2)}`);
    return [];
  }
  const failed = (message: string): Problem[] => {
    const problem: Problem = { stage: "notify", message, hint: ntfy.required ? undefined : "best effort: the sync itself is unaffected" };
    if (ntfy.required) log.error(problem.message);
    else log.warn(`${problem.message} — the sync itself is unaffected`);
    return [problem];
  };
  if (!run.stopped) {
    try {
      await client.publish(noteOf(summary), cfg.httpTimeoutMs, run.abort.signal);
      log.success(`notified ${where}`);
      return [];
    } catch (error) {
      if (!run.stopped) return failed((error as Error).message);
    }
  }
  // The signal cut every request in flight, this one's too. One short try of its own, not
  // retried, so that a stopped job still says it stopped; a second signal exits at once.
  try {
    await client.publish(noteOf({ ...summary, interrupted: run.signal }), Math.min(cfg.httpTimeoutMs, INTERRUPTED_NOTICE_MS), undefined, 1);
    log.info(`notified ${where} that the run was interrupted`);
    return [];
  } catch (error) {
    return failed(`the run was interrupted; ${(error as Error).message}`);
  }
}

// ─── 4b. Comment on the pull request (issue 17) ──────────────────────────────────────────────────

// The plan as one comment on the pull request, found again by a hidden marker and edited in place
// on every push. Gitea's API (1.26.0, 1.27.3 measured) and GitHub's agree on these three routes;
// Gitea's listing of a pull request's comments ignores page/limit and returns them all.
export const PLAN_MARKER = "<!-- kfp-sync plan -->";
// GitHub refuses comments over 65,536 characters; Gitea has no lower limit.
const MAX_COMMENT_CHARS = 60_000;
const MAX_COMMENTS_ANSWER_BYTES = 16 << 20;

export interface PullRequest {
  api: string;
  repo: string;
  index: number;
  token: string;
  /** From a fork: the job gets no secrets, so the plan is compile-only. */
  fork: boolean;
}

/** Which pull request this run is for, from the runner's environment; a string says why there is none. */
export function pullRequestOf(env: Env): PullRequest | string {
  let event: { number?: number; pull_request?: { number?: number; head?: { repo?: { full_name?: string } }; base?: { repo?: { full_name?: string } } } } = {};
  try {
    if (env.GITHUB_EVENT_PATH) event = JSON.parse(fs.readFileSync(env.GITHUB_EVENT_PATH, "utf8"));
  } catch {
    // No readable event: the ref below still names the pull request.
  }
  const index = event.pull_request?.number ?? event.number ?? Number(/^refs\/pull\/(\d+)\//.exec(env.GITHUB_REF ?? "")?.[1]);
  if (!Number.isInteger(index) || index <= 0) return "this run is not for a pull request (no pull_request event)";
  const repo = env.GITHUB_REPOSITORY;
  const server = env.GITHUB_SERVER_URL?.replace(/\/+$/, "");
  const api = env.GITHUB_API_URL?.replace(/\/+$/, "") || (server ? `${server}/api/v1` : undefined);
  if (!repo || !api) return "GITHUB_REPOSITORY and GITHUB_API_URL/GITHUB_SERVER_URL are not set";
  const token = env.GITEA_TOKEN || env.GITHUB_TOKEN;
  if (!token) return "no GITEA_TOKEN or GITHUB_TOKEN: give the step the job's token";
  const head = event.pull_request?.head?.repo?.full_name;
  const base = event.pull_request?.base?.repo?.full_name;
  return { api, repo, index, token, fork: !!head && !!base && head !== base };
}

/** The comment: the step summary's plan, compile errors by file:line, and what it could not read. */
export function planComment(summary: Summary, fork: boolean): string {
  const compileErrors = summary.pipelines
    .filter((p) => p.state === "failed" && (p.error?.stage === "compile" || p.error?.stage === "discover"))
    .map((p) => `- \`${shown(p.error!.file ?? p.file)}${p.error!.line ? `:${p.error!.line}` : ""}\`: ${cell(shown(p.error!.message))}`);
  const scope = summary.server
    ? `Compared with ${summary.server.host}${summary.server.version ? ` (KFP ${summary.server.version})` : ""}; nothing was written.`
    : `**Compile-only plan**: no KFP server was read${fork ? " (a pull request from a fork gets no secrets)" : " (no KFP_HOST)"}; what would change on the server is not known.`;
  const body = [PLAN_MARKER, stepSummary(summary).replace(/^### kfp-sync (\(dry run\) )?/, "### kfp-sync plan "), scope, "", ...(compileErrors.length ? ["**Compile errors**", "", ...compileErrors, ""] : [])].join("\n");
  return body.length > MAX_COMMENT_CHARS ? `${body.slice(0, MAX_COMMENT_CHARS)}\n\n… cut by kfp-sync: the plan is longer than a comment may be; the run's log has all of it\n` : body;
}

interface IssueComment { id: number; body?: string }

/** The forge's three comment routes, with the job's token; answers capped, nothing retried. */
export function commentClient(pr: PullRequest, timeoutMs: number) {
  const api = ofetch.create({ baseURL: pr.api, headers: { Authorization: `token ${pr.token}`, Accept: "application/json" }, retry: 0, timeout: timeoutMs }, { fetch: cappedFetch(MAX_COMMENTS_ANSWER_BYTES) });
  const repo = pr.repo.split("/").map(encodeURIComponent).join("/");
  return {
    list: () => api<IssueComment[]>(`/repos/${repo}/issues/${pr.index}/comments`, { query: { per_page: 100 } }),
    create: (body: string) => api<IssueComment>(`/repos/${repo}/issues/${pr.index}/comments`, { method: "POST", body: { body } }),
    edit: (id: number, body: string) => api<IssueComment>(`/repos/${repo}/issues/comments/${id}`, { method: "PATCH", body: { body } }),
  };
}

/** Post or edit the one plan comment. Never fails the run: a comment that cannot be posted is a warning. */
async function commentStage(summary: Summary, cfg: Config, env: Env, run: RunContext): Promise<void> {
  const log = run.log;
  const pr = pullRequestOf(env);
  if (typeof pr === "string") {
    log.warn(`--pr-comment: no comment posted: ${pr}`);
    return;
  }
  const client = commentClient(pr, cfg.httpTimeoutMs);
  const body = scrub(planComment(run.out.scrubbed(summary), pr.fork), run.secrets);
  try {
    const comments = await client.list();
    const ours = Array.isArray(comments) ? comments.find((c) => typeof c?.body === "string" && c.body.startsWith(PLAN_MARKER)) : undefined;
    if (ours) await client.edit(ours.id, body);
    else await client.create(body);
    log.success(`${ours ? "edited the plan comment" : "commented the plan"} on pull request #${pr.index}`);
  } catch (error) {
    const status = (error as { status?: number }).status;
    const why = answerProblem(error) ?? (error as Error).message;
    const hint = status === 401 || status === 403 || status === 404 ? ": the job's token may not write to the pull request (a fork?)" : "";
    log.warn(`the plan could not be posted on pull request #${pr.index}${status ? ` (HTTP ${status})` : ""}: ${why}${hint} — the check is unaffected`);
  }
}

// ─── 5. Report ───────────────────────────────────────────────────────────────────────────────────

const ESCAPED: Record<string, string> = { "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * A file or pipeline name as people read it (log, step summary, notification, annotations, step
 * outputs): control and bidi characters escaped, so a name stays one line, is one list entry and
 * cannot start a workflow command (`::error::`). The JSON keeps the exact name.
 */
export function shown(name: string): string {
  return name.replace(/[\\\p{Cc}\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu, (c) => ESCAPED[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** The summary as JSON text: the same values, with the characters JSON.stringify leaves raw (bidi, C1) escaped too; runners echo it into logs. */
function summaryJson(summary: Summary): string {
  return JSON.stringify(summary, null, 2).replace(/[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

export function countsOf(pipelines: PipelineReport[]): Summary["counts"] {
  const n = (f: (p: PipelineReport) => boolean) => pipelines.filter(f).length;
  const created = n((p) => p.state === "created");
  const versioned = n((p) => p.state === "versioned");
  return {
    found: pipelines.length,
    // An upload failure was compiled first; a discover or compile failure was not.
    compiled: n((p) => p.state !== "failed" || p.error?.stage === "upload"),
    uploaded: created + versioned, // both 0 in a dry run
    created,
    versioned,
    unchanged: n((p) => p.state === "unchanged" || p.plan === "unchanged"),
    failed: n((p) => p.state === "failed"),
  };
}

/** `created 1 · replaced 0 · …`: the schedules in one line, for people (log, step summary, notification, outputs). */
export function scheduleLine(schedules: ScheduleOutcome[]): string {
  const n = (f: (o: ScheduleOutcome) => boolean) => schedules.filter(f).length;
  const dry = schedules.some((o) => o.plan !== undefined);
  const parts = dry
    ? [`would create ${n((o) => o.plan === "create")}`, `would replace ${n((o) => o.plan === "replace")}`, `unchanged ${n((o) => o.plan === "unchanged")}`, `orphaned ${n((o) => o.plan === "orphaned")}`, ...(n((o) => o.plan === "delete") ? [`would delete ${n((o) => o.plan === "delete")}`] : [])]
    : [`created ${n((o) => o.state === "created")}`, `replaced ${n((o) => o.state === "replaced")}`, `unchanged ${n((o) => o.state === "unchanged")}`, `orphaned ${n((o) => o.state === "orphaned")}`, ...(n((o) => o.state === "deleted") ? [`deleted ${n((o) => o.state === "deleted")}`] : [])];
  const skipped = n((o) => o.state === "skipped");
  // Without a host, entries are only checked against the compiled pipelines.
  const checked = n((o) => o.state === undefined && o.plan === undefined);
  if (checked > 0 && !dry && schedules.every((o) => o.state === undefined || o.state === "failed")) return `checked ${checked} · failed ${n((o) => o.state === "failed")}`;
  return [...parts, ...(skipped ? [`skipped ${skipped}`] : []), `failed ${n((o) => o.state === "failed")}`].join(" · ");
}

function scheduleLabel(o: ScheduleOutcome): string {
  return o.pipeline ? `${shown(o.pipeline)}/${shown(o.name)}` : shown(o.where ?? "schedules");
}

/** A multi-line-safe `name<<DELIMITER` block for GITHUB_OUTPUT, as the runner reads it. */
function outputEntry(name: string, value: string): string {
  if (!value.includes("\n")) return `${name}=${value}\n`;
  const delimiter = `ghadelimiter_${crypto.randomUUID()}`;
  return `${name}<<${delimiter}\n${value}\n${delimiter}\n`;
}

export function actionsOutputs(summary: Summary): string {
  const failed = summary.pipelines.filter((p) => p.state === "failed").map((p) => shown(p.name ?? pipelineLabel(p)));
  return [
    outputEntry("compiled", String(summary.counts.compiled)),
    outputEntry("uploaded", String(summary.counts.uploaded)),
    outputEntry("unchanged", String(summary.counts.unchanged)),
    outputEntry("failed", String(summary.counts.failed)),
    // A run that created no version must not name one: a later job would look for it in KFP.
    outputEntry("version", summary.counts.uploaded > 0 ? summary.versionTag : ""),
    outputEntry("failed_pipelines", failed.join("\n")),
    ...(summary.schedules ? [outputEntry("schedules", scheduleLine(summary.schedules)), outputEntry("failed_schedules", summary.schedules.filter((o) => o.state === "failed").map(scheduleLabel).join("\n"))] : []),
    outputEntry("summary_json", summaryJson(summary)),
  ].join("");
}

function cell(text: string | undefined): string {
  return (text ?? "").replaceAll("|", "\\|").replaceAll("\n", " ");
}

export function stepSummary(summary: Summary): string {
  const c = summary.counts;
  const rows = summary.pipelines.map((p) => {
    const result = p.state === "failed" ? `❌ ${p.error?.stage === "upload" ? "upload" : "compile"} failed` : p.plan ? PLAN_WORDS[p.plan] : p.state;
    const version = p.url ? `[${p.versionName ?? "open"}](${p.url})` : (p.versionName ?? "");
    const error = p.error ? `${p.error.line ? `line ${p.error.line}: ` : ""}${p.error.message}` : "";
    return `| ${cell(shown(p.name ?? ""))} | \`${cell(shown(p.file))}\` | ${cell(result)} | ${cell(version)} | ${cell(error)} |`;
  });
  return [
    `### kfp-sync ${summary.dryRun ? "(dry run) " : ""}— ${c.failed === 0 && !summary.schedules?.some((o) => o.state === "failed") ? "✅" : "❌"} ${c.compiled}/${c.found} compiled, ${c.uploaded} uploaded, ${c.unchanged} unchanged, ${c.failed} failed`,
    "",
    `Version tag \`${summary.versionTag}\`${summary.commit ? ` · commit \`${summary.commit.slice(0, 8)}\`` : ""}${summary.server?.host ? ` · server ${summary.server.host}${summary.server.version ? ` (${summary.server.version})` : ""}` : ""}`,
    "",
    "| pipeline | file | result | version | error |",
    "|---|---|---|---|---|",
    ...rows,
    "",
    ...changeSections(summary),
    ...(summary.schedules ? scheduleTable(summary.schedules) : []),
  ].join("\n");
}

/** One section per pipeline that changes (issue 17), from the records the JSON carries. */
export function changeSections(summary: Summary, max = 100): string[] {
  return summary.pipelines
    .filter((p) => (p.changes ?? []).length > 0)
    .flatMap((p) => [`#### ${cell(shown(p.name ?? pipelineLabel(p)))}`, "", ...changeLines(p.changes!, max).map((line) => `- ${markdownText(shown(line))}`), ""]);
}

/** Text in Markdown as written: a code span, so a name or value makes no emphasis, link or HTML. */
function markdownText(text: string): string {
  return `\`${text.replaceAll("`", "'")}\``;
}

function scheduleTable(schedules: ScheduleOutcome[]): string[] {
  const rows = schedules.map((o) => {
    const result = o.state === "failed" ? "❌ failed" : o.plan ? SCHEDULE_PLAN_WORDS[o.plan] : (o.state ?? "checked");
    const leftAs = o.leftAs ? `old: ${o.leftAs.old ?? "-"}; new: ${o.leftAs.new ?? "-"}` : "";
    const note = o.error ? `${o.error.message}${leftAs ? ` (${leftAs})` : ""}` : (o.message ?? "");
    return `| ${cell(scheduleLabel(o))} | ${cell(o.where ?? "")} | ${cell(result)} | ${cell(o.recurringRunId ?? "")} | ${cell(note)} |`;
  });
  return [`#### Schedules — ${scheduleLine(schedules)}`, "", "| schedule | declared at | result | recurring run | note |", "|---|---|---|---|---|", ...rows, ""];
}

/** `::error file=…,line=…::` — GitHub renders these; Gitea and Forgejo print them raw. */
export function annotations(summary: Summary): string[] {
  const escape = (s: string) => s.replaceAll("%", "%25").replaceAll("\r", "%0D").replaceAll("\n", "%0A");
  const prop = (s: string) => escape(s).replaceAll(":", "%3A").replaceAll(",", "%2C");
  return summary.pipelines
    .filter((p) => p.error)
    .map((p) => `::error file=${prop(shown(p.error!.file ?? p.file))}${p.error!.line ? `,line=${p.error!.line}` : ""},title=${prop(`kfp-sync ${p.error!.stage}`)}::${escape(p.error!.message)}`);
}

/** Write the Actions outputs and step summary where the runner provides them. */
export function writeActionsFiles(summary: Summary, env: Env, out: Writer, log: { warn(msg: string): void }): void {
  const outputFile = env.GITHUB_OUTPUT || env.GITEA_OUTPUT;
  const summaryFile = env.GITHUB_STEP_SUMMARY || env.GITEA_STEP_SUMMARY;
  const append = (file: string, text: string, what: string) => {
    try {
      out.write({ file }, text);
    } catch (error) {
      log.warn(`cannot write ${what} to ${file}: ${(error as Error).message}`);
    }
  };
  if (outputFile) append(outputFile, actionsOutputs(summary), "step outputs");
  if (summaryFile) append(summaryFile, stepSummary(summary), "the step summary");
}

/** Stage 5: JSON on stdout, Actions files where the runner gives them, annotations on GitHub, a last line. */
export function report(raw: Summary, env: Env, out: Writer, log: { warn(msg: string): void; log(msg: string): void; error(msg: string): void; success(msg: string): void }, ntfyRequired = false): void {
  const summary = out.scrubbed(raw); // every output below is built from this one
  out.write("stdout", summaryJson(summary) + "\n");
  writeActionsFiles(summary, env, out, log);
  if (env.GITHUB_STEP_SUMMARY || env.GITEA_STEP_SUMMARY) log.log(stepSummary(summary)); // Gitea < 1.27 ignores the file
  const onGitHub = truthy(env.GITHUB_ACTIONS) && !truthy(env.GITEA_ACTIONS) && !truthy(env.FORGEJO_ACTIONS);
  if (onGitHub) for (const line of annotations(summary)) out.write("stderr", line + "\n");
  const c = summary.counts;
  const line = `${c.compiled}/${c.found} compiled · ${c.uploaded} uploaded · ${c.unchanged} unchanged · ${c.failed} failed${summary.schedules ? ` · schedules: ${scheduleLine(summary.schedules)}` : ""} · ${(summary.durationMs / 1000).toFixed(1)} s`;
  // The last line is what people read: with --ntfy-required a lost notification fails the run, say so.
  const notifyProblem = ntfyRequired ? summary.problems.find((p) => p.stage === "notify") : undefined;
  if (notifyProblem) log.error(`run failed, --ntfy-required: ${notifyProblem.message} · ${line}`);
  else if (c.failed > 0 || summary.schedules?.some((o) => o.state === "failed")) log.error(line);
  else log.success(line);
}

/** The run's record, one entry per pipeline, built from what each stage returned. */
function summarize(cfg: Config, found: Discovery, compiled: CompileRun & { unkept: Problem[] }, uploaded: UploadRun, schedules: ScheduleOutcome[] | undefined, run: RunContext): Summary {
  const reports = new Map<string, PipelineReport>();
  for (const p of found.problems) reports.set(p.file!, { file: p.file!, state: "failed", error: p, timings: {} });
  for (const r of compiled.results) {
    const fn = r.file.functionName;
    reports.set(
      reportKey(r.file),
      r.ok
        ? { file: r.file.path, function: fn, name: r.irName, output: r.notKept ? undefined : path.relative(cfg.cwd, r.output) || r.output, state: "compiled", timings: { compileMs: r.ms } }
        : { file: r.file.path, function: fn, state: "failed", error: r.problem, timings: { compileMs: r.ms } },
    );
  }
  for (const { file, outcome, ms } of uploaded.uploads) {
    const report = reports.get(reportKey(file))!;
    const { pipelineName: name, state, plan, pipelineId, versionId, versionName, url, changes, problem: error } = outcome;
    Object.assign(report, { name, state: state ?? report.state, plan, pipelineId, versionId, versionName, url, changes, error });
    if (ms !== undefined) report.timings.uploadMs = Math.round(ms);
  }
  const pipelines = [...reports.values()].sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return {
    schemaVersion: SUMMARY_SCHEMA_VERSION,
    tool: { name: "kfp-sync", version: VERSION },
    kfp: compiled.kfp,
    server: uploaded.server,
    dryRun: cfg.dryRun,
    versionTag: cfg.versionTag,
    commit: cfg.commit,
    runUrl: cfg.runUrl,
    counts: countsOf(pipelines),
    pipelines,
    problems: [...pipelines.flatMap((p) => (p.error ? [p.error] : [])), ...(schedules ?? []).flatMap((o) => (o.error ? [o.error] : [])), ...compiled.unkept],
    notes: found.notes.length > 0 ? found.notes : undefined,
    schedules,
    interrupted: run.signal,
    durationMs: 0,
  };
}

// ─── Main ────────────────────────────────────────────────────────────────────────────────────────

/** 0 all good, 1 something failed, 2 usage (raised before), 130/143 interrupted. */
export function exitCodeOf(summary: Summary, ntfyRequired: boolean): number {
  if (summary.interrupted) return summary.interrupted === "SIGINT" ? 130 : 143;
  if (summary.counts.failed > 0) return 1;
  if (summary.schedules?.some((o) => o.state === "failed")) return 1;
  if (ntfyRequired && summary.problems.some((p) => p.stage === "notify")) return 1;
  return 0;
}

/** The whole job: find → compile → upload → notify, each stage's results handed to the next. Never throws for one pipeline's failure. */
export async function sync(cfg: Config, env: Env, run: RunContext): Promise<Summary> {
  const started = performance.now();
  const found = findStage(cfg, run.log);
  const compiled = await compileStage(found.files, cfg, run);
  const uploaded = await uploadStage(compiled, cfg, run);
  const schedules = await scheduleStage(found, compiled, uploaded, cfg, run);
  const summary = summarize(cfg, found, compiled, uploaded, schedules, run);
  const notified = await notifyStage(summary, cfg, env, run);
  if (cfg.prComment) await commentStage(summary, cfg, env, run);
  // A signal during notify counts too.
  return { ...summary, problems: [...summary.problems, ...notified], interrupted: run.signal, durationMs: Math.round(performance.now() - started) };
}

function commandFor(run: RunContext, env: Env) {
  return defineCommand({
    meta: { name: "kfp-sync", version: VERSION, description: "Find, compile and upload Kubeflow Pipelines in one step" },
    args,
    async run({ args: parsed, rawArgs }) {
      const cfg = resolveConfig(parsed, rawArgs, env, process.cwd(), new Date());
      run.log = createLog(cfg.verbose, run.out);
      process.on("SIGINT", () => stopRun(run, "SIGINT"));
      process.on("SIGTERM", () => stopRun(run, "SIGTERM"));
      cfg.runUrl = await resolveRunUrl(cfg, env, run.log);
      const summary = await sync(cfg, env, run);
      report(summary, env, run.out, run.log, cfg.ntfy?.required ?? false);
      run.exitCode = exitCodeOf(summary, cfg.ntfy?.required ?? false);
    },
  });
}

export async function main(rawArgs: string[], env: Env = process.env as Env): Promise<number> {
  const run = runContext(secretsOf(env, rawArgs), rawArgs.includes("--verbose"));
  if (rawArgs.includes("--version")) {
    run.out.write("stdout", `${VERSION}\n`);
    return 0;
  }
  const command = commandFor(run, env);
  if (rawArgs.includes("--help") || rawArgs.includes("-h")) {
    run.out.write("stdout", `${await renderUsage(command)}\n`);
    return 0;
  }
  const unknown = unknownFlags(rawArgs, args);
  if (unknown.length > 0) {
    run.out.write("stderr", `✖ unknown option${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}: see kfp-sync --help\n`);
    return 2;
  }
  try {
    await runCommand(command, { rawArgs });
    return run.exitCode;
  } catch (error) {
    const usage = error instanceof UsageError || (error as Error).name === "CLIError";
    const verbose = rawArgs.includes("--verbose");
    const text = verbose ? ((error as Error).stack ?? String(error)) : (error as Error).message;
    run.out.write("stderr", `✖ ${text}\n`);
    return usage ? 2 : 1;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
