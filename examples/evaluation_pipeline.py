"""Model evaluation with a quality gate.

Loads a Hugging Face classification model and an evaluation split, computes
accuracy / macro-F1, publishes them as KFP Metrics and only promotes the model
(tags it in the MLflow model registry) when accuracy clears the threshold.
"""
from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

TRANSFORMERS_IMAGE = "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime"


@dsl.component(base_image="python:3.11-slim", packages_to_install=["datasets==2.20.0"])
def load_eval_dataset(dataset_name: str, split: str, max_samples: int, eval_data: Output[Dataset]):
    """Materialise the evaluation split as JSON lines (text, label)."""
    from datasets import load_dataset

    ds = load_dataset(dataset_name, split=split)
    if max_samples > 0:
        ds = ds.select(range(min(max_samples, len(ds))))
    ds.to_json(eval_data.path, lines=True)
    eval_data.metadata.update({"dataset": dataset_name, "split": split, "rows": len(ds)})


@dsl.component(base_image=TRANSFORMERS_IMAGE, packages_to_install=["transformers==4.44.2", "scikit-learn==1.5.1"])
def evaluate_model(model_uri: str, eval_data: Input[Dataset], metrics: Output[Metrics], batch_size: int = 32) -> float:
    """Run the classifier over the split; returns accuracy."""
    import json

    from sklearn.metrics import accuracy_score, f1_score
    from transformers import pipeline

    rows = [json.loads(line) for line in open(eval_data.path)]
    clf = pipeline("text-classification", model=model_uri, device_map="auto")
    preds = clf([r["text"] for r in rows], batch_size=batch_size, truncation=True)
    label2id = clf.model.config.label2id
    y_pred = [label2id[p["label"]] for p in preds]
    y_true = [r["label"] for r in rows]

    accuracy = float(accuracy_score(y_true, y_pred))
    metrics.log_metric("accuracy", accuracy)
    metrics.log_metric("f1_macro", float(f1_score(y_true, y_pred, average="macro")))
    metrics.log_metric("samples", len(rows))
    return accuracy


@dsl.component(base_image="python:3.11-slim", packages_to_install=["mlflow-skinny==2.14.3"])
def promote_model(tracking_uri: str, registered_model: str, model_uri: str, accuracy: float):
    """Register the evaluated model and move the 'champion' alias to it."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    version = mlflow.register_model(model_uri, registered_model)
    client = MlflowClient()
    client.set_model_version_tag(registered_model, version.version, "eval_accuracy", str(accuracy))
    client.set_registered_model_alias(registered_model, "champion", version.version)


@dsl.component(base_image="python:3.11-slim")
def report_rejection(model_uri: str, accuracy: float, threshold: float):
    """Leave a readable trace in the logs when the gate fails."""
    print(f"NOT promoting {model_uri}: accuracy {accuracy:.4f} < threshold {threshold:.4f}")


@dsl.pipeline(name="model-evaluation", description="Evaluate a classifier on a dataset split and promote it if accuracy clears the threshold.")
def model_evaluation(
    model_uri: str = "distilbert-base-uncased-finetuned-sst-2-english",
    dataset_name: str = "stanfordnlp/sst2",
    split: str = "validation",
    max_samples: int = 2000,
    accuracy_threshold: float = 0.85,
    registered_model: str = "sentiment-classifier",
    mlflow_tracking_uri: str = "http://mlflow.mlflow.svc.cluster.local:5000",
):
    data = load_eval_dataset(dataset_name=dataset_name, split=split, max_samples=max_samples)
    evaluation = evaluate_model(model_uri=model_uri, eval_data=data.outputs["eval_data"])
    evaluation.set_cpu_limit("4").set_memory_limit("16G")
    evaluation.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)

    with dsl.If(evaluation.outputs["Output"] >= accuracy_threshold, name="accuracy-gate-passed"):
        promote_model(
            tracking_uri=mlflow_tracking_uri,
            registered_model=registered_model,
            model_uri=model_uri,
            accuracy=evaluation.outputs["Output"],
        )
    with dsl.Else(name="accuracy-gate-failed"):
        report_rejection(model_uri=model_uri, accuracy=evaluation.outputs["Output"], threshold=accuracy_threshold)
