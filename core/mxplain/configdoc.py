"""The config reference (docs/config.md), generated from the registered components' constructors.

``python -m mxplain.configdoc > docs/config.md``; a test fails when the file is out of date, so a
new key cannot go undocumented.
"""

from __future__ import annotations

import inspect

from mxplain import plugins
from mxplain.config import RUN_DEFAULTS, RUN_DOC

KIND_TABLE = {"dataset": "[data]", "predictor": "[predictor]", "editor": "[editor]",
              "explainer": "[explain.<name>]"}


def _fmt(value) -> str:
    if isinstance(value, str):
        return f'`"{value}"`'
    if value is None:
        return "*(unset)*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value!r}`".replace("|", "\\|")


def _summary(cls) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def render() -> str:
    lines = ["# Config reference", "",
             "Generated from the code by `python -m mxplain.configdoc > docs/config.md` "
             "(a test keeps it current).", "",
             "A config is TOML with the tables `[data]`, `[predictor]`, `[editor]`, "
             "`[explain.<explainer name>]`, `[run]` and `[trust]`. `name` selects a registered "
             "component; the "
             "other keys are its parameters below. `checkpoint = \"PATH\"` in `[predictor]` or "
             "`[editor]` loads a trained model instead of training one (relative to the config "
             "file); next to it only the component's `inference_params` may be set (how the "
             "trained model is used, e.g. the AttGAN's `edit_mode`), the rest is the "
             "checkpoint's own and another key there is an error. Unknown keys are errors that "
             "suggest the closest valid key.", "",
             "## [run]", "", "| key | default | meaning |", "| --- | --- | --- |"]
    for key, default in RUN_DEFAULTS.items():
        lines.append(f"| `{key}` | {_fmt(default)} | {RUN_DOC[key]} |")
    from mxplain.trust import TRUST_DEFAULTS, TRUST_DOC

    lines += ["", "## [trust]", "",
              "Thresholds of the trust gates (checks that need no ground truth, `metrics.json`'s "
              "`trust`; docs/concepts.md, \"Trust gates\"). Each pass threshold must lie on the "
              "good side of its warn threshold.", "",
              "| key | default | meaning |", "| --- | --- | --- |"]
    for key, default in TRUST_DEFAULTS.items():
        lines.append(f"| `{key}` | {_fmt(default)} | {TRUST_DOC[key]} |")
    reg = plugins.registry()
    for kind, table in KIND_TABLE.items():
        for name in sorted(reg[kind]):
            entry = reg[kind][name]
            cls = entry.cls
            sel = (f'`name = "{name}"`' if kind != "explainer" else f"table `[explain.{name}]`")
            lines += ["", f"## {table} {name}", "",
                      f"{_summary(cls)} ({sel}; plugin `{entry.plugin}`, distribution "
                      f"`{entry.distribution}`)", ""]
            params = cls.param_defaults()
            if not params:
                lines.append("No parameters.")
                continue
            lines += ["| key | default |", "| --- | --- |"]
            for key, default in params.items():
                lines.append(f"| `{key}` | {_fmt(default)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
