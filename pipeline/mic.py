"""Microphone capture with sounddevice (PortAudio): device lookup, callback into a ring buffer,
resampling from the device's native rate to the model's with a streaming soxr resampler.

Torch-free. sounddevice is imported lazily so that file streaming works without PortAudio.
"""
from __future__ import annotations

import numpy as np
import soxr

from .errors import StreamError
from .stream import RingBuffer


def _sd():
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise StreamError(f"microphone support needs sounddevice and PortAudio "
                          f"(pip install sounddevice; apt-get install libportaudio2): {e}") from None
    return sd


def input_devices() -> list[dict]:
    """[{index, name, channels, default_samplerate, default}] for devices with input channels."""
    sd = _sd()
    try:
        devs = sd.query_devices()
        default_in = sd.default.device[0]
    except Exception as e:
        raise StreamError(f"cannot list audio devices: {e}") from None
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "default_samplerate": d["default_samplerate"], "default": i == default_in}
            for i, d in enumerate(devs) if d["max_input_channels"] > 0]


def describe_devices() -> str:
    devs = input_devices()
    if not devs:
        return "no input devices found"
    return "; ".join(f"{d['index']} '{d['name']}'" + (" (default)" if d["default"] else "") for d in devs)


def find_device(spec: str | None) -> dict:
    """An input device by index or (case-insensitive) name substring; None -> the default input."""
    devs = input_devices()
    if not devs:
        raise StreamError("no audio input device found (is a microphone connected, or PulseAudio running?)")
    if spec is None:
        return next((d for d in devs if d["default"]), devs[0])
    if spec.strip().isdigit():
        match = [d for d in devs if d["index"] == int(spec)]
    else:
        exact = [d for d in devs if d["name"].lower() == spec.lower()]
        match = exact or [d for d in devs if spec.lower() in d["name"].lower()]
    if not match:
        raise StreamError(f"--device {spec}: no such input device; available: {describe_devices()}")
    return match[0]


class MicSource:
    """Captures from an input device; ``read()`` returns model-rate float32 samples as they arrive.

    The PortAudio callback only copies the block into a ring buffer and counts overflows; the
    caller (the inference thread) reads and resamples.
    """

    def __init__(self, device: str | None, model_rate: int, block_ms: int = 20, buffer_s: float = 10.0):
        self.sd = _sd()
        self.device = find_device(device)
        self.rate = int(self.device["default_samplerate"])
        try:
            self.sd.check_input_settings(device=self.device["index"], channels=1, samplerate=model_rate, dtype="float32")
            self.rate = model_rate
        except Exception:
            pass                                              # keep the native rate and resample
        self.ring = RingBuffer(int(self.rate * buffer_s))
        self.overflows = 0
        self.resampler = None if self.rate == model_rate else soxr.ResampleStream(self.rate, model_rate, 1, dtype="float32")
        self.block = max(1, int(self.rate * block_ms / 1000))
        self.stream = None

    def _callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.overflows += 1
        self.ring.write(indata[:, 0])

    def __enter__(self) -> "MicSource":
        try:
            self.stream = self.sd.InputStream(device=self.device["index"], channels=1, samplerate=self.rate,
                                              dtype="float32", blocksize=self.block, callback=self._callback)
            self.stream.start()
        except Exception as e:
            raise StreamError(f"cannot open input device {self.device['index']} '{self.device['name']}' "
                              f"({str(e).strip()}); available: {describe_devices()}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()

    def read(self, timeout: float = 0.1) -> np.ndarray:
        x = self.ring.read(timeout)
        if self.resampler is not None and len(x):
            x = self.resampler.resample_chunk(x)
        return x

    @property
    def dropped(self) -> int:
        return self.ring.dropped
