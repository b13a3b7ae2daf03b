"""``launch``: what an extension's install.py uses (A1111 ``modules/launch_utils.py``).

``run_pip`` records the command in $SADTALKER_RUN_PIP_LOG (one per line) instead of running pip."""

import importlib.metadata
import importlib.util
import os
import sys

python = sys.executable
index_url = os.environ.get("INDEX_URL", "")


def is_installed(package):
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            return False
        return spec is not None
    return dist is not None


def run_pip(command, desc=None, live=False):
    index_url_line = f" --index-url {index_url}" if index_url != "" else ""
    line = f'"{python}" -m pip {command} --prefer-binary{index_url_line}'
    constraint = command.split(" -c ", 1)[1].split('"')[1] if " -c " in command else None
    with open(os.environ["SADTALKER_RUN_PIP_LOG"], "a") as f:
        f.write(line + "\n")
        if constraint:  # install.py deletes it afterwards: keep what it pinned
            with open(constraint) as c:
                f.write("".join(f"constraint: {pin}\n" for pin in c.read().split()))
    return ""
