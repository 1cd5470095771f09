/**
 * Replays the recorded contract of the real KFP API server 2.17.0 (test/contracts/kfp-apiserver-2.17.0,
 * README.md there says how) against the imitation, one fresh server per mode, every case in recorded
 * order, one test per case. With KFP_TEST_HOST set the cases run against that server instead; the ones that
 * cannot hold on a shared, non-fresh cluster are skipped with the reason printed (see remoteSkip).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { kfpTarget, REMOTE_HOST, skipReason, type KfpTarget } from "./kfp-target";
import type { KfpServerOptions } from "./kfp-server";

const DIR = path.join(import.meta.dir, "contracts/kfp-apiserver-2.17.0");

type Json = any;
type Mode = "single-user" | "multi-user" | "multi-user-require-namespace";
interface Case {
  name: string;
  mode: Mode;
  shows: string;
  compare: "exact" | "unordered-lists" | "shape";
  setup?: { uploads_before?: { count: number; name_format: string; spec: string; filename: string }; sleep_before_s?: number; start_early_in_second?: boolean };
  request: { method: string; path: string; query: string; headers: Record<string, string>; body: Json };
  response: { status: number | null; content_type: string | null; body: Json; body_cut?: boolean; body_text?: string; page_token_decoded?: Json; timed_out_after_s?: number };
}

const CASES: Case[] = JSON.parse(fs.readFileSync(path.join(DIR, "cases.json"), "utf8"));

const MODES: Record<Mode, KfpServerOptions> = {
  "single-user": {},
  "multi-user": { multiUser: true, deniedUsers: ["denied@example.com"] },
  "multi-user-require-namespace": { multiUser: true, requireNamespace: true, deniedUsers: ["denied@example.com"] },
};

/**
 * Cases the imitation deliberately answers differently, with what it answers instead (checked, so the
 * substitute cannot drift either).
 */
const NOT_REPRODUCED: Record<string, { reason: string; instead: { status: number; body: Json } }> = {
  "upload-invalid-not-yaml": {
    reason: "the real server never answers (its YAML check loops forever on one core); a test server that hung would hang the suite, so the imitation answers at once",
    instead: { status: 400, body: { error_message: "unknown template format", error_details: "unknown template format\n<go-stack>" } },
  },
};

// ---------------------------------------------------------------------------------------------------------
// Placeholders: learned from the replayed server's answers by the contract's own rule

const KNOWN_KEYS: Record<string, string> = {
  pipeline_id: "pipeline_id",
  pipeline_version_id: "version_id",
  experiment_id: "experiment_id",
  recurring_run_id: "recurring_run_id",
  next_page_token: "page_token",
};
const PLACEHOLDER = /<(pipeline_id|version_id|experiment_id|recurring_run_id|page_token|uuid):(\d+)>/g;
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";
const isObject = (v: unknown): v is Record<string, Json> => typeof v === "object" && v !== null && !Array.isArray(v);

class Placeholders {
  private byValue = new Map<string, string>();
  private byName = new Map<string, string>();
  private next: Record<string, number> = {};

  private add(kind: string, value: string) {
    if (!value || value === UNKNOWN_ID) return;
    // The recorder named ids over the whole recording: one seen in text first (a decoded page token) takes
    // its known-key name once it shows up under a known key.
    const earlier = this.byValue.get(value);
    if (earlier && !(earlier.startsWith("<uuid:") && kind !== "uuid")) return;
    if (earlier) this.byName.delete(earlier);
    const name = `<${kind}:${(this.next[kind] = (this.next[kind] ?? 0) + 1)}>`;
    this.byValue.set(value, name);
    this.byName.set(name, value);
  }

  /** First appearance under a known key, list items taken in name order. */
  learn(value: Json): void {
    if (Array.isArray(value)) {
      const named = (v: Json) => (isObject(v) ? String(v.name ?? v.display_name ?? "") : "");
      for (const item of [...value].sort((a, b) => (named(a) < named(b) ? -1 : named(a) > named(b) ? 1 : 0))) this.learn(item);
    } else if (isObject(value)) {
      for (const [key, v] of Object.entries(value)) {
        if (KNOWN_KEYS[key] && typeof v === "string") this.add(KNOWN_KEYS[key], v);
        this.learn(v);
      }
    }
  }

  /**
   * Against KFP_TEST_HOST, where skipped cases would shift the numbering, placeholders are bound by
   * position instead: where the recording has `<kind:N>` and N is still unbound, the answer's value is it.
   */
  bind(expected: Json, actual: Json): void {
    if (typeof expected === "string" && typeof actual === "string") {
      const whole = /^<(pipeline_id|version_id|experiment_id|recurring_run_id|page_token|uuid):\d+>$/.exec(expected);
      const earlier = this.byValue.get(actual);
      if (whole && !this.byName.has(expected) && (!earlier || earlier.startsWith("<uuid:"))) {
        if (earlier) this.byName.delete(earlier);
        this.byName.set(expected, actual);
        this.byValue.set(actual, expected);
      }
    } else if (Array.isArray(expected) && Array.isArray(actual)) {
      // Items pair up by name where they have one (unordered lists), else by position.
      const named = (v: Json) => (isObject(v) && typeof v.name === "string" ? v.name : undefined);
      expected.forEach((e, i) => this.bind(e, named(e) === undefined ? actual[i] : actual.find((a) => named(a) === named(e))));
    } else if (isObject(expected) && isObject(actual)) {
      for (const [k, e] of Object.entries(expected)) this.bind(e, actual[k]);
    }
  }

  /** Real values for the placeholders in a request; page tokens percent-encoded (base64 may hold + and /). */
  fill(text: string, inQuery = false): string {
    return text.replace(PLACEHOLDER, (name) => {
      const value = this.byName.get(name);
      if (value === undefined) throw new Error(`${name} was never learned from an earlier answer`);
      return inQuery ? encodeURIComponent(value) : value;
    });
  }

  /** The real values learned for one kind of placeholder. */
  values(kind: string): string[] {
    return [...this.byName.entries()].filter(([name]) => name.startsWith(`<${kind}:`)).map(([, value]) => value);
  }

  /** An answer's ids as placeholders; an id seen nowhere under a known key becomes <uuid:N>. */
  hide(text: string): string {
    const values = [...this.byValue.keys()].sort((a, b) => b.length - a.length);
    for (const value of values) if (text.includes(value)) text = text.split(value).join(this.byValue.get(value)!);
    return text.replace(UUID, (id) => {
      if (id === UNKNOWN_ID) return id;
      this.add("uuid", id);
      return this.byValue.get(id)!;
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Normalising both sides the way the contract README says

/** {{c*N}}: the character c repeated N times. */
const expand = (text: string) => text.replace(/\{\{(.)\*(\d+)\}\}/gu, (_, c: string, n: string) => c.repeat(Number(n)));

/** protobuf-go writes "proto:" and then a space or a no-break space, chosen per build. */
const protoSpace = (text: string) => text.replace(/proto:\u00a0/g, "proto: ");

function mapStrings(value: Json, fn: (s: string, key?: string) => Json, key?: string, skip?: string): Json {
  if (typeof value === "string") return fn(value, key);
  if (Array.isArray(value)) return value.map((v) => mapStrings(v, fn, key, skip));
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, k === skip ? v : mapStrings(v, fn, k, skip)]));
  return value;
}

/** Python's json.dumps: the recorder wrote request bodies and sized cut specs with it. */
function pythonDumps(value: Json): string {
  const dumps = (v: Json): string => {
    if (v === null) return "null";
    if (typeof v === "boolean") return String(v);
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      const abs = Math.abs(v);
      if (abs !== 0 && (abs < 1e-4 || abs >= 1e16)) return v.toExponential().replace(/e([+-])(\d)$/, "e$10$2");
      return String(v);
    }
    if (typeof v === "string") return JSON.stringify(v).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
    if (Array.isArray(v)) return `[${v.map(dumps).join(", ")}]`;
    return `{${Object.entries(v).map(([k, x]) => `${dumps(k)}: ${dumps(x)}`).join(", ")}}`;
  };
  return dumps(value);
}

/** Cuts the replayed body where, and as, the recording cut its own (body_cut). */
function cutLike(expected: Json, actual: Json): Json {
  if (typeof expected === "string") {
    const spec = /^<pipeline_spec: \d+ bytes, cut; (.*)>$/.exec(expected);
    if (spec && isObject(actual)) return `<pipeline_spec: ${Buffer.byteLength(pythonDumps(actual))} bytes, cut; ${spec[1]}>`;
    return actual;
  }
  if (Array.isArray(expected) && Array.isArray(actual)) {
    const more = typeof expected.at(-1) === "string" ? /^<(\d+) more items>$/.exec(expected.at(-1)) : null;
    if (more) {
      const kept = expected.length - 1;
      return [...actual.slice(0, kept).map((v, i) => cutLike(expected[i], v)), `<${actual.length - kept} more items>`];
    }
    return actual.map((v, i) => cutLike(expected[Math.min(i, expected.length - 1)], v));
  }
  if (isObject(expected) && isObject(actual)) {
    return Object.fromEntries(Object.entries(actual).map(([k, v]) => [k, k in expected ? cutLike(expected[k], v) : v]));
  }
  return actual;
}

/** The replayed answer in the recording's terms: placeholders for ids, times, stacks and unix seconds. */
function normalise(actual: Json, ids: Placeholders): Json {
  const body = mapStrings(actual, (s) => {
    let out = protoSpace(ids.hide(s));
    if (/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/.test(out)) return "<time>";
    if (/^\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)$/.test(out)) return `<time:${out.replace(/\d/g, "n")}>`;
    return out;
  });
  if (isObject(body) && typeof body.error_message === "string" && typeof body.error_details === "string") {
    const first = `${body.error_message}\n`;
    if (body.error_details.startsWith(first) && body.error_details.length > first.length) body.error_details = `${first}<go-stack>`;
  }
  return body;
}

function sortLists(value: Json): Json {
  if (Array.isArray(value)) return value.map(sortLists).sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, sortLists(v)]));
  return value;
}

/** compare "shape": top-level keys, value types and list lengths. */
function shapeOf(value: Json): Json {
  const type = (v: Json) => (Array.isArray(v) ? `list of ${v.length}` : v === null ? "null" : typeof v);
  return isObject(value) ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, type(v)])) : type(value);
}

function comparable(kind: Case["compare"], value: Json): Json {
  return kind === "shape" ? shapeOf(value) : kind === "unordered-lists" ? sortLists(value) : value;
}

// ---------------------------------------------------------------------------------------------------------
// Sending a case

function multipart(spec: Case["request"]["body"]["multipart"]): { boundary: string; body: Uint8Array } {
  let file = fs.readFileSync(path.join(DIR, "specs", spec.spec));
  if (spec.pad_with_comment_to) {
    const pad = spec.pad_with_comment_to - file.length - 2; // "#" … "\n"
    file = Buffer.concat([file, Buffer.from(`#${"x".repeat(pad)}\n`)]);
  }
  const boundary = `contract${crypto.randomUUID().replace(/-/g, "")}`;
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="${spec.field}"; filename="${spec.filename}"\r\nContent-Type: ${spec.content_type}\r\n\r\n`;
  return { boundary, body: Buffer.concat([Buffer.from(head), file, Buffer.from(`\r\n--${boundary}--\r\n`)]) };
}

interface Answer { status: number; contentType: string | null; text: string }

async function send(target: KfpTarget, c: Case, ids: Placeholders, prefix: (s: string) => string): Promise<Answer> {
  const { request } = c;
  const headers: Record<string, string> = {};
  let body: Uint8Array | string | undefined;
  if (request.body && "multipart" in request.body) {
    const part = multipart({ ...request.body.multipart, filename: prefix(request.body.multipart.filename) });
    body = part.body;
    for (const [k, v] of Object.entries(request.headers)) headers[k] = v.replace("<boundary>", part.boundary);
  } else {
    for (const [k, v] of Object.entries(request.headers)) headers[k] = v;
    if (request.body && "raw" in request.body) body = request.body.raw;
    // As the recorder sent them (json.dumps spacing): protojson's errors give the column.
    else if (request.body) body = ids.fill(prefix(expand(pythonDumps(request.body))));
  }
  if (headers.Authorization) headers.Authorization = headers.Authorization.replace("<token>", target.token ?? "contract-test-token");
  else if (target.token) headers.Authorization = `Bearer ${target.token}`;
  const query = ids.fill(prefix(expand(request.query)), true);
  const url = `${target.url}${ids.fill(prefix(request.path))}${query ? `?${query}` : ""}`;
  const res = await fetch(url, { method: request.method, headers, body });
  return { status: res.status, contentType: res.headers.get("content-type"), text: await res.text() };
}

async function setUp(target: KfpTarget, c: Case, prefix: (s: string) => string): Promise<void> {
  const bulk = c.setup?.uploads_before;
  if (bulk) {
    for (let i = 0; i < bulk.count; i++) {
      const name = prefix(bulk.name_format.replace("{i:03d}", String(i).padStart(3, "0")));
      const part = multipart({ spec: bulk.spec, filename: bulk.filename, field: "uploadfile", content_type: "application/octet-stream" });
      const res = await fetch(`${target.url}/apis/v2beta1/pipelines/upload?name=${encodeURIComponent(name)}`, {
        method: "POST", body: part.body, headers: { "Content-Type": `multipart/form-data; boundary=${part.boundary}` },
      });
      if (res.status !== 200) throw new Error(`setup upload ${name}: HTTP ${res.status} ${await res.text()}`);
    }
  }
  if (c.setup?.sleep_before_s) await Bun.sleep(c.setup.sleep_before_s * 1000);
  // Two requests meant to share a second start in its first 200 ms.
  if (c.setup?.start_early_in_second && Date.now() % 1000 > 200) await Bun.sleep(1000 - (Date.now() % 1000) + 20);
}

// ---------------------------------------------------------------------------------------------------------
// Against KFP_TEST_HOST: what cannot hold on a real, shared cluster

/**
 * Why a case cannot be replayed against KFP_TEST_HOST, or undefined when it can. Names the cases create
 * are made unique per run (contract- becomes contract-<run>-), so a cluster that has seen earlier runs is
 * fine; what remains assumes an empty server, this recorder's fake authorizer, or another mode.
 */
function remoteSkip(c: Case, multiUser: boolean): string | undefined {
  if ((c.mode === "single-user") === multiUser) return `recorded in ${c.mode} mode; the server at KFP_TEST_HOST is ${multiUser ? "multi-user" : "single-user"}`;
  if (c.mode === "multi-user-require-namespace") return "needs REQUIRE_NAMESPACE_FOR_PIPELINES=true";
  if (c.name === "upload-invalid-not-yaml") return "the real server never answers it and keeps a core busy for good";
  if (c.name.includes("healthz")) return "names the recorded build (commit and tag) exactly";
  const request = JSON.stringify(c.request);
  const body = JSON.stringify(c.response.body);
  // A listing holds on a shared server only when it is narrowed to what this run created.
  const narrowed = /filter=[^&]*contract|<pipeline_id:\d+>\/versions|experiment_id=<experiment_id/.test(request);
  if ((/"total_size"|^\{\}$/.test(body) || c.response.page_token_decoded) && c.request.method === "GET" && !narrowed) return "counts or orders everything on the server: only holds on a fresh one";
  const displayName = /display_name=\{\{[a-z]\*(\d+)\}\}/.exec(c.request.query);
  if (displayName && Number(displayName[1]) > 255) return "a display_name over 255 bytes: a cluster's MySQL column (VARCHAR(255)) refuses what the recording's sqlite kept";
  if (/<page_token:\d+>/.test(request) && !narrowed) return "pages through a listing of everything on the server";
  if (/\{\{[a-z]\*12[789]\}\}|name=(%E6%97%A5){40}/.test(request)) return "a name at a length limit cannot take the run prefix";
  if (/denied@example\.com|kubeflow-userid|x-goog-authenticated|Bearer <token>/.test(request)) return "identity is decided by the cluster's gateway and RBAC, not by the recorder's fake authorizer";
  if (/proto:\s\(line \d+:\d+\)/.test(body)) return "the message names a column, which the run prefix moves";
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------

/** Which mode the server at KFP_TEST_HOST runs in decides which cases can run there at all. */
const REMOTE_MULTI_USER = REMOTE_HOST
  ? ((await fetch(`${REMOTE_HOST}/apis/v2beta1/healthz`).then((r) => r.json())) as Json).multi_user === true
  : false;

for (const mode of Object.keys(MODES) as Mode[]) {
  describe(`KFP API server 2.17.0 contract, ${mode}`, () => {
    let target: KfpTarget;
    const ids = new Placeholders();
    // Against a shared server every name this replay creates gets a prefix unique to the run (in requests
    // and in the recording alike), so earlier runs and other users' pipelines never collide with it.
    const run = REMOTE_HOST ? `r${Date.now().toString(36)}` : "";
    const prefix = (s: string) => (run ? s.replace(/(contract)(-|%20| )/gi, `$1-${run}-$2`) : s);

    beforeAll(async () => {
      target = await kfpTarget(MODES[mode]);
    });
    afterAll(async () => {
      // On a real cluster an enabled schedule would start runs: take away the ones this replay made.
      if (target?.remote) {
        const headers: Record<string, string> = target.token ? { authorization: `Bearer ${target.token}` } : {};
        for (const id of ids.values("recurring_run_id")) await fetch(`${target.url}/apis/v2beta1/recurringruns/${id}`, { method: "DELETE", headers }).catch(() => {});
      }
      await target?.stop();
    });

    for (const c of CASES.filter((x) => x.mode === mode)) {
      const why = REMOTE_HOST ? remoteSkip(c, REMOTE_MULTI_USER) : undefined;
      if (why) skipReason(c.name, why);
      test.skipIf(why !== undefined)(c.name, async () => {
        await setUp(target, c, prefix);
        let answer: Answer;
        try {
          answer = await send(target, c, ids, prefix);
        } catch (e) {
          if (target.remote && /never learned/.test(String(e))) return skipReason(c.name, `builds on a skipped case (${(e as Error).message})`);
          throw e;
        }
        const parsed = (() => {
          try {
            return JSON.parse(answer.text);
          } catch {
            return answer.text;
          }
        })();
        const substitute = NOT_REPRODUCED[c.name];
        const want = substitute ? { ...c.response, status: substitute.instead.status, content_type: "application/json", body: substitute.instead.body } : c.response;
        // The run prefix renames what the requests name, never the uploaded specs' contents.
        const expected = mapStrings(want.body, (s) => protoSpace(prefix(expand(s))), undefined, "pipeline_spec");
        const cut = want.body_cut ? cutLike(expected, parsed) : parsed;
        if (target.remote) ids.bind(expected, cut);
        else ids.learn(cut);
        const got = normalise(cut, ids);
        const shown = `${c.name} (${c.shows})`;
        expect({ status: answer.status, content_type: answer.contentType }, shown).toEqual({ status: want.status!, content_type: want.content_type! });
        expect(comparable(c.compare, got), shown).toEqual(comparable(c.compare, expected));
        if (want.body_text && !target.remote) {
          // body_text keeps the server's own formatting: numbers as written (1e-8, 0.0001, 15) and key order.
          const tokens = (text: string) => ({
            keys: [...text.matchAll(/"((?:[^"\\]|\\.)*)"\s*:/g)].map((m) => m[1]),
            numbers: [...text.matchAll(/"\s*:\s*(-?\d[\d.eE+-]*)\s*[,}\]]/g)].map((m) => m[1]),
          });
          expect(tokens(answer.text), `${shown}: number formatting and key order`).toEqual(tokens(want.body_text));
        }
        if (want.page_token_decoded) {
          const token = isObject(parsed) ? parsed.next_page_token : undefined;
          const decoded = JSON.parse(Buffer.from(String(token), "base64").toString("utf8"));
          if (typeof decoded.SortByFieldValue === "number" && decoded.SortByFieldName === "CreatedAtInSec") decoded.SortByFieldValue = "<unix_seconds>";
          const expectedToken = mapStrings(want.page_token_decoded, (s) => prefix(expand(s)));
          expect(comparable(c.compare, normalise(decoded, ids)), `${shown}: decoded page token`).toEqual(comparable(c.compare, expectedToken));
        }
      }, 120_000);
    }
  });
}
