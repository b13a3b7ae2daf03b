"""``modules.safe``: A1111 replaces ``torch.load`` with a checker that ignores ``weights_only`` and
returns None for a file it refuses. This stand-in refuses every file (the worst case), so a core
that went through ``torch.load`` here would get None."""

import logging

import torch

log = logging.getLogger(__name__)
refused: list[str] = []


def load(filename, *args, **kwargs):
    refused.append(str(filename))
    log.error("Error verifying pickled file from %s: the file may be malicious", filename)
    return None


unsafe_torch_load = torch.load
torch.load = load
