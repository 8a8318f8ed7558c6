"""The one Jinja2 environment every template of the report is rendered with (the page in
:mod:`kpbench.report.html`, the plots in :mod:`kpbench.report.plots`): templates from
``kpbench/report/templates``, autoescaping on."""

from __future__ import annotations

from functools import cache
from importlib import resources

import jinja2
from markupsafe import Markup


@cache
def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("kpbench.report", "templates"),
        autoescape=True,  # every value is escaped unless a template marks it safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["css"] = Markup(resources.files("kpbench.report").joinpath("style.css").read_text("utf-8"))
    return env
