"""``sadtalker serve``: the live WebSocket endpoint and its browser page, outside any webui."""

from __future__ import annotations

import argparse
import logging

from ..errors import MissingDependencyError
from .common import say

log = logging.getLogger(__name__)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the live endpoint /sadtalker/v1/stream and its page (photo + microphone)",
        description="Starts a FastAPI server (needs 'pip install fastapi uvicorn[standard]'): "
        "the WebSocket endpoint /sadtalker/v1/stream, as in the A1111/Forge API, and a page at "
        "http://HOST:PORT/stream to pick a photo, speak or choose an audio file and watch the "
        "head talk as the speech streams. Listens on 127.0.0.1 only, unless --host says so.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7861, help="TCP port")
    p.add_argument(
        "--checkpoint-dir", "--checkpoint_dir", dest="checkpoint_dir", help="checkpoint folder"
    )
    p.add_argument("--device", default=None, help="torch device (default: the best available)")
    p.add_argument(
        "--max_seconds",
        "--max-seconds",
        type=float,
        default=0.0,
        help="longest audio one stream may send, in seconds; past it the stream ends with an "
        "error naming this flag (default: %(default)s = no limit)",
    )
    p.add_argument(
        "--max_photo_mb",
        "--max-photo-mb",
        type=float,
        default=6.0,
        help="largest start photo, decoded, in MB (default: %(default)s)",
    )
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as e:
        raise MissingDependencyError("uvicorn", "sadtalker serve") from e
    from ..pipeline import SadTalkerPipeline
    from ..stream_server import build_app

    pipe = SadTalkerPipeline(args.checkpoint_dir, args.device)
    app = build_app(
        lambda: pipe,
        max_seconds=args.max_seconds,
        limit_setting="--max_seconds",
        limit_hint="the sadtalker serve command",
        max_photo_mb=args.max_photo_mb,
        photo_setting="--max_photo_mb",
    )
    service = app.state.stream_service
    # the transport's own cap stays above the start message the photo limit allows
    ws_max = max(16 << 20, service.start_bytes(service.photo_limit()) + (1 << 20))
    say(f"SadTalker live: http://{args.host}:{args.port}/stream (Ctrl-C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", ws_max_size=ws_max)
    return 0
