"""RAG document ingestion.

Fetches documents from a list of URLs, splits them into overlapping chunks,
embeds the chunks with a sentence-transformers model, upserts the vectors into
a Qdrant collection and records the run's parameters and metrics in MLflow.

Heavy libraries are imported inside the component bodies: they only run in
the component containers, never when this file is compiled.
"""
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

PYTHON_IMAGE = "python:3.11-slim"


@dsl.component(base_image=PYTHON_IMAGE, packages_to_install=["requests==2.32.3", "beautifulsoup4==4.12.3"])
def fetch_documents(urls: list, documents: Output[Dataset]) -> int:
    """Download each URL and store its visible text as one JSON line."""
    import json

    import requests
    from bs4 import BeautifulSoup

    count = 0
    with open(documents.path, "w") as out:
        for url in urls:
            resp = requests.get(url, timeout=30)
            resp.raise_for_status()
            text = BeautifulSoup(resp.text, "html.parser").get_text(" ", strip=True)
            out.write(json.dumps({"source": url, "text": text}) + "\n")
            count += 1
    return count


@dsl.component(base_image=PYTHON_IMAGE)
def chunk_documents(documents: Input[Dataset], chunks: Output[Dataset], chunk_size: int = 800, chunk_overlap: int = 100) -> int:
    """Split every document into windows of chunk_size characters."""
    import json

    step = max(1, chunk_size - chunk_overlap)
    n = 0
    with open(documents.path) as src, open(chunks.path, "w") as out:
        for line in src:
            doc = json.loads(line)
            text = doc["text"]
            for i, start in enumerate(range(0, max(len(text), 1), step)):
                piece = text[start:start + chunk_size]
                out.write(json.dumps({"id": f"{doc['source']}#{i}", "source": doc["source"], "text": piece}) + "\n")
                n += 1
    return n


@dsl.component(base_image="pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime", packages_to_install=["sentence-transformers==3.0.1"])
def embed_chunks(chunks: Input[Dataset], embeddings: Output[Dataset], model_name: str = "BAAI/bge-small-en-v1.5"):
    """Embed each chunk; writes id, text, source and vector per line."""
    import json

    from sentence_transformers import SentenceTransformer

    rows = [json.loads(line) for line in open(chunks.path)]
    model = SentenceTransformer(model_name)
    vectors = model.encode([r["text"] for r in rows], batch_size=64, normalize_embeddings=True)
    with open(embeddings.path, "w") as out:
        for row, vec in zip(rows, vectors):
            out.write(json.dumps({**row, "vector": vec.tolist()}) + "\n")
    embeddings.metadata["model"] = model_name


@dsl.component(base_image=PYTHON_IMAGE, packages_to_install=["qdrant-client==1.10.1"])
def write_to_vector_store(embeddings: Input[Dataset], qdrant_url: str, collection: str) -> int:
    """Upsert embedded chunks into a Qdrant collection (created if missing)."""
    import json
    import uuid

    from qdrant_client import QdrantClient
    from qdrant_client.models import Distance, PointStruct, VectorParams

    rows = [json.loads(line) for line in open(embeddings.path)]
    client = QdrantClient(url=qdrant_url)
    if rows and not client.collection_exists(collection):
        client.create_collection(collection, vectors_config=VectorParams(size=len(rows[0]["vector"]), distance=Distance.COSINE))
    points = [PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, r["id"])), vector=r["vector"],
                          payload={"source": r["source"], "text": r["text"]}) for r in rows]
    for i in range(0, len(points), 256):
        client.upsert(collection_name=collection, points=points[i:i + 256])
    return len(points)


@dsl.component(base_image=PYTHON_IMAGE, packages_to_install=["mlflow-skinny==2.14.3"])
def log_to_mlflow(tracking_uri: str, experiment: str, params: dict, num_documents: int, num_chunks: int, num_vectors: int):
    """Record the ingestion run in MLflow."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="document-ingestion"):
        mlflow.log_params(params)
        mlflow.log_metrics({"documents": num_documents, "chunks": num_chunks, "vectors": num_vectors})


@dsl.pipeline(name="document-ingestion", description="Fetch, chunk, embed and index documents for RAG; log the run to MLflow.")
def document_ingestion(
    urls: list = ["https://www.kubeflow.org/docs/components/pipelines/overview/"],
    chunk_size: int = 800,
    chunk_overlap: int = 100,
    embedding_model: str = "BAAI/bge-small-en-v1.5",
    qdrant_url: str = "http://qdrant.vector-db.svc.cluster.local:6333",
    collection: str = "team-docs",
    mlflow_tracking_uri: str = "http://mlflow.mlflow.svc.cluster.local:5000",
    mlflow_experiment: str = "rag-ingestion",
):
    fetch = fetch_documents(urls=urls)
    chunk = chunk_documents(documents=fetch.outputs["documents"], chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    embed = embed_chunks(chunks=chunk.outputs["chunks"], model_name=embedding_model)
    embed.set_cpu_limit("4").set_memory_limit("8G")
    write = write_to_vector_store(embeddings=embed.outputs["embeddings"], qdrant_url=qdrant_url, collection=collection)
    log_to_mlflow(
        tracking_uri=mlflow_tracking_uri,
        experiment=mlflow_experiment,
        params={"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "embedding_model": embedding_model, "collection": collection},
        num_documents=fetch.outputs["Output"],
        num_chunks=chunk.outputs["Output"],
        num_vectors=write.output,
    )
