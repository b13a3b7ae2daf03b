"""Import-direction check of sadtalker_core (run by .ci/run; exit 1 on a violation).

Rules (every import counts, also those inside functions):
1. the library imports no host: ComfyUI, A1111/Forge, gradio, or this pack's adapters;
2. stage packages (face, coeffs, render, paste, enhance) import neither the pipeline nor the CLI;
3. models/ imports no stage, nor the pipeline or the CLI;
4. the base modules (errors, progress, types, devices, io/) import no stage, models/, pipeline or
   CLI;
5. only the CLI imports the CLI.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = "sadtalker_core"
HOSTS = {
    "comfy",
    "comfy_extras",
    "comfy_api",
    "folder_paths",
    "server",
    "execution",
    "nodes",
    "modules",
    "launch",
    "gradio",
    "gradio_client",
    "backend",
    "scripts",
    "sadtalker_webui",
}
STAGES = {"face", "coeffs", "render", "paste", "enhance"}
TOP = {"pipeline", "cli"}
BASE = {"errors", "progress", "types", "devices", "io"}


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (module name ``module``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # "from . import x" imports a submodule
            found += [(node.lineno, f"{name}.{a.name}") for a in node.names if not node.module]
    return found


def _part(module: str) -> str | None:
    """First component below sadtalker_core ('face', 'models', 'pipeline', ...)."""
    parts = module.split(".")
    if parts[0] != CORE or len(parts) < 2:
        return None
    return parts[1]


def violations(root: Path = ROOT) -> list[str]:
    problems = []
    for path in sorted((root / CORE).rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        module = ".".join(p for p in rel.parts if p != "__init__")
        here = _part(module) or ""
        for line, target in _imports(path, module):
            where = f"{path.relative_to(root)}:{line} imports {target}"
            top = target.split(".")[0]
            if top in HOSTS:
                problems.append(f"{where}: the library imports no host")
                continue
            part = _part(target)
            if part is None:
                continue
            if here in STAGES and part in TOP:
                problems.append(f"{where}: a stage imports neither the pipeline nor the CLI")
            elif here == "models" and (part in STAGES or part in TOP):
                problems.append(f"{where}: models/ imports no stage")
            elif here in BASE and (part in STAGES or part in TOP or part == "models"):
                problems.append(f"{where}: the base modules import no stage, models/ or CLI")
            elif part == "cli" and here not in ("cli", "__main__"):
                problems.append(f"{where}: only the CLI imports the CLI")
    return problems


def main() -> int:
    problems = violations()
    for p in problems:
        print(p)  # noqa: T201
    print(f"import directions: {len(problems)} violation(s)")  # noqa: T201
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
