"""DVD transcription.

Pulls a DVD image (.iso) from S3-compatible object storage, rips the audio of
one title to 16 kHz mono WAV with ffmpeg, transcribes it with OpenAI Whisper
and uploads the transcript (plain text + SRT subtitles) next to the image.
"""
from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Input, Output

S3_IMAGE = "python:3.11-slim"


@dsl.component(base_image=S3_IMAGE, packages_to_install=["boto3==1.34.149"])
def download_iso(bucket: str, key: str, endpoint_url: str, iso: Output[Artifact]):
    """Copy the DVD image from object storage into the artifact store."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url or None)
    s3.download_file(bucket, key, iso.path)
    iso.metadata["source"] = f"s3://{bucket}/{key}"


@dsl.container_component
def rip_audio(iso: Input[Artifact], audio: Output[Artifact], title: int):
    """Extract the audio track of one DVD title with ffmpeg (dvdvideo demuxer)."""
    return dsl.ContainerSpec(
        image="linuxserver/ffmpeg:7.0.2",
        command=["sh", "-c"],
        args=[
            'mkdir -p "$(dirname "$2")" && '
            'ffmpeg -nostdin -y -f dvdvideo -title "$1" -i "$0" -vn -ac 1 -ar 16000 -c:a pcm_s16le -f wav "$2"',
            iso.path,
            title,
            audio.path,
        ],
    )


@dsl.component(base_image="pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime", packages_to_install=["openai-whisper==20231117"])
def transcribe(audio: Input[Artifact], model_size: str, language: str, transcript: Output[Artifact], subtitles: Output[Artifact]):
    """Transcribe the WAV with Whisper; writes plain text and SRT."""
    import whisper

    def ts(seconds: float) -> str:
        ms = int(round(seconds * 1000))
        h, ms = divmod(ms, 3_600_000)
        m, ms = divmod(ms, 60_000)
        s, ms = divmod(ms, 1000)
        return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"

    model = whisper.load_model(model_size)
    result = model.transcribe(audio.path, language=language or None, verbose=False)
    with open(transcript.path, "w") as f:
        f.write(result["text"].strip() + "\n")
    with open(subtitles.path, "w") as f:
        for i, seg in enumerate(result["segments"], start=1):
            f.write(f"{i}\n{ts(seg['start'])} --> {ts(seg['end'])}\n{seg['text'].strip()}\n\n")
    transcript.metadata.update({"model_size": model_size, "language": result.get("language", language)})


@dsl.component(base_image=S3_IMAGE, packages_to_install=["boto3==1.34.149"])
def upload_transcript(transcript: Input[Artifact], subtitles: Input[Artifact], bucket: str, key: str, endpoint_url: str) -> str:
    """Upload <key-without-.iso>.txt and .srt; returns the text object's URI."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint_url or None)
    stem = key.rsplit(".", 1)[0]
    s3.upload_file(transcript.path, bucket, f"{stem}.txt")
    s3.upload_file(subtitles.path, bucket, f"{stem}.srt")
    return f"s3://{bucket}/{stem}.txt"


@dsl.pipeline(name="dvd-transcription", description="Rip audio from a DVD image in object storage and transcribe it with Whisper.")
def dvd_transcription(
    bucket: str = "media-archive",
    iso_key: str = "dvds/family-2004.iso",
    s3_endpoint_url: str = "http://minio.minio.svc.cluster.local:9000",
    title: int = 1,
    whisper_model_size: str = "medium",
    language: str = "",
):
    iso = download_iso(bucket=bucket, key=iso_key, endpoint_url=s3_endpoint_url)
    audio = rip_audio(iso=iso.outputs["iso"], title=title)
    audio.set_cpu_limit("2").set_memory_limit("2G")
    text = transcribe(audio=audio.outputs["audio"], model_size=whisper_model_size, language=language)
    text.set_cpu_limit("8").set_memory_limit("16G")
    text.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    # Whisper's weights (1.5 GB for "medium") live on a shared volume: downloaded once, not per run.
    kubernetes.mount_pvc(text, pvc_name="whisper-models", mount_path="/models")
    text.set_env_variable("XDG_CACHE_HOME", "/models")
    upload_transcript(
        transcript=text.outputs["transcript"],
        subtitles=text.outputs["subtitles"],
        bucket=bucket,
        key=iso_key,
        endpoint_url=s3_endpoint_url,
    )
