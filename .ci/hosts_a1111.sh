#!/usr/bin/env bash
# Environment of the AUTOMATIC1111 / Forge tests (tests/test_a1111.py); idempotent, fast when done.
#  - chromium (Debian package) for the playwright browser test; playwright into the venv;
#  - gradio 3.41.2 (A1111 1.10's pins) and gradio 4.40.0 (Forge's pins) each in its own
#    --target folder, so the venv's packages (torch, numpy 2) are untouched. The pins avoid
#    pip's backtracking and match what the hosts ship (requirements_versions.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PIP=("$PY" -m pip install --disable-pip-version-check -q -c .ci/constraints.txt)

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
"$PY" -c "import playwright" 2>/dev/null || "${PIP[@]}" "playwright>=1.40"

install_target() {  # folder, import check, requirements...
    local dir=$1 check=$2
    shift 2
    if [ -f "$dir/.complete" ] && PYTHONPATH="$dir" "$PY" -c "$check" 2>/dev/null; then
        return
    fi
    rm -rf "$dir"
    "${PIP[@]}" --target "$dir" "$@"
    touch "$dir/.complete"
}

COMMON=(numpy==1.26.4 "pillow<11" uvicorn==0.30.1 h11==0.14.0 httpcore==0.17.3 httpx==0.24.1
    anyio==3.7.1 altair==5.3.0 pandas==2.2.2 matplotlib==3.9.0 jsonschema==4.22.0
    aiofiles==23.2.1 orjson==3.10.6 python-multipart==0.0.9 ffmpy==0.3.2 pyyaml==6.0.1
    markupsafe==2.1.5 jinja2==3.1.4 importlib-resources==6.4.0 semantic-version==2.10.0
    pydub==0.25.1 typing-extensions==4.12.2 requests==2.32.3 packaging==24.1 fsspec==2024.6.1)

install_target .ci/gradio3 "import gradio, gradio_client; assert gradio.__version__ == '3.41.2'" \
    gradio==3.41.2 gradio-client==0.5.0 fastapi==0.94.0 starlette==0.26.1 pydantic==1.10.17 \
    huggingface-hub==0.23.4 websockets==11.0.3 "${COMMON[@]}"
install_target .ci/gradio4 "import gradio, gradio_client; assert gradio.__version__ == '4.40.0'" \
    gradio==4.40.0 gradio-client==1.2.0 fastapi==0.104.1 starlette==0.27.0 pydantic==2.8.2 \
    huggingface-hub==0.24.5 websockets==12.0 tomlkit==0.12.0 typer==0.12.3 ruff==0.5.5 \
    urllib3==2.2.2 "${COMMON[@]}"
