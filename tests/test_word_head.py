"""The word head (`kws train-head --word`): EfficientWord-Net's front-end and network in torch against
an independent numpy front-end and onnxruntime on the fetched graph, and the exported model through
the real command line: its pooling, its graphs' shapes, and the stream against offline."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import kws
from pipeline.runtime import OnnxModel, sibling
from pipeline.stream import StreamingScorer
from pipeline.word_net import WordFbank, WordNet, fetch_word_model


def reference_logfbank(x: np.ndarray) -> np.ndarray:
    """python_speech_features.logfbank(x, 16000, nfilt=64, nfft=512, preemph=0), whole frames only,
    written apart from pipeline/word_net.py: numpy's rfft and the triangles' closed form."""
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), 400)[::160]
    power = np.abs(np.fft.rfft(frames, 512)) ** 2 / 512
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 66)
    edges = np.floor(513 * 700 * (10 ** (mel / 2595) - 1) / 16000)
    k = np.arange(257)[:, None]
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    up = np.where((k >= lo) & (k < mid), (k - lo) / np.maximum(mid - lo, 1e-9), 0)
    down = np.where((k >= mid) & (k < hi), (hi - k) / np.maximum(hi - mid, 1e-9), 0)
    energy = power @ (up + down)
    return np.log(np.where(energy == 0, np.finfo(float).eps, energy))


def test_word_fbank_and_network_equal_the_references():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16000) * 0.05).astype(np.float32)
    x[4000:8000] += 0.3 * np.sin(2 * np.pi * 700 * np.arange(4000) / 16000).astype(np.float32)
    with torch.no_grad():
        got = WordFbank()(torch.from_numpy(x)[None])[0].numpy()
    ref = reference_logfbank(x)
    assert got.shape == ref.shape == (98, 64)                 # the MFCC's frames of a 1-s window
    assert np.abs(got - ref).max() < 1e-3 * np.abs(ref).max()
    path = fetch_word_model()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = np.stack([np.concatenate([ref, ref[:51]]), np.concatenate([ref[::-1], ref[:51] * 0.5])]).astype(np.float32)
    want = np.concatenate([sess.run(None, {"input": f[None, None]})[0] for f in frames])
    with torch.no_grad():
        out = WordNet(path)(torch.from_numpy(frames)).numpy()       # batched; the graph's batch is 1
    assert out.shape == (2, 2048) and np.abs(out - want).max() < 1e-4
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


@pytest.fixture(scope="module")
def word_run(tiny_run, tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("wordrun") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.onnx", "eval-*", "head*"))
    p = kws("train-head", run, "--data", tiny_data, "--word", "--copies", "1", "--epochs", "8",
            "--cache-dir", tmp_path_factory.mktemp("cache"), "--jobs", "2")
    assert "word head" in p.stdout
    kws("export", run)
    return run


def test_word_head_pooled_in_every_graph(word_run, real_clips, tiny_data):
    from pipeline.audio import load_clip
    from pipeline.checkpoint import load_model
    from pipeline.embedding_head import load_head, pool
    from pipeline.features import MFCC
    from pipeline.word_net import WordFbank as Fbank
    m = OnnxModel(word_run / "model.onnx")
    n_mfcc = m.config.features.n_mfcc
    assert json.loads(m.session.get_modelmeta().custom_metadata_map["embedding_head"])["word"] is True
    assert OnnxModel(sibling(word_run / "model.onnx", "frames")).session.get_inputs()[0].shape[2] == n_mfcc + 32 + 64
    cached = OnnxModel(sibling(word_run / "model.onnx", "cached")).session
    assert [tuple(i.shape[1:]) for i in cached.get_inputs()] == [(98, n_mfcc), (3, 96)]     # the word head apart:
    word_graph = OnnxModel(sibling(word_run / "model.onnx", "word")).session               # the stream runs it gated
    assert [tuple(i.shape) for i in word_graph.get_inputs()] == [(1, 98, 64)]
    metrics = json.loads((word_run / "head_metrics.json").read_text())
    assert metrics["val_acc_word"] > 0.5 and len(metrics["word_loss"]) > 0      # 5 labels: chance 0.2
    cfg, clf = load_model(word_run)
    hcfg, head, logmel = load_head(word_run / "head.pt", cfg.labels, cfg.features)
    x = torch.from_numpy(np.stack([load_clip(f, 16000, cfg.features.clip_samples) for f in real_clips]))
    assert hcfg.word and hcfg.word_gate == 0.05
    with torch.no_grad():
        two = pool(clf(MFCC(cfg.features)(x)), head(logmel(x)), "geometric")
        word = head.word(Fbank()(x))
    p2 = two.exp().numpy()
    keyword = np.array([not l.startswith("_") for l in cfg.labels])
    opened = p2[:, keyword].max(1) >= hcfg.word_gate                  # the gate: some keyword at 0.05 or more
    assert opened.any()
    want = np.where(opened[:, None], torch.softmax((two + word) / 2, -1).numpy(), p2)
    assert np.abs(m.scores(x.numpy()) - want).max() < 1e-4
    assert np.abs(want - p2).max() > 1e-3                              # the word head changes the scores
    p = kws("evaluate", "--model", word_run / "model.onnx", "--data", tiny_data, "--json", word_run / "ev.json")
    assert json.loads((word_run / "ev.json").read_text())["accuracy"] > 0.6, p.stdout


def test_word_head_streaming_equals_offline(word_run, real_clips):
    from pipeline.audio import read_audio
    from pipeline.audio import noise_floor
    x = np.concatenate([read_audio(p, 16000) for p in real_clips[:2]] + [noise_floor(32000)]).astype(np.float32)
    scorer = StreamingScorer(word_run / "model.onnx", hop_ms=100)
    results = []
    for i in range(0, len(x), 1500):
        results += scorer.push(x[i:i + 1500])
    assert scorer.cached is not None and scorer.word is not None and len(results) >= 5
    cheap = StreamingScorer(word_run / "model.onnx", hop_ms=100)
    cheap.word = None                                    # the BiLSTM and the embedding head alone
    p2 = np.stack([p for i in range(0, len(x), 1500) for _, p in cheap.push(x[i:i + 1500])])
    keyword = np.array([not l.startswith("_") for l in scorer.labels])
    assert scorer.word_runs == int((p2[:, keyword].max(1) >= scorer.word_gate).sum())   # run only where the gate opened
    starts = [scorer.window_start_sample(t) for t, _ in results]
    ref = OnnxModel(word_run / "model.onnx").scores(np.stack([x[s:s + 16000] for s in starts]))
    assert np.abs(np.stack([p for _, p in results]) - ref).max() < 1e-5


def test_word_head_needs_the_embedding_head(tmp_path):
    p = kws("demo", "--word", "--no-head", "--data", tmp_path / "d", check=False)
    assert p.returncode == 2 and "--word" in p.stderr and "Traceback" not in p.stderr
