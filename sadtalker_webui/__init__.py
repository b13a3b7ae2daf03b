"""SadTalker for AUTOMATIC1111 / Forge: the tab, the HTTP API and the host adapter.

``scripts/sadtalker_tab.py`` registers them with the host; nothing here runs at import time.
Only ``host.py`` imports the host's ``modules.*``; the rest is testable without a webui.
"""
