#!/usr/bin/env bash
# One-time set-up on a fresh Linux machine (safe to run again: it only does what is missing).
#  - system packages: espeak-ng and flite (speech synthesis), PortAudio + PulseAudio (microphone,
#    and the virtual microphone the tests use), sox (handy for audio checks);
#  - a virtual environment in .venv with this project and its extras: mic, tts, dev.
# Pinned: torch 2.11.0 with torchaudio 2.11.0 (torchaudio 2.11 only loads with torch 2.11, and 2.11.1,
# built against a later torch, not with 2.11.0).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng flite libportaudio2 libsndfile1 pulseaudio libasound2-plugins sox)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: cannot install ${missing[*]}: no apt-get here; install them with your package manager" >&2
  elif [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "setup: cannot install ${missing[*]}: not root and no sudo; ask an administrator, then run again" >&2
  else
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup: Python >= 3.10 is needed ($PY is $("$PY" --version 2>&1))" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.kws-installed"
want="$(sha1sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (torch 2.11 is large: a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[mic,tts,dev]"
  echo "$want" > "$stamp"
fi
.venv/bin/python -c 'import torch, torchaudio, onnxruntime; print(f"setup: ok (torch {torch.__version__}, torchaudio {torchaudio.__version__}, onnxruntime {onnxruntime.__version__}, CUDA {torch.cuda.is_available()})")'
