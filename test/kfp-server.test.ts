// The fake KFP server, driven over HTTP the way kfp-sync drives a real one.
import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { startKfpServer, type KfpServer } from "./kfp-server.ts";
import { withServer } from "./with-server.ts";

/** The IR the kfp 2.17 compiler emits, trimmed to one component. */
function ir(name: string, extra: { schemaVersion?: string; root?: boolean } = {}): string {
  return [
    "components:\n  comp-hello:\n    executorLabel: exec-hello",
    "deploymentSpec:\n  executors:\n    exec-hello:\n      container:\n        image: python:3.11",
    `pipelineInfo:\n  name: ${name}`,
    extra.root === false ? "" : "root:\n  dag:\n    tasks:\n      hello:\n        componentRef:\n          name: comp-hello\n        taskInfo:\n          name: hello",
    `schemaVersion: ${extra.schemaVersion ?? "2.1.0"}`,
    "sdkVersion: kfp-2.17.3",
  ].join("\n");
}

/** Response bodies are asserted field by field, so they stay untyped here. */
type Body = any;

const PLATFORM_SPEC = "platforms:\n  kubernetes:\n    deploymentSpec:\n      executors:\n        exec-hello:\n          nodeSelector:\n            labels:\n              pool: cpu";

async function upload(
  kfp: KfpServer, route: "upload" | "upload_version", file: string, query: Record<string, string>,
  filename = "pipeline.yaml", headers: Record<string, string> = {},
) {
  const form = new FormData();
  form.append("uploadfile", new File([file], filename));
  const res = await fetch(`${kfp.url}/apis/v2beta1/pipelines/${route}?${new URLSearchParams(query)}`, { method: "POST", body: form, headers });
  const text = await res.text();
  return { status: res.status, type: res.headers.get("content-type"), text, body: tryParse(text) };
}

async function call(kfp: KfpServer, path: string, init: RequestInit = {}) {
  const res = await fetch(`${kfp.url}/apis/v2beta1/${path}`, init);
  return { status: res.status, body: tryParse(await res.text()) };
}

function tryParse(text: string): Body {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const filterParam = (predicates: unknown[]) => encodeURIComponent(JSON.stringify({ predicates }));

describe("single-user server", () => {
  let kfp: KfpServer;
  beforeEach(async () => {
    kfp ??= await startKfpServer();
    kfp.reset();
  });
  afterAll(() => kfp.stop());

  test("healthz reports the release and mode", async () => {
    const res = await fetch(`${kfp.url}/apis/v2beta1/healthz`);
    // json.Marshal of a struct, as the 2.17.0 release writes it: no spaces, the release's commit.
    expect(await res.text()).toBe('{"commit_sha":"4a3592cb2dd0a91a4652ab93893ec8beda1f3158","tag_name":"2.17.0","multi_user":false,"pipeline_store":"database"}');
    expect(await (await fetch(`${kfp.url}/apis/v1beta1/healthz`)).json()).toEqual({ commit_sha: "4a3592cb2dd0a91a4652ab93893ec8beda1f3158", tag_name: "2.17.0", multi_user: false });
  });

  test("upload creates a pipeline and a first version of the same name", async () => {
    const res = await upload(kfp, "upload", ir("hello-pipeline"), { name: "hello", description: "says hi" });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ name: "hello", display_name: "hello", description: "says hi" });
    expect(res.body.pipeline_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.body.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/); // whole seconds
    expect(res.body.namespace).toBeUndefined(); // single-user: empty fields are left out
    const versions = await call(kfp, `pipelines/${res.body.pipeline_id}/versions`);
    expect(versions.body.total_size).toBe(1);
    expect(versions.body.pipeline_versions[0]).toMatchObject({ name: "hello", display_name: "hello", pipeline_id: res.body.pipeline_id });
    expect(versions.body.pipeline_versions[0].pipeline_spec.pipelineInfo.name).toBe("hello-pipeline");
    expect(kfp.requests[0]).toMatchObject({ method: "POST", path: "/apis/v2beta1/pipelines/upload", filename: "pipeline.yaml", status: 200 });
    expect(kfp.requests[0]!.body).toContain("hello-pipeline");
  });

  test("the name defaults to display_name, then to the uploaded file's name", async () => {
    expect((await upload(kfp, "upload", ir("a"), { display_name: "Shown Name" })).body).toMatchObject({ name: "Shown Name", display_name: "Shown Name" });
    expect((await upload(kfp, "upload", ir("a"), {}, "train.yaml")).body).toMatchObject({ name: "train.yaml", display_name: "train.yaml" });
  });

  test("a duplicate pipeline name is 409 in the upload error shape", async () => {
    await upload(kfp, "upload", ir("p"), { name: "dup" });
    const res = await upload(kfp, "upload", ir("p"), { name: "dup" });
    expect(res.status).toBe(409);
    expect(res.body.error_message).toBe("Failed to create a pipeline and a pipeline version");
    expect(res.body.error_details).toStartWith("Failed to create a pipeline and a pipeline version\n");
  });

  test("upload_version adds a version; a duplicate version name is 409", async () => {
    const pipeline = (await upload(kfp, "upload", ir("p"), { name: "p" })).body;
    const version = await upload(kfp, "upload_version", ir("p"), { pipelineid: pipeline.pipeline_id, name: "v2" });
    expect(version.status).toBe(200);
    expect(version.body).toMatchObject({ pipeline_id: pipeline.pipeline_id, name: "v2", display_name: "v2" });
    const again = await upload(kfp, "upload_version", ir("p"), { pipelineid: pipeline.pipeline_id, name: "v2" });
    expect(again.status).toBe(409);
    expect(again.body.error_message).toBe("Failed to create a pipeline version");
    const fetched = await call(kfp, `pipelines/${pipeline.pipeline_id}/versions/${version.body.pipeline_version_id}`);
    expect(fetched.body.pipeline_version_id).toBe(version.body.pipeline_version_id);
  });

  test("upload_version to an unknown or missing pipelineid is 400", async () => {
    const queries: Record<string, string>[] = [{ pipelineid: crypto.randomUUID(), name: "v" }, { name: "v" }];
    for (const query of queries) {
      const res = await upload(kfp, "upload_version", ir("p"), query);
      expect(res.status).toBe(400);
      expect(res.type).toBe("text/plain; charset=utf-8"); // Go sniffs the JSON body written before Content-Type is set
      expect(res.body.error_message).toBe("Failed to create a pipeline version");
    }
  });

  test("lookups of missing things are 404 in the gateway shape", async () => {
    const byName = await call(kfp, "pipelines/names/nope");
    expect(byName.status).toBe(404);
    expect(byName.body.code).toBe(5);
    expect(byName.body.message).toEndWith("ResourceNotFoundError: Namespace/Pipeline /nope not found");
    expect(byName.body.details).toEqual([{ "@type": "type.googleapis.com/google.rpc.Status", code: 5, message: "Namespace/Pipeline /nope not found" }]);
    expect((await call(kfp, `pipelines/${crypto.randomUUID()}`)).status).toBe(404);
    expect((await call(kfp, `pipelines/${crypto.randomUUID()}/versions`)).status).toBe(404);
  });

  test("get by name finds an uploaded pipeline", async () => {
    await upload(kfp, "upload", ir("p"), { name: "findme" });
    expect((await call(kfp, "pipelines/names/findme")).body.name).toBe("findme");
  });

  test("lists page with next_page_token and count every match in total_size", async () => {
    for (const name of ["a", "b", "c", "d", "e"]) await upload(kfp, "upload", ir("p"), { name });
    const seen: string[] = [];
    let token = "";
    do {
      const page = await call(kfp, `pipelines?page_size=2&sort_by=name${token ? `&page_token=${encodeURIComponent(token)}` : ""}`);
      expect(page.body.total_size).toBe(5);
      seen.push(...page.body.pipelines.map((p: { name: string }) => p.name));
      token = page.body.next_page_token ?? "";
    } while (token);
    expect(seen).toEqual(["a", "b", "c", "d", "e"]);
    const capped = await call(kfp, "pipelines?page_size=1000");
    expect(capped.body.pipelines).toHaveLength(5);
  });

  test("created_at has whole seconds: sort_by created_at desc is newest first, same-second ties by id, descending too", async () => {
    for (const name of ["old", "mid", "new"]) await upload(kfp, "upload", ir("p"), { name });
    const res = await call(kfp, `pipelines?sort_by=${encodeURIComponent("created_at desc")}`);
    type Listed = { name: string; created_at: string; pipeline_id: string };
    const listed: Listed[] = res.body.pipelines;
    for (const p of listed) expect(p.created_at).toMatch(/:\d\dZ$/);
    const byTimeThenId = [...listed].sort((a, b) => (b.created_at === a.created_at ? (b.pipeline_id < a.pipeline_id ? -1 : 1) : b.created_at < a.created_at ? -1 : 1));
    expect(listed.map((p) => p.name)).toEqual(byTimeThenId.map((p) => p.name));
    expect((await call(kfp, "pipelines?sort_by=bogus")).status).toBe(400);
  });

  test("filters by name with EQUALS, NOT_EQUALS, IN and IS_SUBSTRING", async () => {
    for (const name of ["train", "serve", "train-big"]) await upload(kfp, "upload", ir("p"), { name });
    const names = async (predicates: unknown[]) =>
      (await call(kfp, `pipelines?filter=${filterParam(predicates)}`)).body.pipelines?.map((p: { name: string }) => p.name) ?? [];
    expect(await names([{ key: "name", operation: "EQUALS", string_value: "train" }])).toEqual(["train"]);
    // Uploads of one second come back in random id order, as on the real server: compare as sets.
    expect((await names([{ key: "name", operation: "NOT_EQUALS", stringValue: "train" }])).sort()).toEqual(["serve", "train-big"]);
    expect(await names([{ key: "name", operation: "IN", string_values: { values: ["serve", "x"] } }])).toEqual(["serve"]);
    expect((await names([{ key: "name", operation: "IS_SUBSTRING", string_value: "rain" }])).sort()).toEqual(["train", "train-big"]);
    expect(await names([{ key: "name", operation: "EQUALS", string_value: "none" }])).toEqual([]);
  });

  test("a filter the v2beta1 proto does not know is 400", async () => {
    const legacyOp = await call(kfp, `pipelines?filter=${filterParam([{ key: "name", op: "EQUALS", string_value: "x" }])}`);
    expect(legacyOp.status).toBe(400);
    expect(legacyOp.body.message).toContain('unknown field "op"');
    const badKey = await call(kfp, `pipelines?filter=${filterParam([{ key: "color", operation: "EQUALS", string_value: "x" }])}`);
    expect(badKey.body.message).toContain('no support for filtering on unrecognized field "color"');
  });

  test("an empty list is an empty object", async () => {
    expect(await call(kfp, "pipelines")).toEqual({ status: 200, body: {} });
  });

  test("a file over 32 MiB is rejected", async () => {
    const big = ir("p") + "\n#" + "x".repeat(32 * 1024 * 1024);
    const res = await upload(kfp, "upload", big, { name: "big" });
    expect(res.status).toBe(400);
    expect(res.body.error_message).toBe("Failed to read a pipeline spec file");
  });

  test("the file name must end in .yaml, .yml or .json (the IR as JSON is accepted)", async () => {
    const refused = await upload(kfp, "upload", ir("p"), { name: "x" }, "pipeline.txt");
    expect(refused.status).toBe(400);
    expect(refused.body.error_message).toBe("Failed to read a pipeline spec file");
    const asJson = JSON.stringify({ pipelineInfo: { name: "p" }, root: { dag: {} }, schemaVersion: "2.1.0", sdkVersion: "kfp-2.17.3" });
    expect((await upload(kfp, "upload", asJson, { name: "y" }, "pipeline.json")).status).toBe(200);
  });

  test("invalid IR is 400 with the server's own message", async () => {
    const cases: [string, string][] = [
      [ir("p", { schemaVersion: "2.0.0" }), "KFP only supports schema version 2.1.0, but the pipeline spec has version 2.0.0"],
      [ir("p", { root: false }), "unknown template format"],
      [ir("", {}), "unknown template format"],
      ["not: [valid", "unknown template format"],
      [ir("Bad_Name"), "pipeline's name must contain only lowercase alphanumeric characters or '-' and must start with alphanumeric characters"],
      [`${ir("p")}\n---\n${ir("q")}`, "multiple pipeline specs provided"],
    ];
    for (const [file, message] of cases) {
      const res = await upload(kfp, "upload", file, { name: crypto.randomUUID() });
      expect(res.status).toBe(400);
      expect(res.body.error_message).toBe(message);
    }
    expect(kfp.state().pipelines).toHaveLength(0);
  });

  test("a platform spec document is returned beside the pipeline spec", async () => {
    const pipeline = (await upload(kfp, "upload", `${ir("p")}\n---\n${PLATFORM_SPEC}`, { name: "with-platform" })).body;
    const [version] = (await call(kfp, `pipelines/${pipeline.pipeline_id}/versions`)).body.pipeline_versions;
    expect(version.pipeline_spec.pipeline_spec.pipelineInfo.name).toBe("p");
    expect(version.pipeline_spec.platform_spec.platforms.kubernetes).toBeDefined();
  });

  test("a pipeline with versions cannot be deleted unless cascade=true", async () => {
    const pipeline = (await upload(kfp, "upload", ir("p"), { name: "p" })).body;
    const refused = await call(kfp, `pipelines/${pipeline.pipeline_id}`, { method: "DELETE" });
    expect(refused.status).toBe(400);
    expect(refused.body.details[0].message).toContain("as it has existing pipeline versions");
    expect((await call(kfp, `pipelines/${pipeline.pipeline_id}?cascade=true`, { method: "DELETE" })).status).toBe(200);
    expect(kfp.state()).toEqual({ pipelines: [], versions: [] });
  });

  test("POST pipelines creates an empty pipeline; its name must be unique", async () => {
    const init = { method: "POST", body: JSON.stringify({ display_name: "empty" }) };
    const created = await call(kfp, "pipelines", init);
    expect(created.body).toMatchObject({ name: "empty", display_name: "empty" });
    const again = await call(kfp, "pipelines", init);
    expect(again.status).toBe(409);
    expect(again.body.code).toBe(6);
  });

  test("JSON routes create a pipeline and versions from package_url", async () => {
    const files = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response(ir("from-url")) });
    try {
      const specUrl = `http://127.0.0.1:${files.port}/specs/train.yaml`;
      const post = (path: string, body: unknown) => call(kfp, path, { method: "POST", body: JSON.stringify(body) });
      const created = await post("pipelines/create", { pipeline: {}, pipeline_version: { package_url: { pipeline_url: specUrl } } });
      expect(created.body).toMatchObject({ name: "train.yaml", display_name: "train.yaml" });
      const id = created.body.pipeline_id;
      const noParent = await post(`pipelines/${id}/versions`, { name: "v2", package_url: { pipeline_url: specUrl } });
      expect(noParent.body.details[0].message).toBe("Failed to create a pipeline version. Parent pipeline id is empty");
      const version = await post(`pipelines/${id}/versions`, { pipeline_id: id, name: "v2", package_url: { pipeline_url: specUrl } });
      expect(version.body).toMatchObject({ name: "v2", package_url: { pipeline_url: specUrl } });
      expect((await call(kfp, `pipelines/${id}/versions`)).body.total_size).toBe(2);
    } finally {
      files.stop(true);
    }
  });

  test("a page token keeps its own sort and filter", async () => {
    for (const name of ["a", "b", "c"]) await upload(kfp, "upload", ir("p"), { name });
    const first = await call(kfp, `pipelines?page_size=1&sort_by=${encodeURIComponent("name desc")}`);
    const token = encodeURIComponent(first.body.next_page_token);
    expect((await call(kfp, `pipelines?page_size=1&page_token=${token}`)).body.pipelines[0].name).toBe("b");
    const mismatch = await call(kfp, `pipelines?page_size=1&page_token=${token}&sort_by=name`);
    expect(mismatch.status).toBe(400);
    expect((await call(kfp, "pipelines?page_token=garbage")).status).toBe(400);
  });

  test("failNext makes matching requests fail, then lets them through", async () => {
    kfp.failNext(/ \/apis\/v2beta1\/pipelines$/, 503, 2);
    expect((await call(kfp, "pipelines")).status).toBe(503);
    expect((await call(kfp, "pipelines")).body).toEqual({ code: 14, message: "Service Unavailable" });
    expect((await call(kfp, "pipelines")).status).toBe(200);
    kfp.failNext(/upload$/, 500, 1, "boom");
    expect((await upload(kfp, "upload", ir("p"), { name: "p" })).text).toBe("boom");
    expect(kfp.requests.map((r) => r.status)).toEqual([503, 503, 200, 500]);
  });
});

describe("multi-user server", () => {
  let kfp: KfpServer;
  afterAll(() => kfp.stop());

  test("with REQUIRE_NAMESPACE_FOR_PIPELINES, namespace is required and scopes pipelines", async () => {
    kfp = await startKfpServer({ multiUser: true, requireNamespace: true });
    const alice = { "kubeflow-userid": "alice@example.com" };
    const noNamespace = await upload(kfp, "upload", ir("p"), { name: "p" });
    expect(noNamespace.status).toBe(400);
    expect(noNamespace.text).toBe("Invalid input error: Namespace is required for pipeline operations\n");
    const list = await call(kfp, "pipelines");
    expect(list.status).toBe(400);
    expect(list.body).toMatchObject({ code: 3 });
    expect(list.body.message).toEndWith("Namespace is required for pipeline operations");
    expect((await call(kfp, "pipelines/names/p")).status).toBe(400);

    const created = await upload(kfp, "upload", ir("p"), { name: "p", namespace: "team-a" }, "pipeline.yaml", alice);
    expect(created.body.namespace).toBe("team-a");
    expect((await upload(kfp, "upload", ir("p"), { name: "p", namespace: "team-b" }, "pipeline.yaml", alice)).status).toBe(200);
    expect((await call(kfp, "pipelines?namespace=team-a", { headers: alice })).body.total_size).toBe(1);
    expect((await call(kfp, "pipelines/names/p?namespace=team-b", { headers: alice })).body.namespace).toBe("team-b");
    expect((await call(kfp, "healthz")).body.multi_user).toBe(true);
  });

  test("stock configuration: a pipeline without a namespace is shared, a namespaced one needs an identity", async () => {
    await withServer(startKfpServer({ multiUser: true, deniedUsers: ["mallory@example.com"] }), async (stock) => {
      const shared = await upload(stock, "upload", ir("p"), { name: "shared" });
      expect(shared.status).toBe(200);
      expect(shared.body.namespace).toBeUndefined();
      // No identity, or a refused one: the upload routes fold both into their generic 400.
      for (const headers of [{}, { "kubeflow-userid": "mallory@example.com" }] as Record<string, string>[]) {
        const refused = await upload(stock, "upload", ir("p"), { name: "mine", namespace: "team-a" }, "pipeline.yaml", headers);
        expect(refused.status).toBe(400);
        expect(refused.body.error_message).toBe("Failed to create a pipeline");
      }
      // The gateway routes say which: 401 without an identity, 403 for a refused one.
      const anonymous = await call(stock, "pipelines?namespace=team-a");
      expect(anonymous.status).toBe(401);
      expect(anonymous.body.details[0].message).toBe("Failed to check authorization. User identity is empty in the request header");
      const mallory = await call(stock, "pipelines?namespace=team-a", { headers: { "kubeflow-userid": "mallory@example.com" } });
      expect(mallory.status).toBe(403);
      expect(mallory.body.details[0].message).toStartWith("User 'mallory@example.com' is not authorized");
      const mine = await upload(stock, "upload", ir("p"), { name: "mine", namespace: "team-a" }, "pipeline.yaml", { "kubeflow-userid": "alice@example.com" });
      expect(mine.body.namespace).toBe("team-a");
      // A bearer token stands for an identity too (TokenReview).
      expect((await call(stock, "pipelines?namespace=team-a", { headers: { authorization: "Bearer any" } })).body.total_size).toBe(1);
    });
  });
});

describe("server behind a bearer token", () => {
  let kfp: KfpServer;
  afterAll(() => kfp.stop());

  test("requests without the token are 401 in each route's error shape", async () => {
    kfp = await startKfpServer({ token: "s3cret" });
    const gateway = await call(kfp, "pipelines");
    expect(gateway.status).toBe(401);
    expect(gateway.body.code).toBe(16);
    const uploaded = await upload(kfp, "upload", ir("p"), { name: "p" }, "p.yaml", { authorization: "Bearer wrong" });
    expect(uploaded.status).toBe(401);
    expect(uploaded.body.error_message).toBeString();
    const ok = await upload(kfp, "upload", ir("p"), { name: "p" }, "p.yaml", { authorization: "Bearer s3cret" });
    expect(ok.status).toBe(200);
  });
});

describe("command line", () => {
  test("serves until killed and logs each request to stderr", async () => {
    const child = Bun.spawn([process.execPath, `${import.meta.dir}/kfp-server.ts`, "--port", "0", "--multi-user"], { stderr: "pipe" });
    try {
      const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
      const { value: banner } = await lines.read();
      const url = banner?.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/)?.[1];
      expect(url).toBeString();
      expect(await fetch(`${url}/apis/v2beta1/healthz`).then((r) => r.json())).toMatchObject({ multi_user: true });
      expect((await lines.read()).value).toBe("GET /apis/v2beta1/healthz 200\n");
    } finally {
      child.kill();
    }
  });
});

test("a filter operation sent as its enum number (as kfp.Client does) is accepted", async () => {
  await withServer(startKfpServer(), async (server) => {
    const filter = JSON.stringify({ predicates: [{ operation: 1, key: "display_name", stringValue: "nothing-here" }] });
    const res = await fetch(`${server.url}/apis/v2beta1/pipelines?filter=${encodeURIComponent(filter)}`);
    expect(res.status).toBe(200);
  });
});
