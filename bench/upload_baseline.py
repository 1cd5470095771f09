"""The plain approach to uploading compiled pipelines, as teams write it with kfp.Client.

    .venv/bin/python bench/upload_baseline.py --host http://127.0.0.1:8888 --tag v2 out/*.yaml

For each YAML: look the pipeline up by name; upload it if it is new, else upload a new version
named --tag. It cannot tell an unchanged spec, so every existing pipeline gets a new version.
One Client serves the whole run (its constructor calls healthz once).
"""
import argparse
import sys

import kfp
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="KFP API server, e.g. http://127.0.0.1:8888")
    parser.add_argument("--tag", required=True, help="version name for pipelines that already exist")
    parser.add_argument("files", nargs="+", help="compiled pipeline YAML files")
    args = parser.parse_args()

    client = kfp.Client(host=args.host)
    for path in args.files:
        with open(path) as f:
            name = next(yaml.safe_load_all(f))["pipelineInfo"]["name"]
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            client.upload_pipeline(path, pipeline_name=name)
            print(f"{name}: created", file=sys.stderr)
        else:
            client.upload_pipeline_version(path, pipeline_version_name=args.tag, pipeline_id=pipeline_id)
            print(f"{name}: new version {args.tag}", file=sys.stderr)


if __name__ == "__main__":
    main()
