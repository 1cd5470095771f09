"""QLoRA fine-tuning on a folder of PDFs.

Lists the PDFs under an S3 prefix, extracts their text, turns it into a
causal-LM training set, fine-tunes a 4-bit quantised base model with LoRA
adapters on one GPU, measures perplexity on a held-out split and pushes the
adapter to the Hugging Face Hub (or any HF-compatible registry).
"""
from kfp import dsl, kubernetes
from kfp.dsl import Dataset, Input, Metrics, Model, Output

TRAIN_IMAGE = "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime"
# S3 credentials come from a Kubernetes secret as environment variables (boto3 reads them there),
# never from pipeline parameters, which the UI shows to everyone.
S3_SECRET = "s3-credentials"
S3_SECRET_ENV = {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY"}
TRAIN_PACKAGES = ["transformers==4.44.2", "peft==0.12.0", "bitsandbytes==0.43.3", "datasets==2.20.0", "accelerate==0.33.0"]


@dsl.component(base_image="python:3.11-slim", packages_to_install=["boto3==1.34.149"])
def list_pdfs(bucket: str, prefix: str, endpoint_url: str) -> list:
    """Return the keys of every .pdf object under the prefix."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url or None)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].lower().endswith(".pdf")]
    if not keys:
        raise RuntimeError(f"no PDFs under s3://{bucket}/{prefix}")
    return sorted(keys)


@dsl.component(base_image="python:3.11-slim", packages_to_install=["boto3==1.34.149", "pypdf==4.3.1"])
def extract_text(bucket: str, keys: list, endpoint_url: str, texts: Output[Dataset]):
    """Download each PDF and write one JSON line per page with its text."""
    import io
    import json

    import boto3
    from pypdf import PdfReader

    s3 = boto3.client("s3", endpoint_url=endpoint_url or None)
    with open(texts.path, "w") as out:
        for key in keys:
            reader = PdfReader(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
            for n, page in enumerate(reader.pages):
                text = (page.extract_text() or "").strip()
                if text:
                    out.write(json.dumps({"source": key, "page": n, "text": text}) + "\n")


@dsl.component(base_image="python:3.11-slim", packages_to_install=["datasets==2.20.0"])
def build_dataset(texts: Input[Dataset], eval_fraction: float, train: Output[Dataset], test: Output[Dataset]):
    """Shuffle pages and split into train / test JSON-lines files."""
    from datasets import load_dataset

    ds = load_dataset("json", data_files=texts.path, split="train").shuffle(seed=42)
    parts = ds.train_test_split(test_size=eval_fraction, seed=42)
    parts["train"].to_json(train.path, lines=True)
    parts["test"].to_json(test.path, lines=True)


@dsl.component(base_image=TRAIN_IMAGE, packages_to_install=TRAIN_PACKAGES)
def qlora_finetune(base_model: str, train: Input[Dataset], adapter: Output[Model], lora_r: int = 16, epochs: int = 1, learning_rate: float = 2e-4):
    """4-bit NF4 QLoRA fine-tune; saves only the LoRA adapter weights."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForLanguageModeling,
                              Trainer, TrainingArguments)

    tok = AutoTokenizer.from_pretrained(base_model)
    tok.pad_token = tok.pad_token or tok.eos_token
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = prepare_model_for_kbit_training(AutoModelForCausalLM.from_pretrained(base_model, quantization_config=bnb, device_map="auto"))
    model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05, task_type="CAUSAL_LM", target_modules="all-linear"))
    data = load_dataset("json", data_files=train.path, split="train").map(
        lambda b: tok(b["text"], truncation=True, max_length=1024), batched=True, remove_columns=["source", "page", "text"])
    args = TrainingArguments(output_dir="/tmp/out", num_train_epochs=epochs, learning_rate=learning_rate, per_device_train_batch_size=4,
                             gradient_accumulation_steps=4, bf16=True, logging_steps=10, save_strategy="no", report_to=[])
    Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorForLanguageModeling(tok, mlm=False)).train()
    model.save_pretrained(adapter.path)
    tok.save_pretrained(adapter.path)
    adapter.metadata.update({"base_model": base_model, "lora_r": lora_r})


@dsl.component(base_image=TRAIN_IMAGE, packages_to_install=TRAIN_PACKAGES)
def evaluate_adapter(base_model: str, adapter: Input[Model], test: Input[Dataset], metrics: Output[Metrics]) -> float:
    """Perplexity of base model + adapter on the held-out pages."""
    import math

    import torch
    from datasets import load_dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter.path)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model, torch_dtype=torch.bfloat16, device_map="auto"), adapter.path).eval()
    losses = []
    for row in load_dataset("json", data_files=test.path, split="train"):
        ids = tok(row["text"], return_tensors="pt", truncation=True, max_length=1024).input_ids.to(model.device)
        with torch.no_grad():
            losses.append(model(ids, labels=ids).loss.item())
    ppl = math.exp(sum(losses) / max(len(losses), 1))
    metrics.log_metric("perplexity", ppl)
    return ppl


@dsl.component(base_image="python:3.11-slim", packages_to_install=["huggingface_hub==0.24.5"])
def push_adapter(adapter: Input[Model], repo_id: str, perplexity: float) -> str:
    """Upload the adapter folder to the Hub (HF_TOKEN is injected into the pod by a PodDefault)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=True, exist_ok=True)
    info = api.upload_folder(folder_path=adapter.path, repo_id=repo_id, commit_message=f"QLoRA adapter, eval perplexity {perplexity:.3f}")
    return info.commit_url


@dsl.pipeline(name="qlora-pdf-finetune", description="QLoRA fine-tune an LLM on PDFs from S3, evaluate it and push the adapter.")
def qlora_pdf_finetune(
    bucket: str = "ml-corpora",
    prefix: str = "manuals/",
    s3_endpoint_url: str = "",
    base_model: str = "mistralai/Mistral-7B-v0.3",
    lora_r: int = 16,
    epochs: int = 1,
    learning_rate: float = 2e-4,
    eval_fraction: float = 0.05,
    adapter_repo: str = "our-org/manuals-qlora",
):
    pdfs = list_pdfs(bucket=bucket, prefix=prefix, endpoint_url=s3_endpoint_url)
    texts = extract_text(bucket=bucket, keys=pdfs.output, endpoint_url=s3_endpoint_url)
    for reads_s3 in (pdfs, texts):
        kubernetes.use_secret_as_env(reads_s3, secret_name=S3_SECRET, secret_key_to_env=S3_SECRET_ENV)
    data = build_dataset(texts=texts.outputs["texts"], eval_fraction=eval_fraction)
    tune = qlora_finetune(base_model=base_model, train=data.outputs["train"], lora_r=lora_r, epochs=epochs, learning_rate=learning_rate)
    tune.set_cpu_limit("8").set_memory_limit("48G").set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    evaluation = evaluate_adapter(base_model=base_model, adapter=tune.outputs["adapter"], test=data.outputs["test"])
    evaluation.set_memory_limit("32G").set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    push_adapter(adapter=tune.outputs["adapter"], repo_id=adapter_repo, perplexity=evaluation.outputs["Output"])
