"""``modules.script_callbacks``: the registration functions and the runners the webui calls.

As in A1111, an exception in a callback is reported and swallowed (a raising ui_tabs callback
makes its tab vanish); Forge adds the keyword ``name=``."""

import inspect
import os
import traceback
from collections import namedtuple

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])
callback_map = {
    "callbacks_app_started": [],
    "callbacks_ui_tabs": [],
    "callbacks_ui_settings": [],
    "callbacks_script_unloaded": [],
}
errors: list[str] = []


def report_exception(c, job):
    errors.append(f"Error executing callback {job} for {c.script}\n{traceback.format_exc()}")
    print(errors[-1])  # noqa: T201


def add_callback(callbacks, fun, *, name=None):
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    callbacks.append(ScriptCallback(filename, fun, name or os.path.basename(filename)))


def app_started_callback(demo, app):
    for c in callback_map["callbacks_app_started"]:
        try:
            c.callback(demo, app)
        except Exception:
            report_exception(c, "app_started_callback")


def ui_tabs_callback():
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception:
            report_exception(c, "ui_tabs_callback")
    return res


def ui_settings_callback():
    for c in callback_map["callbacks_ui_settings"]:
        try:
            c.callback()
        except Exception:
            report_exception(c, "ui_settings_callback")


def on_app_started(callback, *, name=None):
    add_callback(callback_map["callbacks_app_started"], callback, name=name)


def on_ui_tabs(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_tabs"], callback, name=name)


def on_ui_settings(callback, *, name=None):
    add_callback(callback_map["callbacks_ui_settings"], callback, name=name)


def on_script_unloaded(callback, *, name=None):
    add_callback(callback_map["callbacks_script_unloaded"], callback, name=name)
