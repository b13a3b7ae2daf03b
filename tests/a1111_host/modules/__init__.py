"""Stand-ins for the parts of AUTOMATIC1111 / Forge the extension touches, written after the real
signatures (A1111 1.10 / Forge ``modules/*.py``); only what the SadTalker tab uses."""
