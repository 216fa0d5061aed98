"""Generated modules in process: real, importable Python modules that pickle.

`build_module` does not `exec` the generated source in a throwaway namespace. It writes the
source once to a content-addressed file, `ncd_generated_<label>_<hash>.py` in the cache folder
(`$XDG_CACHE_HOME/ncd/generated`, by default `~/.cache/ncd/generated`), and imports it under
that name, registered in `sys.modules`. So `inspect.getsource` works on the classes and their
methods, tracebacks show the generated lines, and pickling by reference finds the classes.

A module built this way must also load where nobody built it (a fresh process, another
machine). Each class of a generated module therefore pickles its instances through
`rebuild`, with the generated source as an argument: unpickling imports that source again
(from the cache, or by writing it there) and restores the state into an instance of the same
class. State dict keys and parameter names are untouched. A file written by
`ncd compile -o model.py` and imported normally is a plain Python module and pickles by
reference, as any module does.

When the cache folder cannot be written (a read-only home), a private temporary folder of the
process is used, and failing that the source is run in memory with `linecache` holding its
lines, so `inspect` and tracebacks still work.

Unpickling runs the source carried in the pickle, as unpickling any object may run code: load
pickles only from sources you trust (`torch.load` refuses whole modules unless
`weights_only=False`; `state_dict` files need no code at all).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import linecache
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import CompileError

PREFIX = "ncd_generated_"
_LABEL_LENGTH = 40
# The cache folder keeps at most this many generated files: writing one more removes the
# least recently used ones down to KEEP_CACHED (a fuzzing run builds thousands of modules).
MAX_CACHED = 1000
KEEP_CACHED = 800
_private_folder: Path | None = None  # the temporary fallback of this process, made once


def cache_folder() -> Path:
    """Where generated modules are written: `$XDG_CACHE_HOME/ncd/generated`, else
    `~/.cache/ncd/generated` (a relative `XDG_CACHE_HOME` is ignored, as the spec says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "ncd" / "generated"


def module_name(source: str, label: str) -> str:
    """The module name of a generated source: `ncd_generated_<label>_<hash>`, a legal ASCII
    identifier that depends on the source and the label only."""
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:_LABEL_LENGTH].strip("_")
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    return f"{PREFIX}{slug}_{digest}" if slug else f"{PREFIX}{digest}"


def load_source(source: str, label: str) -> ModuleType:
    """The generated module whose text is `source`, imported once per process: written to the
    cache folder when it is not there yet, then imported under its content-addressed name.
    `label` (the definition's name) makes the file name readable."""
    name = module_name(source, label)
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__ncd_source__", None) == source:
        return loaded
    module = _import_from_file(name, source)
    if module is None:
        module = _run_in_memory(name, source)
    module.__ncd_source__ = source  # type: ignore[attr-defined]
    for value in list(vars(module).values()):
        if isinstance(value, type) and value.__module__ == name:
            value.__ncd_source__ = source  # type: ignore[attr-defined]
            value.__ncd_label__ = label  # type: ignore[attr-defined]
            value.__reduce_ex__ = _reduce_ex  # type: ignore[assignment, method-assign]
    return module


def rebuild(source: str, label: str, qualname: str) -> Any:
    """An empty instance of the class `qualname` of the generated module of `source`, for
    pickle to restore the state into (what `_reduce_ex` points unpickling at)."""
    if not isinstance(source, str) or not isinstance(label, str) \
            or not isinstance(qualname, str):
        raise CompileError("a pickled ncd module is damaged: its source, label and class name "
                           "must be strings")
    found: Any = load_source(source, label)
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise CompileError(f"a pickled ncd module names the class {qualname!r}, which its "
                               "generated source does not define")
    if not isinstance(found, type):
        raise CompileError(f"a pickled ncd module names {qualname!r}, which is not a class")
    cls: Any = found
    return cls.__new__(cls)


def _reduce_ex(self: Any, protocol: Any) -> Any:
    """Pickle an instance of a generated class as `rebuild(source, label, qualname)` and its
    state, so that it loads in a process that never built it. A subclass defined elsewhere
    (in the user's code) pickles by reference, as usual."""
    cls = type(self)
    source = cls.__dict__.get("__ncd_source__")
    if source is None:
        return object.__reduce_ex__(self, protocol)
    return rebuild, (source, cls.__dict__["__ncd_label__"], cls.__qualname__), \
        self.__getstate__()


def _import_from_file(name: str, source: str) -> ModuleType | None:
    """Import `source` as module `name` from a file in the cache folder, or else in the
    process's private temporary folder; None when neither can be written."""
    for folder in (cache_folder(), None):
        directory = folder if folder is not None else _private_temporary_folder()
        if directory is None:
            continue
        path = _written(directory, f"{name}.py", source)
        if path is None:
            continue
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    return None


def _written(directory: Path, filename: str, source: str) -> Path | None:
    """The path of `filename` in `directory` holding exactly `source`: reused when it does,
    else written atomically (a temporary file renamed over it, so that concurrent processes
    never import half a file). None when the folder cannot be written."""
    path = directory / filename
    try:
        if path.read_text(encoding="utf-8") == source:
            os.utime(path)  # recently used: the last to be pruned
            return path
    except (OSError, UnicodeDecodeError):
        pass
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{filename}.", dir=directory)
    except OSError:
        return None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as stream:
            stream.write(source)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        return None
    _prune(directory)
    return path


def _prune(directory: Path) -> None:
    """Keep the folder's generated files to `MAX_CACHED`: past it, remove the least recently
    used ones (and their bytecode) down to `KEEP_CACHED`. A module already imported is not
    affected; one needed again is written again. Errors (a file another process removed
    first) are ignored."""
    try:
        entries = [entry for entry in os.scandir(directory)
                   if entry.name.startswith(PREFIX) and entry.name.endswith(".py")]
        if len(entries) <= MAX_CACHED:
            return  # counted by name alone: a stat of every file at every write is slow
        files = [(entry.stat().st_mtime, entry) for entry in entries]
    except OSError:
        return
    files.sort(key=lambda item: item[0])
    for _, entry in files[:len(files) - KEEP_CACHED]:
        stem = entry.name.removesuffix(".py")
        for path in [Path(entry.path), *(directory / "__pycache__").glob(f"{stem}.*.pyc")]:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass


def _private_temporary_folder() -> Path | None:
    """A folder only this process writes to (made by `mkdtemp`, mode 0700), removed at exit."""
    global _private_folder
    if _private_folder is None:
        try:
            _private_folder = Path(tempfile.mkdtemp(prefix="ncd-generated-"))
        except OSError:
            return None
        atexit.register(shutil.rmtree, _private_folder, ignore_errors=True)
    return _private_folder


def _run_in_memory(name: str, source: str) -> ModuleType:
    """The last resort when no folder can be written: run the source in a module object,
    its lines registered with `linecache` under `<name>` for tracebacks and `inspect`."""
    filename = f"<{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
