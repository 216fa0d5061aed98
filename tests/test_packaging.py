"""The package as a user gets it: `pip install` of the project without extras (no torch, no
dev tools) into a fresh virtual environment, then the `ncd` command of that environment renders
a gallery model to SVG, PNG and PDF and compiles it. A runtime import that is declared only as a
development dependency fails here (`ModuleNotFoundError`, exit 3), not on a user's machine.

It takes about 10 s: the project's wheel is built with this environment's setuptools (no
isolated build environment to install; the version it needs is checked below), and installed
with its dependencies from pip's own cache or the configured package index, without compiling
every installed module to bytecode (Python compiles what the commands import). The project is
copied to a temporary folder first, so that the build leaves nothing in the working tree and
parallel runs do not share a build folder.
"""

from __future__ import annotations

import ast
import io
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import pypdf
import pytest

ROOT = Path(__file__).resolve().parent.parent
# pip's cache folder as the user has it: read when the module is imported, before
# tests/conftest.py points XDG_CACHE_HOME at a folder of the test run (whose pip cache would be
# empty at every run, every dependency downloaded again).
USER_CACHE = {name: os.environ[name] for name in ("XDG_CACHE_HOME", "PIP_CACHE_DIR")
              if name in os.environ}
MODEL = ROOT / "gallery" / "transformer.ncd"

# Modules of the package that need an extra, with the top-level modules it provides: the
# reference interpreter computes with torch (`torch`), the language server speaks through pygls
# (`lsp`; `ncd lsp` itself says how to install it when it is missing).
NEEDS_EXTRA = {"ncd.semantics": {"torch"}, "ncd.lsp_server": {"pygls", "lsprotocol"}}

IMPORT_EVERY_MODULE = r"""
import importlib, importlib.util, pkgutil, sys
import ncd
needs_extra = {arg.split("=")[0]: set(arg.split("=")[1].split(",")) for arg in sys.argv[1:]}
problems = []
for info in pkgutil.walk_packages(ncd.__path__, "ncd."):
    if info.name.endswith(".__main__"):  # runs the command line
        continue
    try:
        importlib.import_module(info.name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in needs_extra.get(info.name, set()):
            problems.append(f"{info.name}: {error}")
if importlib.util.find_spec("torch") is not None:
    problems.append("torch is installed without the torch extra")
print("\n".join(problems))
sys.exit(1 if problems else 0)
"""


def configuration() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_folder_is_installed() -> None:
    """A folder with an `__init__.py` is a package only if `[tool.setuptools] packages` lists
    it: one left out installs without it, and its imports fail on a user's machine."""
    setuptools = configuration()["tool"]["setuptools"]
    folders = {folder: name for name, folder in setuptools["package-dir"].items()}
    found = set()
    for folder, name in folders.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join([name, *relative]))
    assert sorted(found - set(setuptools["packages"])) == []


def project_copy(target: Path) -> Path:
    """What the build reads: pyproject.toml, the readme and the folders of the packages."""
    config = configuration()
    folders = {folder.split("/")[0]
               for folder in config["tool"]["setuptools"]["package-dir"].values()}
    target.mkdir()
    for name in ("pyproject.toml", config["project"]["readme"]):
        shutil.copy2(ROOT / name, target / name)
    for folder in sorted(folders):
        shutil.copytree(ROOT / folder, target / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def test_this_environment_can_build_the_project() -> None:
    """The install below builds with this environment's setuptools, not in an isolated build
    environment made from `[build-system] requires`: that setuptools is one the project
    accepts, and the build needs nothing else."""
    build = configuration()["build-system"]
    assert build["build-backend"] == "setuptools.build_meta"
    (requirement,) = build["requires"]
    name, minimum = requirement.split(">=")
    assert name == "setuptools"
    installed = version("setuptools").split(".")
    assert [int(part) for part in installed[:2]] >= [int(part) for part in minimum.split(".")]


def run(command: list[str], cwd: Path, timeout: float = 300,
        user_cache: bool = False) -> subprocess.CompletedProcess[str]:
    # Bytecode is written (into the temporary environment): modules installed without it
    # are compiled once, by the first command that imports them, not by every command.
    environment = {key: value for key, value in os.environ.items() if key not in (
        "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    environment.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", NO_COLOR="1")
    if user_cache:  # pip: the user's cache folders, not the test run's private one
        environment.pop("XDG_CACHE_HOME", None)
        environment.update(USER_CACHE)
    result = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.packaging
def test_a_plain_install_renders_and_compiles(tmp_path: Path) -> None:
    source = project_copy(tmp_path / "project")
    venv = tmp_path / "venv"
    # No pip inside: this environment's pip installs into it (`--python`), which saves
    # seconds and keeps the environment to the project and its runtime dependencies.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python, ncd = venv / "bin" / "python", venv / "bin" / "ncd"
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(source)], tmp_path, user_cache=True)
    (wheel,) = wheels.glob("ncd-*.whl")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-compile", str(wheel)], tmp_path, user_cache=True)

    # Every module imports with the runtime dependencies alone, and torch is not among them.
    run([str(python), "-c", IMPORT_EVERY_MODULE,
         *(f"{name}={','.join(sorted(tops))}" for name, tops in sorted(NEEDS_EXTRA.items()))],
        tmp_path)

    out = tmp_path / "out"
    out.mkdir()
    for suffix in ("svg", "png", "pdf"):
        run([str(ncd), "render", str(MODEL), "-o", str(out / f"model.{suffix}")], tmp_path)
    run([str(ncd), "compile", str(MODEL), "-o", str(out / "model.py")], tmp_path)

    svg = (out / "model.svg").read_text(encoding="utf-8")
    root = SafeET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox")
    png = (out / "model.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    pdf = (out / "model.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert len(pypdf.PdfReader(io.BytesIO(pdf), strict=True).pages) == 1
    module = ast.parse((out / "model.py").read_text(encoding="utf-8"))
    classes = {node.name for node in module.body if isinstance(node, ast.ClassDef)}
    assert {"Attention", "Feedforward", "Transformer"} <= classes, classes

    # The standard library is installed with the package: a model imports it by `std/...`.
    user = tmp_path / "user.ncd"
    user.write_text('import "std/attention.ncd"\nimport "std/feedforward.ncd"\n'
                    'axis x\naxis m = 16, h = 2, k = 8, g = 2, r = 1, f = 32\n'
                    'def layer(X: R[x, m]) -> R[x, m] { return X + swiglu(attention(X)) }\n',
                    encoding="utf-8")
    checked = run([str(ncd), "check", str(user)], tmp_path)
    assert "layer(X: R[x, m]) -> R[x, m]" in checked.stdout
