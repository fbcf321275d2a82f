"""Small Sphinx extension of the course book: the notebook reader and each notebook page's header.

* :func:`read_notebook` reads a jupytext percent ``.py`` notebook (MyST-NB ``nb_custom_formats``);
  cells tagged ``solution`` get MyST-NB's ``hide-input`` tag, so the answer is one click away.
* Every page under ``notebooks/`` starts with a launch-on-Binder button and a download of its ``.py``
  source.  The Binder URL is the template ``binder_url`` of ``[tool.tutor.book]`` in pyproject.toml
  with ``{path}`` replaced by the notebook's path in the repository (``notebooks/NN_name.py``) and
  ``{github}`` by ``owner/repo`` (see book/build.py).
"""

from __future__ import annotations

import html
import json
import os

from docutils import nodes

SETTINGS = json.loads(os.environ.get("TUTOR_BOOK_SETTINGS", "{}"))


def read_notebook(text: str, **kwargs):
    import jupytext

    nb = jupytext.reads(text, fmt="py:percent")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "solution" in [t.lower() for t in tags] and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    return nb


def binder_url(path: str) -> str:
    template = SETTINGS.get("binder_url", "")
    return template.format(path=path, github=SETTINGS.get("github", "OWNER/REPO")) if template else ""


def _add_header(app, doctree):
    docname = app.env.docname
    if not docname.startswith("notebooks/"):
        return
    name = docname.split("/", 1)[1]
    url = binder_url(f"notebooks/{name}.py")
    parts = ['<div class="tutor-launch" role="group" aria-label="Run this notebook">']
    if url:
        parts.append(f'<a class="tutor-binder btn" href="{html.escape(url)}" rel="noopener">'
                     '&#9654; Launch on Binder</a>')
    parts.append(f'<a class="tutor-download btn" href="{html.escape(name)}.py" download>'
                 f'&#8681; Download {html.escape(name)}.py</a>')
    parts.append("<span class=\"tutor-launch-note\">Run it locally with <code>python3 run.py lab</code>; "
                 "the figures below come from the book's own execution at the default settings.</span></div>")
    raw = nodes.raw("", "".join(parts), format="html")
    sections = list(doctree.findall(nodes.section))
    if sections:
        title = sections[0].next_node(nodes.title)
        sections[0].insert(sections[0].index(title) + 1 if title is not None else 0, raw)
    else:
        doctree.insert(0, raw)


CSS = """
.tutor-launch { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; margin: .5rem 0 1.2rem; }
.tutor-launch .btn { border: 1px solid var(--pst-color-border); border-radius: .3rem; padding: .25rem .7rem;
  text-decoration: none; font-weight: 600; }
.tutor-launch .btn:focus-visible { outline: 3px solid var(--pst-color-accent); }
.tutor-launch-note { font-size: .85rem; color: var(--pst-color-text-muted); }
"""


def _write_css(app):
    static = os.path.join(app.srcdir, "_static")
    os.makedirs(static, exist_ok=True)
    path = os.path.join(static, "tutor-book.css")
    if not os.path.exists(path) or open(path).read() != CSS:
        with open(path, "w") as f:
            f.write(CSS)
    app.add_css_file("tutor-book.css")


def setup(app):
    app.connect("builder-inited", _write_css)
    app.connect("doctree-read", _add_header)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
