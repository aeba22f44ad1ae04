"""Ahead-of-time compiled point kernels: worker processes that start without numba.

The kernels in `kernels.py` are numba functions. Loading them in a fresh process costs about 0.4 s of CPU
(importing numba, its typing registries, the cached machine code), and every `twin points` run pays it
before the first decode can start. This module compiles the same functions once, with `numba.pycc`, into a
plain CPython extension for this machine; a process that finds it imports it in a millisecond and never
imports numba.

- `build()` (`python -m pipeline.stages.points._aot build`, run by `make setup`): compiles every kernel with
  the argument types the stages pass (those `kernels.warm_all()` compiles), into
  `$RUHRTWIN_KERNEL_DIR` or `~/.cache/ruhrtwin/kernels/<key>/`. The key covers the kernels' source, the
  numba, Python and NumPy versions and this CPU, so a stale build is never used.
- `njit_shim()`: what `kernels.py` uses as `numba` when a build for this key exists. Its `njit` decorator
  returns, for an exported kernel, a guard that checks the arguments (dtype, dimensions, contiguity: the
  compiled code trusts them blindly) and calls the compiled function; arguments of any other type go to
  the numba JIT version of the same function, compiled on first use. Helpers the kernels inline are
  returned unchanged (they are never called from Python).
- `RUHRTWIN_KERNELS=jit` forces the JIT path (tests compare both), `aot` requires the build (error
  otherwise), `auto` (default) uses the build when there is one.

The compiled and JIT code come from the same Python source through the same LLVM with the same CPU target
(no fast-math), so they compute the same bits: the tests check that whole tilesets are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.fsutil import remove_owned

MODULE = "_ruhrtwin_point_kernels"
_KERNELS_SRC = Path(__file__).with_name("kernels.py")


def _cpu_id() -> str:
    """This CPU's model and feature flags (the build targets the host CPU: another CPU needs another)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = flags = ""
    for line in text.splitlines():
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1].strip()
    return f"{platform.machine()}|{model}|{flags}"


def _numba_version() -> str:
    """numba's version file, read without importing numba (that is what this module saves)."""
    import importlib.util

    spec = importlib.util.find_spec("numba")
    if spec is None or spec.origin is None:
        return "no-numba"
    vf = Path(spec.origin).with_name("_version.py")
    return vf.read_text() if vf.is_file() else spec.origin


def build_key() -> str:
    h = hashlib.sha256()
    h.update(_KERNELS_SRC.read_bytes())
    h.update(Path(__file__).read_bytes())
    for part in (_numba_version(), sys.version, np.__version__, _cpu_id()):
        h.update(part.encode())
    return h.hexdigest()[:20]


def kernel_dir() -> Path:
    base = os.environ.get("RUHRTWIN_KERNEL_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "ruhrtwin" / "kernels"
    return root / build_key()


def mode() -> str:
    m = os.environ.get("RUHRTWIN_KERNELS", "auto").strip().lower()
    if m not in ("auto", "jit", "aot"):
        raise ValueError(f"RUHRTWIN_KERNELS must be auto, jit or aot, not {m!r}")
    return m


def load() -> tuple[Any, dict] | None:
    """(compiled module, spec) when a build for this key exists and is wanted; None for the JIT path."""
    m = mode()
    if m == "jit":
        return None
    d = kernel_dir()
    spec_path = d / "spec.json"
    if not spec_path.is_file():
        if m == "aot":
            raise RuntimeError(
                f"RUHRTWIN_KERNELS=aot but no compiled kernels in {d}: run "
                "`python -m pipeline.stages.points._aot build` (make setup does)"
            )
        return None
    import importlib.util

    so = next(iter(sorted(d.glob(MODULE + "*.so"))), None)
    try:
        if so is None:
            raise ImportError(f"no {MODULE} extension in {d}")
        spec_obj = importlib.util.spec_from_file_location(MODULE, so)
        assert spec_obj is not None and spec_obj.loader is not None
        mod = importlib.util.module_from_spec(spec_obj)
        spec_obj.loader.exec_module(mod)
        return mod, json.loads(spec_path.read_text())
    except (ImportError, OSError, ValueError) as e:  # a damaged build: the JIT path computes the same
        if m == "aot":
            raise RuntimeError(f"cannot load the compiled point kernels in {d}: {e}") from e
        return None


def available() -> bool:
    """Whether this process would use the compiled kernels (cheap: no import of them)."""
    try:
        return mode() != "jit" and (kernel_dir() / "spec.json").is_file()
    except (OSError, ValueError):
        return False


# ---- runtime: the guarded calls --------------------------------------------------------------------------


def _matches(args: tuple, want: list) -> bool:
    if len(args) != len(want):
        return False
    for a, w in zip(args, want, strict=True):
        kind = w[0]
        if kind == "array":
            _kind, dstr, ndim, layout = w
            if not isinstance(a, np.ndarray) or a.ndim != ndim or a.dtype.str != dstr:
                return False
            if layout == "C" and not a.flags.c_contiguous:
                return False
        elif kind == "int":
            if not isinstance(a, int | np.integer) or isinstance(a, bool | np.bool_):
                return False
        elif kind == "float":
            if not isinstance(a, float | np.floating):
                return False
        elif kind == "bool":
            if not isinstance(a, bool | np.bool_):
                return False
        else:
            return False
    return True


FALLBACKS: list[str] = []  # kernels called with argument types the build did not see (JIT instead)
_JIT_MODULE: list[Any] = []
_FORCE_JIT: list[bool] = []


def _jit_kernels() -> Any:
    """A second copy of kernels.py on the numba JIT path (its kernels call each other and their helpers
    as numba functions, which the shimmed copy cannot offer)."""
    if not _JIT_MODULE:
        import importlib.util

        spec = importlib.util.spec_from_file_location("pipeline.stages.points._kernels_jit", _KERNELS_SRC)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        _FORCE_JIT.append(True)
        try:
            spec.loader.exec_module(mod)
        finally:
            _FORCE_JIT.pop()
        _JIT_MODULE.append(mod)
    return _JIT_MODULE[0]


class _Guarded:
    """Calls the compiled export whose argument types match; anything else goes to the JIT version."""

    def __init__(self, func, exports: list[tuple[Any, list]]):
        self.py_func = func
        self.__name__ = func.__name__
        self.__doc__ = func.__doc__
        self._exports = exports

    def __call__(self, *args):
        for fn, want in self._exports:
            if _matches(args, want):
                return fn(*args)
        # a type the build did not see: the JIT version (slower to start, same result)
        FALLBACKS.append(self.__name__)
        return getattr(_jit_kernels(), self.__name__)(*args)


class _Shim:
    """Stands in for the `numba` module in kernels.py: `njit` picks the compiled kernels."""

    def __init__(self, mod: Any, spec: dict):
        self._mod, self._spec = mod, spec

    def njit(self, *args, **kwargs):
        def deco(func):
            entries = self._spec.get(func.__name__)
            if not entries:
                return func  # an inlined helper: never called from Python
            exports = [(getattr(self._mod, e["export"]), e["args"]) for e in entries]
            return _Guarded(func, exports)

        return deco


class _NoCache:
    """numba for the fallback copy of kernels.py: never the on-disk cache (its entries would name a module
    that other processes cannot import)."""

    @staticmethod
    def njit(*args, **kwargs):
        import numba

        return numba.njit(*args, **{**kwargs, "cache": False})


def numba_or_shim() -> Any:
    """The `numba` module (JIT path) or the shim over the compiled kernels."""
    if _FORCE_JIT:
        return _NoCache()
    got = load()
    if got is None:
        import numba

        return numba
    return _Shim(*got)


# ---- build -----------------------------------------------------------------------------------------------


def _arg_spec(t) -> list:
    from numba.core import types

    if isinstance(t, types.Array):
        return ["array", np.dtype(str(t.dtype)).str, int(t.ndim), "C" if t.layout == "C" else "A"]
    if isinstance(t, types.Boolean):
        return ["bool"]
    if isinstance(t, types.Integer):
        return ["int"]
    if isinstance(t, types.Float):
        return ["float"]
    raise TypeError(f"no AOT export for argument type {t}")


def _general(sigs: list) -> list:
    """Signatures that differ only in array layout or read-only flags become one ('A' layout, writable):
    one compiled function instead of several."""
    from numba.core import types

    def norm(t):
        if isinstance(t, types.Array):
            return types.Array(t.dtype, t.ndim, t.layout, readonly=False)
        return t

    groups: dict[tuple, list] = {}
    for s in sigs:
        key = tuple((str(a.dtype), a.ndim) if isinstance(a, types.Array) else str(a) for a in s)
        groups.setdefault(key, []).append(tuple(norm(a) for a in s))
    out = []
    for members in groups.values():
        first = members[0]
        merged = []
        for i, a in enumerate(first):
            if isinstance(a, types.Array) and any(m[i].layout != a.layout for m in members):
                a = types.Array(a.dtype, a.ndim, "A")
            merged.append(a)
        out.append(tuple(merged))
    return out


def _build_here(dest: Path) -> None:
    """Compile in this process (which must use the JIT path: RUHRTWIN_KERNELS=jit)."""
    import warnings

    import numba
    from numba.core.registry import CPUDispatcher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from numba.pycc import CC

    from pipeline.stages.points import kernels as K

    if K.nb is not numba:
        raise RuntimeError("the AOT build must run with RUHRTWIN_KERNELS=jit")
    K.warm_all()
    cc = CC(MODULE)
    cc.output_dir = str(dest)
    cc.target_cpu = "host"  # as the JIT: the same code and bits, built for this machine only
    cc.verbose = False
    spec: dict[str, list] = {}
    for name, obj in sorted(vars(K).items()):
        if not isinstance(obj, CPUDispatcher) or not obj.signatures:
            continue
        for i, sig in enumerate(_general(list(obj.signatures))):
            cres = obj.overloads.get(sig) or obj.overloads[obj.signatures[0]]
            restype = cres.signature.return_type
            export = f"{name}__{i}"
            cc.export(export, restype(*sig))(obj.py_func)
            spec.setdefault(name, []).append({"export": export, "args": [_arg_spec(a) for a in sig]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cc.compile()
    (dest / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True))


def build(force: bool = False, quiet: bool = False) -> Path:
    """Compile the kernels for this machine (about a minute) unless a build for this key exists."""
    d = kernel_dir()
    if (d / "spec.json").is_file() and not force:
        return d
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=d.parent))
    except OSError as e:  # e.g. a read-only home: say where, the JIT path still works
        raise RuntimeError(
            f"cannot write the compiled kernels to {d.parent} ({e}); set RUHRTWIN_KERNEL_DIR"
        ) from e
    try:
        env = dict(os.environ, RUHRTWIN_KERNELS="jit")
        cmd = [sys.executable, "-m", "pipeline.stages.points._aot", "_build_into", str(tmp)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"compiling the point kernels failed:\n{r.stderr[-3000:]}")
        if d.exists() and force:
            remove_owned(d, marker="spec.json")  # a kernel build (never a folder of the user's)
        try:
            os.replace(tmp, d)  # atomic: a concurrent build or reader never sees half a build
        except OSError:
            if not (d / "spec.json").is_file():
                raise
    finally:
        remove_owned(tmp, owned_by=d.parent)  # the `.build-*` folder made above
    _prune(d.parent, keep=d)
    if not quiet:
        print(f"compiled point kernels: {d}")
    return d


def _prune(root: Path, keep: Path, n: int = 4) -> None:
    """Builds for older sources or CPUs: the newest few stay (switching branches back), the rest go."""
    builds = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[n - 1 :]:
        if (old / "spec.json").is_file():  # only kernel builds: RUHRTWIN_KERNEL_DIR may hold other folders
            remove_owned(old, marker="spec.json")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_build_into"]:
        _build_here(Path(argv[1]))
        return 0
    if argv[:1] == ["build"]:
        try:
            build(force="--force" in argv)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    if argv[:1] == ["where"]:
        print(kernel_dir())
        return 0
    print("usage: python -m pipeline.stages.points._aot build [--force] | where", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
