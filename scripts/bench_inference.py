#!/usr/bin/env python
"""CPU inference cost per 1-s window, onnxruntime on ONE thread, batch 1 (median of >= 200 runs).

    (a) naive:       torch.onnx.export of torchaudio.transforms.MFCC + the classifier: the graph
                     computes the front-end with the ONNX STFT op
    (b) model:       the project's exported model.onnx (framing + DFT as Conv/MatMul in the graph)
    (c) classifier:  the project's classifier alone on precomputed frames (model.frames.onnx)
    (d) INT8 model:  (b) dynamically quantised
    (e) stream hop:  per-hop streaming cost at hop 100 ms (front-end on the hop's new samples +
                     classifier on the window); scorer_hop_ms: the same through StreamingScorer.push,
                     as `kws stream` runs it (with the embedding head: its stem and vector caches,
                     which embed the hop's new windows, 1 with the default 3 windows 10 frames apart:
                     stem_hop_ms for the embedding's stem on the hop's 10 new frames (a stream: its
                     state carries the rows before them), tail_window_ms for the rest of the
                     embedding, then cached_ms (word_window_ms: the word head, where the model has one, run on the windows its gate opens); embed_window_ms: the whole embedding of one 76-frame
                     window, as the stream ran it before the stem cache, and still does at its start)

With --model it measures that exported model (its .frames/.frontend siblings must be beside it);
by default it exports a fresh model of the default configuration (random weights: timing only).
Last line: naive_ms=... model_ms=... classifier_ms=... speedup_vs_naive=... frontend_overhead=...
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def session(path: Path) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def scorer_hop_ms(model: Path, runs: int) -> float:
    """Median time of one 100-ms ``StreamingScorer.push`` (one window scored), the window already
    full: the stream's own code, with the embedding head's vector cache where the model has one."""
    from pipeline.stream import StreamingScorer
    sc = StreamingScorer(model, hop_ms=100, threads=1)
    audio = (0.1 * np.random.default_rng(1).standard_normal(16000 * 20)).astype(np.float32)
    sc.push(audio[:16000])
    pos = [16000]

    def hop():
        if pos[0] + 1600 > len(audio):
            pos[0] = 0
        assert len(sc.push(audio[pos[0]:pos[0] + 1600])) == 1
        pos[0] += 1600
    return median_ms(hop, runs)


def median_ms(fn, runs: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def export_fresh(tmp: Path) -> tuple[Path, Path]:
    """A random-weight run exported by the project's exporter, and the naive export beside it."""
    import torch
    import torchaudio

    from pipeline.checkpoint import save_checkpoint
    from pipeline.config import ModelConfig, RunConfig
    from pipeline.export import _export, export_run, metadata
    from pipeline.model import BiLSTMClassifier

    labels = tuple(f"w{i}" for i in range(20)) + ("_unknown_", "_silence_")
    cfg = RunConfig(labels=labels, model=ModelConfig(n_classes=len(labels)))
    torch.manual_seed(0)
    clf = BiLSTMClassifier(cfg.model).eval()
    run = tmp / "run"
    run.mkdir()
    save_checkpoint({"model": clf.state_dict(), "config": cfg.to_dict(), "labels": list(labels), "epoch": 0,
                     "best_val_acc": 0.0}, run / "best.pt")
    paths = export_run(run, None, int8=True, log=lambda *a: None)
    f = cfg.features

    class Naive(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mfcc = torchaudio.transforms.MFCC(f.sample_rate, f.n_mfcc, log_mels=True, melkwargs=dict(
                n_fft=f.n_fft, hop_length=f.hop_length, n_mels=f.n_mels, f_min=f.f_min, f_max=f.f_max))
            self.clf = clf

        def forward(self, wave):
            return torch.softmax(self.clf(self.mfcc(wave).transpose(1, 2)), -1)

    naive = tmp / "naive.onnx"
    _export(Naive().eval(), torch.zeros(2, f.clip_samples), naive, "waveform", "probs", {0: ("batch", 1)},
            metadata(cfg, "waveform", {}), dynamo=True)         # torch's default exporter: the ONNX STFT op
    return paths["model"], naive


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="an exported model.onnx to measure (default: export a fresh one)")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per graph (default 300)")
    ap.add_argument("--speech-embedding", action="store_true", help="also time the pretrained speech embedding "
                    "(pipeline/speech_embedding.py, one thread) on the same window: what a head on it adds")
    a = ap.parse_args()

    from pipeline.runtime import sibling
    tmp = Path(tempfile.mkdtemp(prefix="kws-bench-"))
    if a.model:
        model, naive = a.model, None
    else:
        model, naive = export_fresh(tmp)
    frames_path, frontend_path = sibling(model, "frames"), sibling(model, "frontend")
    int8_path = model.with_name(model.name.replace(".onnx", ".int8.onnx"))

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal((1, 16000))).astype(np.float32)
    s_model, s_frames, s_front = session(model), session(frames_path), session(frontend_path)
    frames = s_front.run(None, {"waveform": wave})[0]
    res = {}
    res["model_ms"] = median_ms(lambda: s_model.run(None, {"waveform": wave}), a.runs)
    res["classifier_ms"] = median_ms(lambda: s_frames.run(None, {"frames": frames}), a.runs)
    res["frontend_ms"] = median_ms(lambda: s_front.run(None, {"waveform": wave}), a.runs)
    hop_wave = wave[:, : 9 * 160 + 400]
    res["stream_hop_ms"] = median_ms(lambda: (s_front.run(None, {"waveform": hop_wave}),
                                              s_frames.run(None, {"frames": frames})), a.runs)
    heads = [sibling(model, k) for k in ("embed_stem", "embed_tail", "cached")]
    if all(p.is_file() for p in heads):                          # the embedding head's stem and vector caches
        import json
        s_stem, s_tail, s_cached = (session(p) for p in heads)
        from pipeline.speech_embedding import N_MELS, WINDOW_FRAMES
        n_mfcc, windows = s_cached.get_inputs()[0].shape[2], s_cached.get_inputs()[1].shape[1]
        d = json.loads(s_stem.get_modelmeta().custom_metadata_map["embed_stem"])["time_stride"]
        zeros = {i.name: np.zeros(i.shape, np.float32) for i in s_stem.get_inputs()[1:]}
        n = s_tail.get_inputs()[0].shape[2]                      # positions per window
        hop_frames = np.ascontiguousarray(frames[:, :10, n_mfcc:n_mfcc + N_MELS])     # a 100-ms hop's new frames
        one = np.ascontiguousarray(frames[:, :-(-WINDOW_FRAMES // d) * d, n_mfcc:n_mfcc + N_MELS])

        def embed_one():                                        # a cold start: one window from zero states
            pos = s_stem.run(None, {"logmel": one, **zeros})[0]
            return s_tail.run(None, {"stem": np.ascontiguousarray(pos[:, :, pos.shape[2] - n:])})[0]
        stem = s_stem.run(None, {"logmel": one, **zeros})[0][:, :, -n:].copy()    # (1, channels, n, bins)
        vec = np.repeat(embed_one()[None], windows, axis=1)
        mfcc = np.ascontiguousarray(frames[:, :, :n_mfcc])
        res["stem_hop_ms"] = median_ms(lambda: s_stem.run(None, {"logmel": hop_frames, **zeros}), a.runs)
        res["tail_window_ms"] = median_ms(lambda: s_tail.run(None, {"stem": stem}), a.runs)
        res["embed_window_ms"] = median_ms(embed_one, a.runs)
        res["cached_ms"] = median_ms(lambda: s_cached.run(None, {"frames": mfcc, "vectors": vec}), a.runs)
        if sibling(model, "word").is_file():                    # the word head: run where its gate opens
            s_word = session(sibling(model, "word"))
            word = np.ascontiguousarray(frames[:, :, n_mfcc + N_MELS:])
            res["word_window_ms"] = median_ms(lambda: s_word.run(None, {"frames": word}), a.runs)
    res["scorer_hop_ms"] = scorer_hop_ms(model, a.runs)
    if int8_path.is_file():
        s_int8 = session(int8_path)
        res["int8_model_ms"] = median_ms(lambda: s_int8.run(None, {"waveform": wave}), a.runs)
    if a.speech_embedding:
        from pipeline.speech_embedding import SpeechEmbedding
        emb = SpeechEmbedding(threads=1)
        res["speech_embedding_ms"] = median_ms(lambda: emb(wave), a.runs)
    if naive is not None:
        s_naive = session(naive)
        res["naive_ms"] = median_ms(lambda: s_naive.run(None, {"waveform": wave}), a.runs)
        import onnx
        ops = sorted({n.op_type for n in onnx.load(str(naive)).graph.node})
        print(f"naive graph ops: {', '.join(ops)}")
    print(f"onnxruntime {ort.__version__}, 1 intra-op thread, batch 1, 1-s window, median of {a.runs} runs")
    for k, v in res.items():
        print(f"  {k:16s} {v:8.3f} ms")
    print(f"  per-hop real-time factor at 100 ms hops: {res['stream_hop_ms'] / 100:.4f} (frontend + frames graphs), "
          f"{res['scorer_hop_ms'] / 100:.4f} (StreamingScorer.push, as `kws stream` runs)")
    if "stem_hop_ms" in res:
        per_hop = res["stem_hop_ms"] + res["tail_window_ms"]
        print(f"  embedding per 100-ms hop: {per_hop:.3f} ms (stem on the 10 new frames + tail) against "
              f"{res['embed_window_ms']:.3f} ms for the whole window, {res['embed_window_ms'] / per_hop:.2f}x")
    print(f"  peak RSS {peak_rss_mb():.0f} MB")
    naive_ms = res.get("naive_ms", float("nan"))
    print(f"naive_ms={naive_ms:.3f} model_ms={res['model_ms']:.3f} classifier_ms={res['classifier_ms']:.3f} "
          f"speedup_vs_naive={naive_ms / res['model_ms']:.2f} frontend_overhead={res['model_ms'] / res['classifier_ms']:.3f}")


if __name__ == "__main__":
    main()
