"""Export a trained run to ONNX for onnxruntime on the CPU (`kws export`).

Three graphs, each carrying the same metadata (labels, sample rate, config JSON, thresholds):

    model.onnx           waveform (batch, clip_samples) float32 16 kHz -> probs (batch, classes)
                         front-end inside the graph as Conv (framing + real DFT) + MatMul work
    model.frames.onnx    frames (batch, n_frames, n_mfcc) -> probs: the classifier alone on the model's
                         window (n_frames is fixed: the window the model was trained on), which the
                         stream re-scores every hop over its frame cache
    model.frontend.onnx  waveform (1, samples), any length >= n_fft -> frames (1, frames, n_mfcc):
                         the stream computes only the new frames of each hop with it

With the embedding head three more, for the stream's stem and vector caches (pipeline/stream.py):

    model.embed_stem.onnx  the embedding's convolutional stem as a stream (embedding_net.EmbeddingStem):
                           the next log-mel frames (1, 2k, 32) and the state its last call returned
                           (state0..5, the last 2 rows of its 3-row convolutions) -> k positions (1, 72, k, 8)
                           and the new state; metadata ``embed_stem``: its time stride and field
    model.embed_tail.onnx  one window's positions (windows, 72, 28, 8) -> vectors (windows, 96)
    model.cached.onnx      frames (1, n_frames, n_mfcc) and vectors (1, head windows, 96) -> probs

``--int8`` adds ``model.int8.onnx`` and ``model.frames.int8.onnx`` (and ``model.cached.int8.onnx``;
onnxruntime dynamic quantisation).
Several runs (same words and front-end) export as one ensemble: the same three graphs, with the
members' probabilities averaged (pipeline/ensemble.py) and an ``ensemble`` metadata entry.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from .config import HeadConfig, RunConfig
from .embedding_head import CachedHead, HeadFrontend, WithHead, head_path, load_head
from .word_head import gate_open
from .word_net import WORD_BANDS
from .runtime import pool_word_np
from .embedding_net import split_net, stem_positions
from .ensemble import load_ensemble, mean_thresholds
from .errors import ConfigError, ModelError
from .features import MFCC
from .model import FramesClassifier, WaveformClassifier
from .speech_embedding import DIM, N_MELS, WINDOW_FRAMES

PRODUCER = "kws-pipeline"
OPSET = 17


def metadata(cfg: RunConfig, kind: str, thresholds: dict[str, float], members: list[dict] | None = None,
             head: HeadConfig | None = None) -> dict[str, str]:
    meta = {"labels": json.dumps(list(cfg.labels)), "sample_rate": str(cfg.features.sample_rate),
            "config": cfg.to_json(), "kind": kind, "thresholds": json.dumps(thresholds)}
    if members and len(members) > 1:
        meta["ensemble"] = json.dumps(members)
    if head is not None:
        meta["embedding_head"] = head.to_json()
    return meta


def _export(module: torch.nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: Path,
            in_name: str | list[str], out_name: str | list[str], dynamic: dict[int, tuple[str, int]] | list[dict],
            meta: dict[str, str], dynamo: bool = False) -> None:
    """Export ``module`` on ``example`` (one input or a tuple), with ``dynamic``: {axis: (name, min)} per
    input (the output's first axis follows the first input's), then add ``meta``, check and rename
    into place.

    torch.onnx's TorchScript exporter (``dynamo=False``): it maps ``nn.LSTM`` to one ONNX LSTM node
    with its weights as initializers, in 0.3 s for a small model. The dynamo exporter gives the same
    graph function (the parity tests pass with either) but computes every LSTM's output shape by
    unrolling its decomposition over all time steps with a symbolic batch size, three times per
    graph: 114 s for a tiny model's five graphs on a 2-core CPU, against 5 s this way. ``dynamo=True``
    is torch 2.11's default exporter, for scripts/bench_inference.py's naive baseline (torchaudio's
    complex STFT, which only that exporter takes)."""
    examples = example if isinstance(example, tuple) else (example,)
    names = in_name if isinstance(in_name, list) else [in_name]
    outs = out_name if isinstance(out_name, list) else [out_name]
    dyn = dynamic if isinstance(dynamic, list) else [dynamic]
    axes = {n: {i: name for i, (name, _) in d.items()} for n, d in zip(names, dyn)}
    if 0 in dyn[0]:
        axes[outs[0]] = {0: dyn[0][0][0]}
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        if dynamo:
            shapes = tuple({i: torch.export.Dim(n, min=m) for i, (n, m) in d.items()} for d in dyn)
            torch.onnx.export(module.eval(), examples, str(tmp), dynamo=True, input_names=names,
                              output_names=outs, dynamic_shapes=shapes, external_data=False, verbose=False)
        else:
            torch.onnx.export(module.eval(), examples, str(tmp), dynamo=False, input_names=names,
                              output_names=outs, dynamic_axes=axes, opset_version=OPSET)
    model = onnx.load(str(tmp))
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    model.producer_name = PRODUCER
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace each node whose inputs are all constants by initializers of its outputs (in place),
    in graph order, so chains of them fold: the LSTM weights become initializers."""
    from onnx.reference import ReferenceEvaluator
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    for node in list(g.node):
        if node.op_type.startswith("Random") or not all(i in inits for i in node.input if i):
            continue
        feeds = {i: onnx.numpy_helper.to_array(inits[i]) for i in node.input if i}
        for name, value in zip(node.output, ReferenceEvaluator(node).run(None, feeds)):
            inits[name] = onnx.numpy_helper.from_array(np.asarray(value), name)
            g.initializer.append(inits[name])
        g.node.remove(node)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model


def quantize(src: Path, dst: Path) -> None:
    """Dynamic INT8 quantisation of the classifier's weights (LSTM, Gemm); metadata is kept.

    The front-end stays float32: quantising its DFT bases and mel/DCT matrices to 8 bits wrecks
    the log-mel features (measured: 15% on real speakers instead of 75%)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    pre = dst.with_name(f".{dst.name}.pre")
    # Constant-fold first: only weights that are initializers can be quantised, and a graph may build
    # some from constants with Concat/Reshape nodes (the dynamo exporter did so for every LSTM).
    # onnxruntime 1.32's pre-processing folds them; 1.30's leaves some, so they are folded here first.
    model = onnx.load(str(src))
    onnx.save(_fold_constants(model), str(pre))
    quant_pre_process(str(pre), str(pre), skip_symbolic_shape=True)
    # Drop the shapes it recorded: onnxruntime 1.30's quantiser re-infers them strictly and stops
    # at one it infers differently (a (batch, 512) head input against (batch, 22)); 1.32 does not.
    m = onnx.load(str(pre))
    del m.graph.value_info[:]
    onnx.save(m, str(pre))
    quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM", "Gemm"])
    pre.unlink(missing_ok=True)
    m = onnx.load(str(dst))
    if any(n.op_type == "LSTM" for n in m.graph.node):          # an INT8 model that is not one
        import onnxruntime
        dst.unlink()
        raise ModelError(f"--int8: onnxruntime {onnxruntime.__version__} left the LSTM float, so no {dst.name} was "
                         "written (1.30 and 1.32 quantise it)")
    if not m.metadata_props:
        for p in model.metadata_props:                        # folding left the metadata as it was
            m.metadata_props.add(key=p.key, value=p.value)
        onnx.save(m, str(dst))


def load_thresholds(run: Path) -> dict[str, float]:
    f = Path(run) / "thresholds.json" if Path(run).is_dir() else Path(run).with_name("thresholds.json")
    return json.loads(f.read_text()) if f.is_file() else {}


def export_run(run: Path | list[Path], out: Path | None = None, int8: bool = False,
               check_clips: np.ndarray | None = None, log=print, head: bool = True,
               whisper: bool = False, whisper_non_keywords: bool = False) -> dict[str, Path]:
    """Export ``run`` (a run folder or .pt, or a list of them: an ensemble) -> {name: path}.
    With ``head`` and a ``head.pt`` beside the first run's checkpoint (`kws train-head`), the graphs
    pool the embedding head's probabilities with the BiLSTM's (``HeadConfig.pooling``); their frames are then MFCC and
    embedding log-mel side by side (n_mfcc + 32 per frame). With ``whisper``, also
    ``model.whisper.onnx``: Whisper tiny.en scoring the model's words (pipeline/whisper_export.py),
    which depends on the labels only and is kept across later exports without it; with
    ``whisper_non_keywords`` it also scores `kws synth`'s non-keywords, for its ``_unknown_``.
    Checks onnxruntime against PyTorch."""
    import onnxruntime as ort

    runs = [Path(r) for r in run] if isinstance(run, (list, tuple)) else [Path(run)]
    if len(runs) > 1 and out is None:
        raise ConfigError("--out: give the output .onnx file when exporting several runs as one model")
    cfg, clf, members = load_ensemble(runs)
    thresholds = mean_thresholds([load_thresholds(r) for r in runs])
    out = Path(out) if out else (runs[0] if runs[0].is_dir() else runs[0].parent) / "model.onnx"
    if out.is_dir():
        out = out / "model.onnx"
    if out.suffix != ".onnx":
        raise ConfigError(f"--out {out}: give a file name ending in .onnx (or a folder, for FOLDER/model.onnx)")
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.with_suffix("")
    paths = {"model": out, "frames": Path(f"{base}.frames.onnx"), "frontend": Path(f"{base}.frontend.onnx")}
    f = cfg.features
    hcfg, logmel, width = None, None, f.n_mfcc
    if head and head_path(runs[0]).is_file():
        hcfg, emb_head, logmel = load_head(head_path(runs[0]), cfg.labels, f)
        word = WORD_BANDS if emb_head.word is not None else 0
        clf, width = WithHead(clf, emb_head, f.n_mfcc).eval(), f.n_mfcc + N_MELS + word
        thresholds = emb_head.thresholds or thresholds
        log(f"with the embedding head {head_path(runs[0])} (`--no-head` leaves it out)")
    elif head:
        log(f"note: no embedding head ({head_path(runs[0])}): the BiLSTM alone, far less accurate on real "
            f"voices when its training voices were synthetic (FSDD 71% against 86% with one); "
            f"`kws train-head {runs[0]} --data ...` trains it, then export again")

    def frontend(use_dft: bool) -> torch.nn.Module:
        mfcc = MFCC(f, use_dft=use_dft)
        return mfcc if logmel is None else HeadFrontend(mfcc, logmel, word=hcfg.word)

    meta = lambda kind: metadata(cfg, kind, thresholds, members, hcfg)
    wave_model = WaveformClassifier(f, clf, frontend=frontend(True)).eval()
    wave = torch.zeros(2, f.clip_samples)
    _export(wave_model, wave, paths["model"], "waveform", "probs", {0: ("batch", 1)}, meta("waveform"))
    feats = torch.zeros(2, f.n_frames, width)
    # frames: the model's window (n_frames); the exported LSTM has a fixed number of steps anyway
    _export(FramesClassifier(clf), feats, paths["frames"], "frames", "probs", {0: ("batch", 1)}, meta("frames"))
    _export(frontend(True), torch.zeros(1, f.clip_samples), paths["frontend"], "waveform", "frames",
            {1: ("samples", f.n_fft)}, meta("frontend"))
    Path(f"{base}.embed.onnx").unlink(missing_ok=True)         # the whole embedding, before the stem cache
    if hcfg is not None:
        # the stream's caches: the embedding's stem run once per frame, each window's vector once
        for k in ("embed_stem", "embed_tail", "cached"):
            paths[k] = Path(f"{base}.{k}.onnx")
        stem, tail = split_net(clf.head.embedding, hcfg.stride)
        geometry = json.dumps({"time_stride": stem.time_stride, "field": stem.field})
        states = stem.zero_states(N_MELS)
        names = [f"state{i}" for i in range(len(states))]
        _export(stem, (torch.zeros(1, 10 * stem.time_stride, N_MELS), *states), paths["embed_stem"],
                ["logmel", *names], ["stem", *(f"{n}_out" for n in names)],
                [{1: ("frames", stem.time_stride)}] + [{}] * len(states), {**meta("embed_stem"), "embed_stem": geometry})
        with torch.no_grad():      # the positions of one window: the stem from zero states, less those that saw them
            d, n = stem.time_stride, stem_positions(stem, WINDOW_FRAMES)
            g = stem.field // d - 1
            one = stem(torch.zeros(1, -(-WINDOW_FRAMES // d) * d, N_MELS), *states)[0][:, :, g:g + n]
        assert one.shape[2] == n
        _export(tail, one.expand(2, -1, -1, -1).contiguous(), paths["embed_tail"], "stem", "vectors",
                {0: ("windows", 1)}, meta("embed_tail"))
        _export(CachedHead(clf), (torch.zeros(1, f.n_frames, f.n_mfcc), torch.zeros(1, hcfg.windows, DIM)),
                paths["cached"], ["frames", "vectors"], "probs", [{}, {}], meta("cached"))
        if clf.head.word is not None:      # the word head, which the stream runs where its gate opens
            paths["word"] = Path(f"{base}.word.onnx")
            _export(clf.head.word, torch.zeros(1, f.n_frames, WORD_BANDS), paths["word"], "frames", "logprobs",
                    {}, meta("word"))
        else:
            Path(f"{base}.word.onnx").unlink(missing_ok=True)
    else:                   # a head's graphs from an earlier export would no longer match these
        for name in ("embed_stem.onnx", "embed_tail.onnx", "cached.onnx", "cached.int8.onnx", "word.onnx"):
            Path(f"{base}.{name}").unlink(missing_ok=True)
    if int8:
        paths["model_int8"] = Path(f"{base}.int8.onnx")
        paths["frames_int8"] = Path(f"{base}.frames.int8.onnx")
        quantize(paths["model"], paths["model_int8"])
        quantize(paths["frames"], paths["frames_int8"])
        if hcfg is not None:
            paths["cached_int8"] = Path(f"{base}.cached.int8.onnx")
            quantize(paths["cached"], paths["cached_int8"])

    x = check_clips if check_clips is not None else (np.random.default_rng(0).standard_normal((4, f.clip_samples)) * 0.1)
    x = np.asarray(x, np.float32)
    sess = ort.InferenceSession(str(paths["model"]), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"waveform": x})[0]
    with torch.no_grad():
        ref = WaveformClassifier(f, clf, frontend=frontend(False)).eval()(torch.from_numpy(x)).numpy()
    err = float(np.abs(got - ref).max())
    what = f"{len(runs)} runs averaged, " if len(runs) > 1 else ""
    log(f"exported {paths['model']} ({what}{paths['model'].stat().st_size / 1e6:.2f} MB); onnxruntime vs PyTorch "
        f"max |dp| = {err:.2e} on {len(x)} clips")
    if err > 1e-4:
        raise RuntimeError(f"ONNX output differs from PyTorch by {err:.2e} (> 1e-4)")
    if hcfg is not None:
        err = float(np.abs(_cached_scores(paths, x, clf.head.starts, f.n_mfcc, clf.head.word) - got).max())
        if err > 1e-4:
            raise RuntimeError(f"the stream's cached graphs differ from {paths['model'].name} by {err:.2e} (> 1e-4)")
    if whisper:
        from .datasets.synth import UNKNOWN_WORDS
        from .whisper_export import write_whisper_graphs
        paths |= write_whisper_graphs(list(cfg.labels), paths["model"], int8, log=log,
                                      non_keywords=list(UNKNOWN_WORDS) if whisper_non_keywords else [])
    return paths


def _cached_scores(paths: dict[str, Path], x: np.ndarray, starts: list[int], n_mfcc: int, word=None) -> np.ndarray:
    """(batch, clip_samples) -> (batch, classes) through the frontend, embed_stem, embed_tail and cached
    graphs, as the stream starts: the stem from zero states over the frames from the first window's
    start, less its outputs that saw the zero states."""
    import onnxruntime as ort
    sessions = {k: ort.InferenceSession(str(paths[k]), providers=["CPUExecutionProvider"])
                for k in ("frontend", "embed_stem", "embed_tail", "cached", "word") if k in paths}
    run = lambda name, feeds: sessions[name].run(None, feeds)[0]
    geometry = json.loads(sessions["embed_stem"].get_modelmeta().custom_metadata_map["embed_stem"])
    d, field = geometry["time_stride"], geometry["field"]
    zeros = {i.name: np.zeros(i.shape, np.float32) for i in sessions["embed_stem"].get_inputs()[1:]}
    n = sessions["embed_tail"].get_inputs()[0].shape[2]                              # positions per window
    out = []
    for clip in x:
        feats = run("frontend", {"waveform": clip[None]})                                 # (1, frames, n_mfcc + 32)
        logmel = feats[:, starts[0]:, n_mfcc:n_mfcc + N_MELS]
        logmel = np.ascontiguousarray(logmel[:, :logmel.shape[1] // d * d])
        stem = run("embed_stem", {"logmel": logmel, **zeros})[:, :, field // d - 1:]   # position k: frame starts[0] + d k
        wins = np.stack([stem[0, :, (s - starts[0]) // d:(s - starts[0]) // d + n] for s in starts])
        vec = run("embed_tail", {"stem": wins})[None]
        p = run("cached", {"frames": np.ascontiguousarray(feats[:, :, :n_mfcc]), "vectors": vec})
        if word is not None and gate_open(p, word.keywords.numpy(), word.gate)[0]:
            p = pool_word_np(p, run("word", {"frames": np.ascontiguousarray(feats[:, :, n_mfcc + N_MELS:])}))
        out.append(p[0])
    return np.stack(out)
