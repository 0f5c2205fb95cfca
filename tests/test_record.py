"""`kws record`: the utterance segmenter on a real synthesised word over noise, and file naming."""
import numpy as np
import pytest

from pipeline.audio import read_audio, speech_bounds, trim
from pipeline.errors import StreamError
from pipeline.record import Segmenter, check_speaker, next_take, word_clip


def _stream(word: np.ndarray, sr: int = 16000, lead_s: float = 0.8, tail_s: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(int(lead_s * sr)), word, np.zeros(int(tail_s * sr))]).astype(np.float32)
    return x + (10 ** (-60 / 20) * rng.standard_normal(len(x))).astype(np.float32)


def test_segmenter_cuts_the_word_out_of_a_noisy_stream(real_clips):
    sr = 16000
    word = trim(read_audio(real_clips[0], sr), sr, top_db=30)
    x = _stream(word)
    seg, utt, fed = Segmenter(sr), None, 0
    while utt is None and fed < len(x):
        utt = seg.push(x[fed:fed + 320])                 # 20-ms chunks, as from a microphone
        fed += 320
    assert utt is not None
    lead = int(0.8 * sr)
    # it returns soon after the word ends (quiet_s), not at the end of the stream
    assert fed - (lead + len(word)) < int(0.5 * sr)
    # and the utterance holds the whole word: the word's samples are in it
    c = np.correlate(utt, word, mode="valid")
    k = int(np.argmax(c))
    assert np.allclose(utt[k:k + len(word)], x[lead:lead + len(word)], atol=1e-6)
    clip = word_clip(utt, sr, sr)
    s, e = speech_bounds(clip, sr, top_db=30)
    assert clip.shape == (sr,) and abs((s + e) / 2 - sr / 2) < 0.05 * sr      # centred in 1 s


def test_segmenter_waits_while_there_is_only_noise():
    sr = 16000
    x = _stream(np.zeros(0, np.float32), tail_s=3.0)
    seg = Segmenter(sr)
    assert all(seg.push(x[i:i + 320]) is None for i in range(0, len(x), 320))
    assert -70 < seg.floor_db < -55


def test_take_numbering_and_speaker_names(tmp_path):
    d = tmp_path / "yes"
    assert next_take(d, "me", "yes") == 0
    d.mkdir()
    for n in (0, 1, 4):
        (d / f"me_yes_{n}.wav").write_bytes(b"")
    (d / "other_yes_9.wav").write_bytes(b"")
    assert next_take(d, "me", "yes") == 5
    assert check_speaker("anna-2") == "anna-2"
    with pytest.raises(StreamError, match="--speaker"):
        check_speaker("a_b")
