#!/usr/bin/env bash
# Fresh machine, one command: install into .venv, fetch the official weights, verify them and
# render the bundled example to results/portrait__speech.mp4.
# Offline it stops at the download step with the list of files to fetch by hand and where to put them.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
fi
.venv/bin/python - > .venv/host-pins.txt <<'PYEOF'
import importlib.metadata as m
for n in ("torch", "torchvision"):
    try:
        print(f"{n}=={m.version(n)}")
    except m.PackageNotFoundError:
        pass
PYEOF
"${PIP[@]}" -c .venv/host-pins.txt -r requirements.txt
# spandrel builds the face enhancers (--enhancer); it needs torchvision, which this venv has.
"${PIP[@]}" -c .venv/host-pins.txt "spandrel>=0.4"
"${PIP[@]}" -c .venv/host-pins.txt --no-deps -e .

CKPT=${SADTALKER_CHECKPOINTS:-checkpoints}
.venv/bin/python -m sadtalker_core download-weights "$CKPT" --size "${SADTALKER_SIZE:-256}"
.venv/bin/python -m sadtalker_core check-weights "$CKPT"
.venv/bin/python -m sadtalker_core --source_image examples/portrait.png --driven_audio examples/speech.wav \
    --checkpoint_dir "$CKPT" --result_dir results
