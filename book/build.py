"""Build the course book: a static, offline HTML site of every notebook, executed (``python3 run.py book``).

    python book/build.py            # build into _build/book/ and print the path of its index.html
    python book/build.py --serve    # build, then serve it on http://127.0.0.1:PORT/ (Ctrl-C stops)
    python book/build.py --serve-only [--port N]

Steps: (1) generate the Sphinx source folder ``_build/book-src/`` -- the landing, instructor's and data
pages made from README.md, data/README.md, data/results/ and the notebooks' headers, a copy of every
``notebooks/NN_*.py`` and MathJax from the ``sphinx-mathjax-offline`` package (files are rewritten only
when their content changed, so Sphinx rebuilds only what changed); (2) run Sphinx with book/conf.py
(MyST-NB executes each notebook once with no environment flag and caches it in ``_build/book-cache``:
an unchanged notebook is not executed again).  Nothing is downloaded.

Binder: each notebook page links to ``binder_url`` of ``[tool.tutor.book]`` in pyproject.toml, with
``{path}`` the notebook's path in the repository and ``{github}`` the ``owner/repo`` of the ``origin``
remote when it is on GitHub (else ``github`` of the same table).  ``TUTOR_BINDER_URL`` overrides the
template.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
SRC, OUT, CACHE = BUILD / "book-src", BUILD / "book", BUILD / "book-cache"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
SESSION_MIN = 90


# ----------------------------------------------------------------------------------------------- settings
def book_settings() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
        table = tomllib.loads(text).get("tool", {}).get("tutor", {}).get("book", {})
    except ImportError:                                  # Python 3.10: the two keys are plain strings
        table = dict(re.findall(r'^(binder_url|github)\s*=\s*"([^"]*)"', text, re.M))
    settings = {"binder_url": table.get("binder_url", ""), "github": table.get("github", "OWNER/REPO")}
    try:
        origin = subprocess.check_output(["git", "remote", "get-url", "origin"], cwd=ROOT, text=True,
                                         stderr=subprocess.DEVNULL).strip()
        m = re.match(r"(?:https://github\.com/|git@github\.com:)([\w.-]+/[\w.-]+?)(?:\.git)?/?$", origin)
        if m:
            settings["github"] = m.group(1)
    except (OSError, subprocess.CalledProcessError):
        pass
    if os.environ.get("TUTOR_BINDER_URL"):
        settings["binder_url"] = os.environ["TUTOR_BINDER_URL"]
    return settings


# ----------------------------------------------------------------------------------------------- sources
def write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def copy_if_changed(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        shutil.copy2(src, dst)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def readme_section(text: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}.*?\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    return m.group(1).strip() if m else ""


def _top_level_split(text: str, sep: str) -> tuple[str, str] | None:
    """Split at the first ``sep`` outside parentheses (for ". ": only before a capitalised word)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and text.startswith(sep, i):
            after = text[i + len(sep):]
            if sep == ". " and not re.match(r"[A-Z][a-z]", after):
                continue                                  # "App. G", "e.g. the"
            return text[:i], after
    return None


def one_line(result: str) -> str:
    """The headline of a README result bullet: its first sentence, after a leading 'setting: ', up to ';'."""
    first = _top_level_split(result + " ", ". ")
    sentence = (first[0] if first else result).strip()
    cut = _top_level_split(sentence, ": ")
    if cut and len(cut[1]) > 20:
        sentence = cut[1]
    cut = _top_level_split(sentence, "; ")
    sentence = (cut[0] if cut else sentence).strip().rstrip(".")
    return sentence[0].upper() + sentence[1:] + "." if sentence else ""


def notebook_info(readme: str) -> list[dict]:
    table = {m.group(1): m.groups() for m in
             re.finditer(r"^\| `(\d\d_\w+)` \| (.*?) \| (.*?) \| (.*?) \|\s*$", readme, re.M)}
    bullets = {}
    section = readme_section(readme, "What the experiments showed")
    for m in re.finditer(r"^\* \*\*(\d\d) [^*]*\*\* — (.*?)(?=^\* |^\s*$|\Z)", section, re.S | re.M):
        bullets[m.group(1)] = " ".join(m.group(2).split())
    info = []
    for path in NOTEBOOKS:
        src = path.read_text()
        title = re.search(r"^# # (.+)$", src, re.M)
        reading = re.search(r"Reading ≈ (\d+) min", src)
        row = table.get(path.stem)
        run = row[3] if row else ""
        seconds = re.match(r"\s*(\d+) s", run)
        nb = path.stem[:2]
        info.append({
            "stem": path.stem, "path": path, "title": title.group(1).strip() if title else path.stem,
            "paper": row[1] if row else "", "run": run, "seconds": int(seconds.group(1)) if seconds else None,
            "reading_min": int(reading.group(1)) if reading else None,
            "result": bullets.get(nb, ""), "headline": one_line(bullets[nb]) if nb in bullets else "—",
        })
    return info


def cell_census(path: Path) -> dict:
    """Counts of the cells an instructor plans around (from the jupytext source, no execution)."""
    import jupytext

    nb = jupytext.read(path)
    out = {"code": 0, "exercise": 0, "solution": 0, "check": 0, "widget": 0, "precomputed": 0, "files": set()}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        out["code"] += 1
        tags = [t.lower() for t in cell.metadata.get("tags", [])]
        for tag in ("exercise", "solution", "check"):
            out[tag] += tag in tags
        src = cell.source
        out["widget"] += "widgets.interactive(" in src
        if re.search(r"load_results\(|load_checkpoint\(|data/results|data/checkpoints", src):
            out["precomputed"] += 1
        out["files"].update(re.findall(r"[\w-]+\.(?:json|pt)\b", src))
    return out


def landing_page(info: list[dict], readme: str, settings: dict) -> str:
    intro = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    binder = settings["binder_url"].format(path="notebooks", github=settings["github"]) \
        if settings["binder_url"] else ""
    rows = "\n".join(
        f"| [{i['stem'][:2]} · {i['title'].split('·', 1)[-1].strip()}](notebooks/{i['stem']}) | {i['paper']} | "
        f"{i['reading_min'] or '?'} min + {i['run'] or '?'} | {i['headline']} |" for i in info)
    results = "\n".join(f"* **{i['stem']}** — {i['result']}" for i in info if i["result"])
    toc = "\n".join(f"notebooks/{i['stem']}" for i in info)
    return f"""# tutor — seven meta-learning papers, by running them

{intro}

**Who it is for.** Students and researchers who know PyTorch tensors, autograd and gradient descent and
want to understand meta-learning papers by rebuilding them: each notebook goes from the paper's
equations to readable code to a small, honest experiment against the paper's baseline. Instructors:
see [the instructor's page](instructor.md).

## The notebooks

Reading time from each notebook's header; compute time and kernel memory of the default run measured
on one CPU core (README.md); the result is the headline of README.md's summary (each notebook states it
with its confidence intervals).

| notebook | paper | time (reading + compute, memory) | result, in one line |
|---|---|---|---|
{rows}

Every page of this book shows the notebook executed once at its default settings by the book's build;
the widgets appear as their static figure at the default values.

## Run it yourself

Locally (Python 3.10 or newer, offline after set-up):

```bash
python3 run.py lab     # set up .venv/ and open the notebooks in JupyterLab
python3 run.py test    # run the whole test suite (unit tests + every notebook)
python3 run.py book    # build this book into _build/book/
```

On Binder: every notebook page has a **Launch on Binder** button
({f'<{binder}>' if binder else 'configure `binder_url` in pyproject.toml'}). Binder gives 1 CPU and
2 GB of memory: expect 1.5–2× the compute times above.

## What the experiments showed

{results}

Where every shipped number comes from: [data and reproducibility](data.md).

```{{toctree}}
:hidden:
:caption: Notebooks

{toc}
```

```{{toctree}}
:hidden:
:caption: Teaching and data

instructor
data
```
"""


def session_plan(i: dict) -> str:
    """A 90-minute plan: the measured compute time (x1.5 for a laptop or Binder, rounded up) runs while
    the instructor presents the equations; reading, widget and exercises fill the rest."""
    compute = max(1, -(-int(1.5 * (i["seconds"] or 180)) // 60))
    reading = min(i["reading_min"] or 30, 35)
    c = cell_census(i["path"])
    exercises = SESSION_MIN - 5 - max(compute, 10) - reading - 10 - 10
    steps = [
        (5, "Goals and prerequisites (the notebook's header); everyone opens it (`python3 run.py lab` or Binder)."),
        (max(compute, 10), f"**Run All** at once (default run ≈ {i['run'] or '?'}; allow {compute} min on a laptop "
                           "or Binder) while you present the equations and the code that implements them."),
        (reading, "Read the experiment and its result together: the baseline, the seeds, the confidence "
                  "intervals, the regime map; " + (
                      f"the multi-seed results are precomputed and loaded ({c['precomputed']} cell(s)"
                      f"{': ' + ', '.join(sorted(c['files'])) if c['files'] else ''}), not recomputed."
                      if c["precomputed"] else "everything in this notebook runs live.")),
        (10, f"The widget{'s' if c['widget'] > 1 else ''} ({c['widget']}): students move each control and predict "
             "the figure before it redraws."),
        (max(exercises, 10), f"Exercises ({c['exercise']} exercise cell(s), {c['check']} self-check(s); the "
                             "student copy has no solutions)."),
        (10, "Summary and the paper's claim against what the notebook measured."),
    ]
    t, lines = 0, ["| minutes | what |", "|---|---|"]
    for length, what in steps:
        lines.append(f"| {t}–{t + length} | {what} |")
        t += length
    return "\n".join(lines)


def instructor_page(info: list[dict], readme: str) -> str:
    census = {i["stem"]: cell_census(i["path"]) for i in info}
    rows = "\n".join(
        f"| [{i['stem']}](notebooks/{i['stem']}) | {c['code']} | {c['widget']} | {c['precomputed']} | "
        f"{c['exercise']} / {c['solution']} / {c['check']} | {i['run'] or '?'} |"
        for i in info for c in [census[i["stem"]]])
    plans = "\n\n".join(f"### {i['stem']}\n\n{session_plan(i)}" for i in info)
    student = readme_section(readme, "For instructors: student copies")
    return f"""# For instructors

## Student copies

{student}

`python -m tutor.course student` matches the tags case-insensitively and refuses tags that look like a
misspelt `solution`/`exercise`/`check`, so no answer leaks into a student copy. In this book the solution
cells are collapsed (click to show them).

## Tags

| tag | meaning | in the student copy |
|---|---|---|
| `exercise` | a cell the student completes (a stub that runs) | kept |
| `solution` | the instructor's answer, right after its exercise | removed (a note takes its place) |
| `check` | a self-check that tells the student whether the exercise is right | kept |

## Which cells run live and which are precomputed

Every code cell runs live in a few minutes on a CPU (the default configuration); the multi-seed results
that would take longer are precomputed by the drivers in `tutor/experiments/`, shipped in
`data/results/` with their checksum, and loaded by the cells counted below (see
[data and reproducibility](data.md)). `TUTOR_FULL=1` selects each notebook's larger configuration.

| notebook | code cells | widget cells | cells reading shipped results | exercise / solution / check | default run |
|---|---|---|---|---|---|
{rows}

## A 90-minute session per notebook

Built from the measured compute time of each notebook's default run (README.md, one CPU core; allow 1.5×
on a laptop or on Binder) and the reading time in its header. Start **Run All** first: the compute runs
while you present.

{plans}
"""


def data_page() -> str:
    sums = {}
    for line in (ROOT / "data" / "results" / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest.lower()
    rows = []
    for name in sorted(sums):
        path = ROOT / "data" / "results" / name
        meta = json.loads(path.read_text()) if path.exists() else {}
        ok = "yes" if path.exists() and sha256(path) == sums[name] else "**NO**"
        rows.append(f"| `{name}` | `{meta.get('command', '?')}` | {meta.get('date', '?')} | "
                    f"{meta.get('torch', '?')} | `{sums[name]}` | {ok} |")
    data_readme = (ROOT / "data" / "README.md").read_text()
    ckpt_rows = []
    for path in sorted((ROOT / "data" / "checkpoints").glob("*.pt")):
        m = re.search(rf"^\| `{re.escape(path.name)}` \| `([^`]*)` \|.*?Written (\S+)", data_readme, re.M)
        ckpt_rows.append(f"| `{path.name}` | `{m.group(1) if m else '?'}` | {m.group(2) if m else '?'} | "
                         f"`{sha256(path)}` | {path.stat().st_size // 1024} KB |")
    body = re.sub(r"^# .*\n", "", data_readme, count=1)
    body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)   # one level down
    return f"""# Data and reproducibility

Nothing in the course downloads data: the glyph images are rendered from fonts that ship with
matplotlib, the multilingual names come from the CLDR data inside `babel`, the other tasks are drawn
from seeds. The multi-seed results and two small checkpoints are **shipped**; each was written by one
command of `tutor/experiments/`, and each notebook checks its file's SHA-256 before reading it.
This page is generated at build time from `data/results/*.json` (their `command`, `date` and `torch`
fields), `data/results/SHA256SUMS` and `data/README.md`; "verified" means the file's SHA-256 was
recomputed by this build and matches.

## Shipped results — `data/results/`

| file | command | date | torch | SHA-256 | verified |
|---|---|---|---|---|---|
{chr(10).join(rows)}

To reproduce one: run its command with `--overwrite` added (without it the driver writes into `runs/` and
never replaces a shipped file); the checksum line in `SHA256SUMS` is updated with the file.

## Shipped checkpoints — `data/checkpoints/`

| file | command | written | SHA-256 (computed by this build) | size |
|---|---|---|---|---|
{chr(10).join(ckpt_rows)}

## data/README.md

{body}
"""


# MathJax 3.2.2 (Apache-2.0), es5/tex-svg-full.js: one self-contained file (TeX input, SVG output with its
# glyphs; no fonts or components loaded later), as shipped in the PyPI package sphinx-mathjax-offline 0.0.2.
MATHJAX_SHA256 = "a4354ff94fd868aea0cc6eaaa79a57fda0588646fc46ee3700a349ee0a11cbe6"


def mathjax_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the book needs the [book] extra (sphinx-mathjax-offline is missing): pip install -e '.[book]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "tex-svg-full.js"
    if not path.exists() or sha256(path) != MATHJAX_SHA256:
        sys.exit(f"{path} is missing or is not MathJax 3.2.2 (SHA-256 {MATHJAX_SHA256}); "
                 "reinstall the [book] extra (sphinx-mathjax-offline==0.0.2)")
    return path


def prepare(settings: dict) -> None:
    readme = (ROOT / "README.md").read_text()
    info = notebook_info(readme)
    write_if_changed(SRC / "index.md", landing_page(info, readme, settings))
    write_if_changed(SRC / "instructor.md", instructor_page(info, readme))
    write_if_changed(SRC / "data.md", data_page())
    for path in NOTEBOOKS:
        copy_if_changed(path, SRC / "notebooks" / path.name)
        copy_if_changed(path, SRC / "_extra" / "notebooks" / path.name)     # the page's download link
    for stale in (SRC / "notebooks").glob("*.py"):
        if not (ROOT / "notebooks" / stale.name).exists():
            stale.unlink()
    copy_if_changed(mathjax_file(), SRC / "_static" / "mathjax" / "tex-svg-full.js")


# ----------------------------------------------------------------------------------------------- build
def build() -> Path:
    settings = book_settings()
    prepare(settings)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TUTOR_HEADLESS", "TUTOR_WIDGET_SWEEP", "MPLBACKEND", "JPY_SESSION_NAME")}
    env.update(TUTOR_BOOK_SETTINGS=json.dumps(settings), TUTOR_NO_NETWORK="1", TUTOR_PROGRESS="0",
               OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"), PYTHONPATH=os.pathsep.join(
                   p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p))
    start = time.time()
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(ROOT / "book"), "-q", "--keep-going",
           str(SRC), str(OUT)]
    code = subprocess.call(cmd, env=env, cwd=ROOT)
    if code != 0:
        sys.exit(f"book build FAILED (sphinx exit {code}); the notebook and the cell that raised are named above")
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"book built in {time.time() - start:.0f} s, {size / 2**20:.1f} MiB")
    index = OUT / "index.html"
    print(index)
    return index


def serve(port: int) -> None:
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(OUT))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        print(f"serving the book on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)", flush=True)
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="serve the built site on a loopback port")
    parser.add_argument("--serve-only", action="store_true", help="serve the site built before, without building")
    parser.add_argument("--port", type=int, default=8000, help="loopback port for --serve (0: any free port)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, got {args.port}")
    if args.serve_only:
        if not (OUT / "index.html").exists():
            parser.error("--serve-only: no book built yet; run `python3 run.py book` first")
    else:
        build()
    if args.serve or args.serve_only:
        serve(args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
