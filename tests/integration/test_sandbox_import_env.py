"""Confined import-time code still gets what common libraries need at import.

A module's top-level code runs confined (Landlock) in the load's describing child
and in the zygote. There it may write a private TMPDIR and HOME (``tempfile``,
caches under ``~``), and it may import a package installed in editable mode
through an import hook (setuptools' ``__editable__.<name>.pth`` with a finder
whose ``MAPPING`` names a source folder outside ``sys.path``). The interpreter is
a scratch venv seeing this checkout's packages plus such an editable install;
``gateway validate`` and a supervisor making real calls run in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway
from gateway.sandbox import _linux

try:
    _linux.landlock_abi()
except OSError as exc:  # pragma: no cover - depends on the kernel
    pytest.skip(f"Landlock is not supported by this kernel: {exc}", allow_module_level=True)

TMPMOD = """\
import os
import tempfile

_DIR = tempfile.gettempdir()
_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tmpmod")
os.makedirs(_CACHE, exist_ok=True)
with open(os.path.join(_CACHE, "seen"), "w") as out:
    out.write("cached")
with open(os.path.join(_CACHE, "seen")) as back:
    CACHED = back.read()
with tempfile.NamedTemporaryFile(dir=_DIR) as scratch:
    scratch.write(b"x")


def f(x: int) -> str:
    \"\"\"Echo.

    Args:
        x: a number
    \"\"\"
    try:
        with open(os.path.join(_DIR, "from-a-call"), "w") as out:
            out.write("call")
        wrote = "wrote"
    except OSError as exc:
        wrote = "refused: " + type(exc).__name__
    with tempfile.NamedTemporaryFile() as own:
        own.write(b"y")
    return CACHED + " " + str(x) + " " + wrote
"""

USES = """\
import mylib


def h(x: int) -> int:
    \"\"\"Add.

    Args:
        x: a number
    \"\"\"
    return mylib.add(x)
"""

DENIED = """\
import os

with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), ".env")) as env:
    env.read()


def d(x: int) -> int:
    \"\"\"Never.

    Args:
        x: a number
    \"\"\"
    return x
"""

MANIFESTS = """\
kind: action
name: tmp_action
description: t
python: {function: "actions.tmpmod:f"}
---
kind: action
name: uses_lib
description: u
python: {function: "actions.uses:h"}
"""

DENIED_YAML = """\
kind: action
name: denied
description: d
python: {function: "actions.denied:d"}
"""

FINDER = """\
import sys
from importlib.machinery import PathFinder

MAPPING = {"mylib": %r}


class _EditableFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname in MAPPING:
            import os
            return PathFinder.find_spec(fullname, [os.path.dirname(MAPPING[fullname])])
        return None


def install():
    if _EditableFinder not in sys.meta_path:
        sys.meta_path.append(_EditableFinder)
"""


@pytest.fixture(scope="module")
def python() -> Iterator[Path]:
    """A scratch venv seeing this checkout, with ``mylib`` installed editable by a hook."""
    base = Path(tempfile.mkdtemp(prefix="gw-import-env-"))
    base.chmod(0o755)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(base / "venv")],
            check=True,
            timeout=60,
        )
        (base / "extlib" / "mylib").mkdir(parents=True)
        (base / "extlib" / "mylib" / "__init__.py").write_text(
            "def add(x: int) -> int:\n    return x + 1\n"
        )
        site = Path(
            sysconfig.get_path("purelib", vars={"base": str(base / "venv")}),
        )
        checkout = Path(gateway.__file__).resolve().parent.parent
        ours = sysconfig.get_path("purelib")
        (site / "zz_checkout.pth").write_text(f"{ours}\n{checkout}\n")
        (site / "__editable___mylib_finder.py").write_text(FINDER % str(base / "extlib" / "mylib"))
        (site / "__editable__.mylib-0.1.pth").write_text(
            "import __editable___mylib_finder; __editable___mylib_finder.install()\n"
        )
        yield base / "venv" / "bin" / "python"
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def site() -> Iterator[Path]:
    """A gateway root with the modules above, a ``.env`` and a TMPDIR of its own."""
    root = Path(tempfile.mkdtemp(prefix="gw-import-env-site-"))
    root.chmod(0o755)
    (root / "actions").mkdir()
    (root / "actions" / "__init__.py").write_text("")
    (root / "actions" / "tmpmod.py").write_text(TMPMOD)
    (root / "actions" / "uses.py").write_text(USES)
    (root / "actions" / "denied.py").write_text(DENIED)
    (root / "manifests").mkdir()
    (root / "manifests" / "a.yaml").write_text(MANIFESTS)
    (root / "denied").mkdir()
    (root / "denied" / "d.yaml").write_text(DENIED_YAML)
    (root / ".env").write_text("OPENAI_API_KEY=dotenv-env-0001\n")
    (root / "tmp").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(python: Path, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(site / "tmp"), "HOME": str(site / "tmp")}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(python), *args],
        cwd=site,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_validate_imports_tempfile_users_and_editable_packages(python: Path, site: Path) -> None:
    """`gateway validate`: a module using tempfile and a HOME cache at import, and one
    importing an editable install's package, validate; the child's private folder is
    gone afterwards; a module refused a read at import is told imports run confined."""
    validate = ["-c", "from gateway.cli import main; main()", "validate"]
    done = _run(python, site, *validate, "manifests")
    assert done.returncode == 0, done.stdout + done.stderr
    assert list((site / "tmp").iterdir()) == []
    done = _run(python, site, *validate, "denied")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "cannot import module 'actions.denied': PermissionError" in output
    assert "module imports run confined" in output
    assert "dotenv-env-0001" not in output


SUPERVISOR = """
import asyncio, json, sys
from pathlib import Path
import gateway.executors
from gateway.manifests.loader import load_catalog
from gateway.manifests.model import CallContext
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings

async def main():
    root = Path.cwd()
    catalog = load_catalog(root / "manifests", gateway_root=root)
    sup = Supervisor(Settings(gateway_root=root, sandbox_user=sys.argv[1]))
    await sup.start(catalog)
    out = {}
    try:
        for name in ("tmp_action", "uses_lib"):
            context = CallContext(action=name, arguments={"x": 41})
            result = await sup.call(catalog.actions[name], context)
            out[name] = [result.status, result.output]
    finally:
        await sup.aclose()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.parametrize("sandbox_user", ["own", "root"])
def test_calls_of_tempfile_users_and_editable_packages(
    python: Path, site: Path, sandbox_user: str
) -> None:
    """The zygote imports both modules (tempfile and the HOME cache work there, the
    editable package is found); a call cannot write the import-time TMPDIR but has
    its own, and calls the editable package."""
    done = _run(python, site, "-c", SUPERVISOR, sandbox_user)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "import_failed" not in done.stdout + done.stderr, done.stdout + done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    status, output = got["tmp_action"]
    assert status == "succeeded", got
    assert output == "cached 41 refused: PermissionError", got
    assert got["uses_lib"] == ["succeeded", "42"], got


STUCK = """\
import os
import tempfile
import time

with open(os.path.join(tempfile.gettempdir(), "left"), "w") as out:
    out.write("x")
if os.environ.get("HOME") == tempfile.gettempdir():
    {end}


def f(x: int) -> int:
    \"\"\"Never.

    Args:
        x: a number
    \"\"\"
    return x
"""


@pytest.mark.parametrize(
    ("end", "said"),
    [("os._exit(3)", "exit status 3"), ("time.sleep(30)", "still importing")],
)
def test_the_private_folder_goes_when_the_child_crashes_or_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, end: str, said: str
) -> None:
    """A module that wrote into its TMPDIR and then ends the describing child, or is
    killed at the timeout, leaves nothing in the server's TMPDIR."""
    from gateway.manifests import _pyfunc

    root = tmp_path / "root"
    (root / "stuck").mkdir(parents=True)
    (root / "stuck" / "__init__.py").write_text(STUCK.format(end=end))
    server_tmp = tmp_path / "tmp"
    server_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(server_tmp))
    monkeypatch.setattr(_pyfunc, "TIMEOUT_S", 2.0)
    found = _pyfunc.inspect_functions(["stuck:f"], root)
    error = found.functions["stuck:f"].error or ""
    assert said in error, error
    assert list(server_tmp.iterdir()) == []
