/**
 * Writes N small, realistic pipelines (gen_000_pipeline.py …) into a folder, the same bytes on every run.
 * Each has 2-4 container components chained by artifacts, pipeline parameters with defaults, a unique
 * pipeline name, and imports only kfp. No multi-key dict defaults: kfp writes their keys in random order.
 *
 *   bun bench/generate.ts [N=50] [DIR=bench/out/pipelines]
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** mulberry32: a tiny seeded PRNG, so pipeline i is the same on every machine. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const TOPICS = ["churn", "fraud", "demand", "pricing", "ranking", "sentiment", "forecast", "anomaly", "recsys", "ocr", "ctr", "ltv"];
const DATASETS = ["events", "orders", "sessions", "invoices", "clicks", "tickets", "reviews", "sensors"];

interface Param { name: string; type: "str" | "int" | "float" | "bool"; value: string }

/** One stage: its component source and the call that wires it into the pipeline. */
interface Stage { component: string; call: string; params: Param[] }

type Pick = <T>(items: T[]) => T;

function extract(pick: Pick, topic: string, tag: string): Stage {
  const dataset = pick(DATASETS);
  return {
    params: [
      { name: "source_uri", type: "str", value: `"s3://acme-lake/${topic}/${dataset}/"` },
      { name: "since", type: "str", value: `"2025-0${1 + DATASETS.indexOf(dataset)}-01"` },
      { name: "row_limit", type: "int", value: String(pick([10_000, 50_000, 250_000, 1_000_000])) },
    ],
    component: `@dsl.container_component
def extract(source_uri: str, since: str, row_limit: int, raw: Output[Dataset]):
    """Read ${dataset} from the lake into one Parquet file."""
    return dsl.ContainerSpec(
        image="ghcr.io/acme/ml-etl:${tag}",
        command=["python", "-m", "etl.extract"],
        args=["--source", source_uri, "--since", since, "--limit", row_limit, "--out", raw.path],
    )`,
    call: `    raw = extract(source_uri=source_uri, since=since, row_limit=row_limit)
    raw.set_retry(num_retries=${pick([2, 3])}).set_cpu_limit("1").set_memory_limit("${pick(["2G", "4G"])}")`,
  };
}

function validate(pick: Pick, _topic: string, tag: string): Stage {
  return {
    params: [{ name: "max_null_fraction", type: "float", value: String(pick([0.01, 0.02, 0.05])) }],
    component: `@dsl.container_component
def validate(data: Input[Dataset], max_null_fraction: float, report: Output[Artifact]):
    """Fail the run when a column has too many nulls; write the profile."""
    return dsl.ContainerSpec(
        image="ghcr.io/acme/ml-etl:${tag}",
        command=["python", "-m", "etl.validate"],
        args=["--data", data.path, "--max-null-fraction", max_null_fraction, "--report", report.path],
    )`,
    call: `    validate(data=raw.outputs["raw"], max_null_fraction=max_null_fraction)`,
  };
}

function features(pick: Pick, topic: string, tag: string): Stage {
  return {
    params: [{ name: "window_days", type: "int", value: String(pick([7, 14, 28, 90])) }],
    component: `@dsl.container_component
def build_features(raw: Input[Dataset], window_days: int, features: Output[Dataset]):
    """Rolling ${topic} features over the last window_days."""
    return dsl.ContainerSpec(
        image="ghcr.io/acme/ml-features:${tag}",
        command=["python", "-m", "features.build"],
        args=["--raw", raw.path, "--window-days", window_days, "--out", features.path],
    )`,
    call: `    feats = build_features(raw=raw.outputs["raw"], window_days=window_days)
    feats.set_cpu_limit("2").set_memory_limit("8G")`,
  };
}

function train(pick: Pick, topic: string, _tag: string, input: string): Stage {
  const image = pick(["ghcr.io/acme/trainer-xgb:2.1.0", "ghcr.io/acme/trainer-torch:1.9.4", "ghcr.io/acme/trainer-lgbm:4.3.0"]);
  return {
    params: [
      { name: "learning_rate", type: "float", value: String(pick([0.001, 0.003, 0.01, 0.05])) },
      { name: "epochs", type: "int", value: String(pick([5, 10, 20])) },
      { name: "early_stopping", type: "bool", value: pick(["True", "False"]) },
    ],
    component: `@dsl.container_component
def train(data: Input[Dataset], learning_rate: float, epochs: int, early_stopping: bool, model: Output[Model], metrics: Output[Metrics]):
    """Fit the ${topic} model; write the model and its validation metrics."""
    return dsl.ContainerSpec(
        image="${image}",
        command=["python", "-m", "trainer.fit"],
        args=["--data", data.path, "--lr", learning_rate, "--epochs", epochs, "--early-stopping", early_stopping,
              "--model", model.path, "--metrics", metrics.path],
    )`,
    call: `    trained = train(data=${input}, learning_rate=learning_rate, epochs=epochs, early_stopping=early_stopping)
    trained.set_cpu_limit("4").set_memory_limit("16G")${pick([true, false]) ? '.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)' : ""}`,
  };
}

function publish(pick: Pick, topic: string, tag: string): Stage {
  return {
    params: [{ name: "registry_uri", type: "str", value: `"http://mlflow.mlflow.svc.cluster.local:5000"` }, { name: "alias", type: "str", value: `"${pick(["staging", "candidate", "champion"])}"` }],
    component: `@dsl.container_component
def publish(model: Input[Model], registry_uri: str, alias: str):
    """Register the model as ${topic}-model and point the alias at it."""
    return dsl.ContainerSpec(
        image="ghcr.io/acme/ml-registry:${tag}",
        command=["python", "-m", "registry.publish"],
        args=["--model", model.path, "--registry", registry_uri, "--name", "${topic}-model", "--alias", alias],
    )`,
    call: `    publish(model=trained.outputs["model"], registry_uri=registry_uri, alias=alias).set_caching_options(False)`,
  };
}

/** The source of pipeline i: extract, then 1-3 of validate / features / train / publish, in that order. */
export function pipelineSource(i: number): { file: string; name: string; source: string } {
  const rand = random(i + 1);
  const pick: Pick = (items) => items[Math.floor(rand() * items.length)]!;
  const topic = TOPICS[i % TOPICS.length]!;
  const tag = `1.${Math.floor(rand() * 9)}.${Math.floor(rand() * 20)}`;
  const id = String(i).padStart(3, "0");
  const name = `gen-${id}-${topic}-${pick(["training", "refresh", "retrain", "scoring"])}`;

  const stages = [extract(pick, topic, tag)];
  const extra = 1 + Math.floor(rand() * 3); // 1-3 more: 2-4 components in all
  if (extra >= 2 || rand() < 0.5) stages.push(validate(pick, topic, tag));
  const withFeatures = extra >= 2 && rand() < 0.6;
  if (withFeatures) stages.push(features(pick, topic, tag));
  if (stages.length < extra + 1) stages.push(train(pick, topic, tag, withFeatures ? 'feats.outputs["features"]' : 'raw.outputs["raw"]'));
  if (stages.length < extra + 1) stages.push(publish(pick, topic, tag));

  const params = stages.flatMap((s) => s.params);
  const source = `"""${topic} ${name.split("-").pop()} (generated by bench/generate.ts, #${id})."""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output


${stages.map((s) => s.component).join("\n\n\n")}


@dsl.pipeline(name="${name}", description="Generated ${topic} pipeline #${id} for the kfp-sync benchmarks.")
def ${name.replaceAll("-", "_")}(
${params.map((p) => `    ${p.name}: ${p.type} = ${p.value},`).join("\n")}
):
${stages.map((s) => s.call).join("\n")}
`;
  return { file: `gen_${id}_pipeline.py`, name, source };
}

/** Writes gen_000_pipeline.py … into dir (emptied first); returns the paths. */
export function generate(n: number, dir: string): string[] {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return Array.from({ length: n }, (_, i) => {
    const { file, source } = pipelineSource(i);
    fs.writeFileSync(path.join(dir, file), source);
    return path.join(dir, file);
  });
}

if (import.meta.main) {
  const n = Number(process.argv[2] ?? 50);
  const dir = path.resolve(process.argv[3] ?? path.join(import.meta.dir, "out/pipelines"));
  generate(n, dir);
  process.stderr.write(`wrote ${n} pipelines to ${dir}\n`);
}
