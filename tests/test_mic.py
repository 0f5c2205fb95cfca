"""The microphone path through a real PortAudio device: PulseAudio with a virtual source.

The fixture starts PulseAudio (unless one is running), loads ``module-pipe-source`` reading raw
s16le audio from a FIFO, and makes it the default source; sounddevice then records from the ALSA
device ``pulse`` exactly as from a microphone. The test writes a synthesised keyword into the FIFO
in real time while `kws stream --mic` listens, and expects that word to be reported.
Skips, saying why, only where PulseAudio or PortAudio cannot start.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, kws
from pipeline.audio import read_audio, to_int16

FIFO = Path("/tmp/kws-test-virtmic")


@pytest.fixture(scope="module")
def virtual_mic():
    if not shutil.which("pulseaudio") or not shutil.which("pactl"):
        pytest.skip("PulseAudio is not installed (apt-get install pulseaudio libportaudio2 libasound2-plugins)")
    started = None
    if subprocess.run(["pactl", "info"], capture_output=True).returncode != 0:
        p = subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1"], capture_output=True, text=True)
        for _ in range(50):
            if subprocess.run(["pactl", "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.skip(f"PulseAudio could not start: {p.stderr.strip()[-200:]}")
        started = subprocess.run(["pgrep", "-n", "-x", "pulseaudio"], capture_output=True, text=True).stdout.strip()
    FIFO.unlink(missing_ok=True)
    mod = subprocess.run(["pactl", "load-module", "module-pipe-source", "source_name=kwsvirtmic", f"file={FIFO}",
                          "format=s16le", "rate=16000", "channels=1"], capture_output=True, text=True)
    if mod.returncode != 0:
        pytest.skip(f"PulseAudio pipe source could not load: {mod.stderr.strip()}")
    old = subprocess.run(["pactl", "get-default-source"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["pactl", "set-default-source", "kwsvirtmic"], check=True)
    try:
        import sounddevice  # noqa: F401
    except OSError as e:
        pytest.skip(f"PortAudio is not available: {e}")
    yield FIFO
    if old:
        subprocess.run(["pactl", "set-default-source", old], capture_output=True)
    subprocess.run(["pactl", "unload-module", mod.stdout.strip()], capture_output=True)
    if started:
        subprocess.run(["kill", started], capture_output=True)


def feed(fifo: Path, audio: np.ndarray, stop: threading.Event) -> None:
    """Write 16 kHz mono audio into the FIFO at real-time pace, then keep writing silence."""
    fd = os.open(fifo, os.O_WRONLY)
    try:
        block = 320                                           # 20 ms
        data = to_int16(audio)
        t0, k = time.perf_counter(), 0
        while not stop.is_set():
            chunk = data[k * block:(k + 1) * block]
            if len(chunk) < block:
                chunk = np.zeros(block, np.int16)
            os.write(fd, chunk.tobytes())
            k += 1
            time.sleep(max(0.0, t0 + k * block / 16000 - time.perf_counter()))
    finally:
        os.close(fd)


def test_mic_stream_reports_the_spoken_word(virtual_mic, tiny_model, tiny_data):
    word_file = next(p for p in sorted((tiny_data / "yes").glob("*.wav")))
    word = read_audio(word_file, 16000)
    audio = np.concatenate([np.zeros(24000, np.float32), word, word * 0 + 0.0, np.zeros(32000, np.float32)])
    stop = threading.Event()
    writer = threading.Thread(target=feed, args=(virtual_mic, np.zeros(1600, np.float32), stop), daemon=True)
    writer.start()                                            # keep the source running while kws starts
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stream", "--model", str(tiny_model), "--mic",
                             "--device", "pulse", "--seconds", "9", "--json", "--threshold", "0.5"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    stop.set()
    writer.join()
    stop2 = threading.Event()
    writer = threading.Thread(target=feed, args=(virtual_mic, audio, stop2), daemon=True)
    writer.start()
    out, err = proc.communicate(timeout=60)
    stop2.set()
    writer.join()
    assert proc.returncode == 0, err
    dets = [json.loads(line) for line in out.splitlines()]
    assert "listening on" in err and "input overflows" in err
    assert any(d["label"] == "yes" for d in dets), (dets, err)


def test_unknown_device_lists_available(virtual_mic, tiny_model):
    p = kws("stream", "--model", tiny_model, "--mic", "--device", "no-such-mic-xyz", "--seconds", "1", check=False)
    assert p.returncode == 2 and "no-such-mic-xyz" in p.stderr and "available:" in p.stderr
    assert "Traceback" not in p.stderr
