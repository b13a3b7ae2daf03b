#!/usr/bin/env bash
# The test environment on top of the quickstart's .venv (README, section Development); CI runs
# it too. Idempotent and quick when everything is there; needs the network the first time.
#  - requirements-test.txt (pytest and the packages the tests compare with or drive), pinned to
#    the torch and torchvision already installed, so that none is swapped;
#  - facexlib and face-alignment without their declared dependencies: both require
#    `opencv-python` by name, which would install a second cv2 next to the quickstart's
#    opencv-python-headless (any one cv2 distribution serves; their other dependencies are in
#    requirements-test.txt);
#  - the AUTOMATIC1111 / Forge test hosts (.ci/hosts_a1111.sh: gradio 3 and 4 in their own
#    folders, chromium and playwright for the browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "test_env.sh: no .venv here; run bash quickstart.sh first (or bash .ci/run)." >&2
    exit 1
fi
PIP=("$PY" -m pip install --disable-pip-version-check -q)

pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
"$PY" - >"$pins" <<'PYEOF'
import importlib.metadata as m
for n in ("torch", "torchvision"):
    try:
        print(f"{n}=={m.version(n)}")
    except m.PackageNotFoundError:
        pass
PYEOF

"${PIP[@]}" -c "$pins" -r requirements-test.txt
"${PIP[@]}" -c "$pins" --no-deps -r requirements-test-nodeps.txt
"$PY" -c "import cv2" 2>/dev/null || "${PIP[@]}" -c "$pins" "opencv-python-headless>=4.9"
cv2s=$("$PY" - <<'PYEOF'
import importlib.metadata as m
names = {d.metadata["Name"].lower() for d in m.distributions()}
print(" ".join(sorted(n for n in names if n.startswith("opencv-"))))
PYEOF
)
case "$cv2s" in
    *" "*) echo "test_env.sh: note: several cv2 distributions are installed ($cv2s); one is enough." >&2 ;;
esac

bash .ci/hosts_a1111.sh
echo "Test environment ready: python -m pytest tests (with the venv active)."
