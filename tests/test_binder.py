"""binder/ stays in step with pyproject.toml: every runtime dependency is pinned there compatibly."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _requirements(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", line)
        out[m.group(1).lower()] = m.group(2).strip()
    return out


def _version(spec: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", spec.split("+")[0])[:3])


def test_every_runtime_dependency_is_in_binder_requirements_with_a_compatible_version():
    text = (ROOT / "pyproject.toml").read_text()          # the [project] dependencies list (tomllib is 3.11+)
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    deps = re.findall(r'"([^"]+)"', block)
    assert "torch>=2.3" in deps                             # the parse found the real list
    binder = _requirements(ROOT / "binder" / "requirements.txt")
    for dep in deps:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
        assert name.lower() in binder, f"{name} is a runtime dependency but missing from binder/requirements.txt"
        pinned = binder[name.lower()]
        for bound in filter(None, (b.strip() for b in spec.split(","))):
            op, ver = re.match(r"(>=|<=|==|<|>|~=)\s*(.+)", bound).groups()
            if not pinned:
                continue                                   # unpinned in binder: pip resolves within our range
            have = _version(re.sub(r"^[=<>~!]+", "", pinned.split(",")[0]))
            want = _version(ver)
            ok = {">=": have >= want, ">": have > want, "<": have < want, "<=": have <= want,
                  "==": have == want, "~=": have >= want}[op]
            assert ok, f"binder pins {name} {pinned}, which violates {name}{bound} in pyproject.toml"


def test_binder_runtime_and_start_files():
    assert re.match(r"python-3\.1[0-9]", (ROOT / "binder" / "runtime.txt").read_text().strip())
    start = (ROOT / "binder" / "start").read_text()
    assert "TUTOR_THREADS=1" in start and 'exec "$@"' in start
    assert "run.py settings" in (ROOT / "binder" / "postBuild").read_text()   # the same lab settings as run.py lab
