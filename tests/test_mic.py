"""The microphone path through a real PortAudio device: PulseAudio with a virtual source.

The fixture starts PulseAudio (unless one is running), loads ``module-pipe-source`` reading raw
s16le audio from a FIFO, and makes it the default source; sounddevice then records from the ALSA
device ``pulse`` exactly as from a microphone. The test writes a synthesised keyword into the FIFO
in real time while `kws stream --mic` listens, and expects that word to be reported.
Skips, saying why, only where PulseAudio or PortAudio cannot start.
"""
import json
import os
import queue
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


def feed(fifo: Path, pending: queue.Queue, stop: threading.Event) -> None:
    """Write 16 kHz mono s16le into the FIFO at real-time pace until ``stop``: each audio put in
    ``pending`` in turn, silence in between."""
    fd = os.open(fifo, os.O_WRONLY)
    try:
        block = 320                                           # 20 ms
        buf, t0, n = np.zeros(0, np.int16), time.perf_counter(), 0
        while not stop.is_set():
            if not len(buf) and not pending.empty():
                buf = to_int16(pending.get())
            chunk, buf = buf[:block], buf[block:]
            os.write(fd, np.concatenate([chunk, np.zeros(block - len(chunk), np.int16)]).tobytes())
            n += 1
            time.sleep(max(0.0, t0 + n * block / 16000 - time.perf_counter()))
    finally:
        os.close(fd)


def test_mic_stream_reports_the_spoken_word(virtual_mic, tiny_model, tiny_data):
    word = read_audio(sorted((tiny_data / "yes").glob("*.wav"))[0], 16000)
    pending, stop = queue.Queue(), threading.Event()
    writer = threading.Thread(target=feed, args=(virtual_mic, pending, stop), daemon=True)
    writer.start()                                            # the source runs while kws starts
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stream", "--model", str(tiny_model), "--mic",
                             "--device", "pulse", "--seconds", "8", "--json", "--threshold", "0.5"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4.0)
        pending.put(word)
        out, err = proc.communicate(timeout=60)
    finally:
        stop.set()
        writer.join(5)
    assert proc.returncode == 0, err
    dets = [json.loads(line) for line in out.splitlines()]
    assert "listening on" in err and "input overflows" in err
    assert any(d["label"] == "yes" for d in dets), (dets, err)


def test_unknown_device_lists_available(virtual_mic, tiny_model):
    p = kws("stream", "--model", tiny_model, "--mic", "--device", "no-such-mic-xyz", "--seconds", "1", check=False)
    assert p.returncode == 2 and "no-such-mic-xyz" in p.stderr and "available:" in p.stderr
    assert "Traceback" not in p.stderr


def test_record_writes_each_prompted_word(virtual_mic, tiny_data, tmp_path):
    """`kws record` prompts for each word; the word is spoken into the virtual microphone after
    each prompt, and lands centred in DIR/<word>/<speaker>_<word>_0.wav."""
    import soundfile as sf
    from pipeline.audio import speech_bounds, trim

    words = {w: trim(read_audio(sorted((tiny_data / w).glob("*.wav"))[0], 16000), 16000, top_db=30)
             for w in ("yes", "no")}
    pending, stop = queue.Queue(), threading.Event()
    writer = threading.Thread(target=feed, args=(virtual_mic, pending, stop), daemon=True)
    writer.start()
    out = tmp_path / "mine"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "record", "--out", str(out), "--words", "yes,no",
                             "--takes", "1", "--speaker", "tester", "--device", "pulse", "--timeout", "10"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines = []
    try:
        for line in proc.stderr:
            err_lines.append(line)
            if line.startswith("say '"):
                w = line.split("'")[1]
                time.sleep(0.5)                   # the person takes a moment
                pending.put(words[w])
        proc.wait(timeout=60)
    finally:
        stop.set()
        writer.join(5)
    err = "".join(err_lines)
    assert proc.returncode == 0, err
    for w, audio in words.items():
        x, sr = sf.read(out / w / f"tester_{w}_0.wav", dtype="float32")
        assert sr == 16000 and x.shape == (16000,), err
        s, e = speech_bounds(x, sr, top_db=30)
        assert abs((s + e) / 2 - 8000) < 800 and abs((e - s) - len(audio)) < 0.1 * sr, (s, e, len(audio))
        c = np.correlate(x, audio, mode="valid")
        assert c.max() > 0.95 * np.dot(audio, audio), err        # the word itself, not noise
