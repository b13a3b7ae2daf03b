"""``modules.options``: OptionInfo and Options with the real constructor and lookup rules."""


class OptionInfo:
    def __init__(
        self,
        default=None,
        label="",
        component=None,
        component_args=None,
        onchange=None,
        section=None,
        refresh=None,
        comment_before="",
        comment_after="",
        infotext=None,
        restrict_api=False,
        category_id=None,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api


class Options:
    def __init__(self, data_labels, restricted_opts=None):
        object.__setattr__(self, "data_labels", dict(data_labels))
        object.__setattr__(self, "data", {k: v.default for k, v in data_labels.items()})

    def __setattr__(self, key, value):
        if key in self.data or key in self.data_labels:
            self.data[key] = value
            return
        object.__setattr__(self, key, value)

    def __getattr__(self, item):
        data = object.__getattribute__(self, "data")
        if item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        return object.__getattribute__(self, item)

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def set(self, key, value, is_api=False, run_callbacks=True):
        """A1111: False when unchanged, not saved, or ``restrict_api`` and set through the API."""
        if self.data.get(key, None) == value:
            return False
        option = self.data_labels[key]
        if option.do_not_save:
            return False
        if is_api and option.restrict_api:
            return False
        setattr(self, key, value)
        return True
