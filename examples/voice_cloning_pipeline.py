"""Voice cloning: speaker extraction + VITS training.

Takes a long multi-speaker recording (podcast, interview), diarizes it with
pyannote, keeps the clean segments of the target speaker, transcribes them to
build an LJSpeech-style dataset and fine-tunes a Coqui VITS model on it.
"""
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

TORCH_IMAGE = "pytorch/pytorch:2.3.1-cuda12.1-cudnn8-runtime"


@dsl.component(base_image=TORCH_IMAGE, packages_to_install=["pyannote.audio==3.3.1", "boto3==1.34.149"])
def diarize(audio_uri: str, num_speakers: int, rttm: Output[Artifact], audio: Output[Artifact]):
    """Download the recording and write pyannote speaker turns as RTTM."""
    import os

    import boto3
    import torch
    from pyannote.audio import Pipeline

    bucket, key = audio_uri.removeprefix("s3://").split("/", 1)
    boto3.client("s3").download_file(bucket, key, audio.path)
    pipe = Pipeline.from_pretrained("pyannote/speaker-diarization-3.1", use_auth_token=os.environ.get("HF_TOKEN"))
    pipe.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    result = pipe(audio.path, num_speakers=num_speakers or None)
    with open(rttm.path, "w") as f:
        result.write_rttm(f)


@dsl.component(base_image=TORCH_IMAGE, packages_to_install=["openai-whisper==20231117", "pydub==0.25.1"])
def extract_speaker(audio: Input[Artifact], rttm: Input[Artifact], speaker: str, min_seconds: float, max_seconds: float,
                    dataset: Output[Dataset]) -> float:
    """Cut the target speaker's turns, transcribe them, write wavs/ + metadata.csv.

    An empty speaker means "whoever talks the most". Returns total seconds kept.
    """
    import collections
    import os

    import whisper
    from pydub import AudioSegment

    turns = [line.split() for line in open(rttm.path) if line.startswith("SPEAKER")]
    turns = [(t[7], float(t[3]), float(t[4])) for t in turns]  # (label, start, duration)
    if not speaker:
        talk = collections.Counter()
        for label, _, dur in turns:
            talk[label] += dur
        speaker = talk.most_common(1)[0][0]

    os.makedirs(os.path.join(dataset.path, "wavs"), exist_ok=True)
    track = AudioSegment.from_file(audio.path).set_channels(1).set_frame_rate(22050)
    asr = whisper.load_model("small")
    kept, rows = 0.0, []
    for i, (label, start, dur) in enumerate(turns):
        if label != speaker or not (min_seconds <= dur <= max_seconds):
            continue
        name = f"seg_{i:05d}"
        wav = os.path.join(dataset.path, "wavs", f"{name}.wav")
        track[int(start * 1000):int((start + dur) * 1000)].export(wav, format="wav")
        text = asr.transcribe(wav)["text"].strip()
        if text:
            rows.append(f"{name}|{text}|{text}")
            kept += dur
    with open(os.path.join(dataset.path, "metadata.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    dataset.metadata.update({"speaker": speaker, "segments": len(rows), "seconds": kept})
    return kept


@dsl.component(base_image=TORCH_IMAGE, packages_to_install=["coqui-tts==0.24.1"])
def train_vits(dataset: Input[Dataset], language: str, epochs: int, batch_size: int, model: Output[Model]):
    """Fine-tune VITS on the LJSpeech-formatted speaker dataset."""
    from trainer import Trainer, TrainerArgs
    from TTS.tts.configs.shared_configs import BaseDatasetConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.datasets import load_tts_samples
    from TTS.tts.models.vits import Vits
    from TTS.tts.utils.text.tokenizer import TTSTokenizer
    from TTS.utils.audio import AudioProcessor

    ds = BaseDatasetConfig(formatter="ljspeech", meta_file_train="metadata.csv", path=dataset.path, language=language)
    config = VitsConfig(run_name="voice-clone", batch_size=batch_size, eval_batch_size=4, epochs=epochs, text_cleaner="multilingual_cleaners",
                        use_phonemes=False, datasets=[ds], output_path=model.path, mixed_precision=True)
    ap = AudioProcessor.init_from_config(config)
    tokenizer, config = TTSTokenizer.init_from_config(config)
    train, evals = load_tts_samples(ds, eval_split=True, eval_split_size=0.05)
    vits = Vits(config, ap, tokenizer, speaker_manager=None)
    Trainer(TrainerArgs(), config, model.path, model=vits, train_samples=train, eval_samples=evals).fit()
    model.metadata["framework"] = "coqui-vits"


@dsl.pipeline(name="voice-cloning", description="Diarize a recording, extract one speaker's clean segments and train a VITS voice on them.")
def voice_cloning(
    audio_uri: str = "s3://voice-data/raw/interview-01.wav",
    num_speakers: int = 2,
    speaker: str = "",
    min_segment_seconds: float = 1.5,
    max_segment_seconds: float = 12.0,
    min_total_seconds: float = 600.0,
    language: str = "en",
    epochs: int = 200,
    batch_size: int = 16,
):
    dia = diarize(audio_uri=audio_uri, num_speakers=num_speakers)
    dia.set_memory_limit("8G").set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    seg = extract_speaker(audio=dia.outputs["audio"], rttm=dia.outputs["rttm"], speaker=speaker,
                          min_seconds=min_segment_seconds, max_seconds=max_segment_seconds)
    seg.set_cpu_limit("4").set_memory_limit("8G")
    with dsl.If(seg.outputs["Output"] >= min_total_seconds, name="enough-speech"):
        train = train_vits(dataset=seg.outputs["dataset"], language=language, epochs=epochs, batch_size=batch_size)
        train.set_cpu_limit("8").set_memory_limit("32G").set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
