"""Build step of the tether Python package.

``pip install ./bindings/python`` runs ``build_py`` below, which

1. finds the tether Rust workspace: ``$TETHER_SOURCE_DIR``, or the first parent directory
   of this file whose ``Cargo.toml`` has a ``[workspace]`` table;
2. runs ``cargo build --release -p tether --lib`` there (``$CARGO_TARGET_DIR`` and cargo's
   own configuration decide the target directory; ``cargo metadata`` reports it);
3. copies ``libtether.so`` (``libtether.dylib`` on macOS) into ``tether/_native/`` of the
   build, so the wheel carries the library.

With ``$TETHER_LIBRARY=/path/to/libtether.so`` set, cargo is skipped and that file is
bundled as it is (tests use this to install a debug build quickly). A library built here has
its debug info stripped (``strip --strip-debug``) unless ``TETHER_STRIP=0``.

The wheel is platform-specific (``py3-none-<platform>``): it holds a native library but no
CPython extension, so any Python 3 on that platform can use it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel  # type: ignore

HERE = Path(__file__).resolve().parent


def _libname() -> str:
    if sys.platform == "darwin":
        return "libtether.dylib"
    if sys.platform == "win32":
        return "tether.dll"
    return "libtether.so"


def _fail(msg: str) -> "None":
    sys.stderr.write(f"\ntether build: {msg}\n\n")
    raise SystemExit(1)


def find_workspace() -> Path:
    env = os.environ.get("TETHER_SOURCE_DIR")
    if env:
        root = Path(env).resolve()
        if not (root / "Cargo.toml").is_file():
            _fail(f"TETHER_SOURCE_DIR={env} has no Cargo.toml")
        return root
    for d in [HERE, *HERE.parents]:
        cargo = d / "Cargo.toml"
        if cargo.is_file() and re.search(r"(?m)^\[workspace\]", cargo.read_text()):
            return d
    _fail(
        "cannot find the tether Rust workspace above "
        f"{HERE}; set TETHER_SOURCE_DIR to the repository root, or set "
        "TETHER_LIBRARY to an already built libtether"
    )
    raise AssertionError


def check_header_version(root: Path) -> None:
    """The binding's ABI_VERSION must match the header it is built with."""
    header = root / "include" / "tether.h"
    ffi = HERE / "tether" / "_ffi.py"
    if not header.is_file():
        return
    h = header.read_text()
    major = re.search(r"#define TETHER_VERSION_MAJOR (\d+)", h)
    minor = re.search(r"#define TETHER_VERSION_MINOR (\d+)", h)
    abi = re.search(r"ABI_VERSION[^=]*=\s*\((\d+),\s*(\d+)\)", ffi.read_text())
    if not (major and minor and abi):
        return
    if (major.group(1), minor.group(1)) != abi.groups():
        _fail(
            f"include/tether.h is version {major.group(1)}.{minor.group(1)} but the Python "
            f"binding declares ABI {abi.group(1)}.{abi.group(2)} (tether/_ffi.py): update "
            "the binding's declarations for the new C API first"
        )


def cargo_target_dir(root: Path, cargo: str) -> Path:
    try:
        out = subprocess.run(
            [cargo, "metadata", "--format-version", "1", "--no-deps"],
            cwd=root,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return Path(json.loads(out)["target_directory"])
    except (subprocess.CalledProcessError, KeyError, ValueError):
        env = os.environ.get("CARGO_TARGET_DIR")
        return Path(env) if env else root / "target"


def build_native() -> Path:
    """Returns the path of the library to bundle, building it if needed."""
    env = os.environ.get("TETHER_LIBRARY")
    if env:
        path = Path(env)
        if not path.is_file():
            _fail(f"TETHER_LIBRARY={env} does not exist")
        print(f"tether build: bundling TETHER_LIBRARY={path} (cargo skipped)")
        return path
    root = find_workspace()
    check_header_version(root)
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        _fail("cargo not found: install Rust (https://rustup.rs) to build the native library")
    cmd = [cargo, "build", "--release", "-p", "tether", "--lib"]
    print(f"tether build: {' '.join(cmd)} (in {root})", flush=True)
    r = subprocess.run(cmd, cwd=root)
    if r.returncode != 0:
        _fail(f"`{' '.join(cmd)}` failed with exit status {r.returncode}")
    lib = cargo_target_dir(root, cargo) / "release" / _libname()
    if not lib.is_file():
        _fail(f"cargo succeeded but {lib} does not exist")
    return lib


def strip_debug_info(path: Path) -> None:
    """The release profile keeps line tables (debug = 1) for the Rust developers; the wheel
    does not need them (about 35 MB -> a few MB). Symbols stay. TETHER_STRIP=0 keeps all."""
    if os.environ.get("TETHER_STRIP", "1") == "0":
        return
    strip = shutil.which("strip")
    if not strip:
        return
    flag = "-S" if sys.platform == "darwin" else "--strip-debug"
    r = subprocess.run([strip, flag, str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"tether build: warning: {strip} {flag} failed: {r.stderr.strip()}")


class build_py(_build_py):
    """Copies the native library into the package next to the Python modules."""

    def run(self) -> None:
        super().run()
        lib = build_native()
        from_cargo = not os.environ.get("TETHER_LIBRARY")
        targets = [Path(self.build_lib) / "tether" / "_native"]
        if getattr(self, "editable_mode", False):
            targets.append(HERE / "tether" / "_native")  # an editable install imports the source
        for d in targets:
            d.mkdir(parents=True, exist_ok=True)
            dest = d / _libname()
            if dest.exists():
                dest.unlink()  # never write through a library a running process has mapped
            shutil.copy2(lib, dest)
            if from_cargo:
                strip_debug_info(dest)


class bdist_wheel(_bdist_wheel):
    """A platform wheel (it carries a native library), usable by any Python 3."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):  # type: ignore[no-untyped-def]
        _, _, plat = super().get_tag()
        return "py3", "none", plat


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:
        return True


setup(
    cmdclass={"build_py": build_py, "bdist_wheel": bdist_wheel},
    distclass=BinaryDistribution,
)
