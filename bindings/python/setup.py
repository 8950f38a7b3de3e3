"""Build step of the tether Python package.

``pip install ./bindings/python`` runs ``build_py`` below, which

1. finds the tether Rust crate: ``$TETHER_SOURCE_DIR``; the copy an sdist carries in
   ``rust/``; or the first parent directory of this file whose ``Cargo.toml`` has a
   ``[workspace]`` table;
2. builds the library there with the ``dist`` profile (LTO). When ``cargo-zigbuild`` is on
   PATH (``bindings/python/build-wheel.sh`` provides it and ``ziglang``), on Linux it runs
   ``cargo zigbuild --profile dist --target <arch>-unknown-linux-gnu.2.17`` so the library
   needs nothing newer than glibc 2.17; otherwise ``cargo build --profile dist``, which
   links against this machine's glibc. ``$CARGO_TARGET_DIR`` and cargo's own configuration
   decide the target directory (``cargo metadata`` reports it);
3. copies ``libtether.so`` (``libtether.dylib`` on macOS) into ``tether/_native/`` of the
   build and strips its debug info, so the wheel carries the library.

With ``$TETHER_LIBRARY=/path/to/libtether.so`` set, cargo is skipped and that file is
bundled as it is (tests use this to install a debug build quickly).

The wheel is platform-specific but needs no particular CPython (``py3-none-<platform>``): it
holds a native library, not an extension module. On Linux the platform tag is the manylinux
one the bundled library qualifies for, read from the glibc symbol versions it needs
(``manylinux_2_17_x86_64`` for a zigbuild library).

``python -m build --sdist`` puts the crate (``cargo package``: sources, header, Cargo.lock)
into the sdist's ``rust/``, so the sdist builds anywhere cargo is installed.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel  # type: ignore

HERE = Path(__file__).resolve().parent
# Where an sdist carries the crate (see ``sdist`` below).
BUNDLED_CRATE = HERE / "rust"
# The glibc a zigbuild library is linked against: a manylinux_2_17 wheel installs on every
# distribution from CentOS 7 on, and Rust's std needs nothing older.
GLIBC = os.environ.get("TETHER_GLIBC", "2.17")
PROFILE = "dist"
# The library build_py bundled, for bdist_wheel's platform tag.
_bundled: Optional[Path] = None


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
    if (BUNDLED_CRATE / "Cargo.toml").is_file():
        return BUNDLED_CRATE
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


def find_cargo() -> str:
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        _fail(
            "cargo not found. Building tether from source compiles its Rust library, which "
            "needs Rust (https://rustup.rs, or your distribution's cargo package). Prebuilt "
            "wheels need no Rust; TETHER_LIBRARY=/path/to/libtether.so bundles a library "
            "built elsewhere."
        )
    return cargo


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


def zigbuild_target() -> Optional[str]:
    """The target triple with a glibc version for cargo-zigbuild, or None to use cargo."""
    if os.environ.get("TETHER_ZIGBUILD", "1") == "0" or not sys.platform.startswith("linux"):
        return None
    if not shutil.which("cargo-zigbuild"):
        return None
    machine = platform.machine()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)
    return f"{arch}-unknown-linux-gnu.{GLIBC}"


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
    cargo = find_cargo()
    target = zigbuild_target()
    if target:
        cmd = [cargo, "zigbuild", "--profile", PROFILE, "--target", target]
    else:
        cmd = [cargo, "build", "--profile", PROFILE]
    cmd += ["-p", "tether", "--lib"]
    print(f"tether build: {' '.join(cmd)} (in {root})", flush=True)
    r = subprocess.run(cmd, cwd=root)
    if r.returncode != 0:
        _fail(f"`{' '.join(cmd)}` failed with exit status {r.returncode}")
    out = cargo_target_dir(root, cargo)
    if target:
        out /= target.split(".")[0]  # cargo-zigbuild's output directory has no glibc suffix
    lib = out / PROFILE / _libname()
    if not lib.is_file():
        _fail(f"cargo succeeded but {lib} does not exist")
    return lib


def strip_debug_info(path: Path) -> None:
    """The dist profile keeps line tables for the Rust developers; the wheel does not need
    them (about 25 MB -> 4 MB). The exported symbols stay. TETHER_STRIP=0 keeps all."""
    if os.environ.get("TETHER_STRIP", "1") == "0":
        return
    strip = shutil.which("strip")
    if not strip:
        return
    flag = "-S" if sys.platform == "darwin" else "--strip-unneeded"
    r = subprocess.run([strip, flag, str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"tether build: warning: {strip} {flag} failed: {r.stderr.strip()}")


def glibc_needed(lib: Path) -> Optional[int]:
    """The highest GLIBC_2.N symbol version ``lib`` needs (the N), None if it needs none.
    The version names are strings of the dynamic string table; nothing else in the library
    looks like one."""
    found = [int(m) for m in re.findall(rb"GLIBC_2\.(\d+)", lib.read_bytes())]
    return max(found) if found else None


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
        global _bundled
        _bundled = targets[0] / _libname()


class bdist_wheel(_bdist_wheel):
    """A platform wheel (it carries a native library), usable by any Python 3."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):  # type: ignore[no-untyped-def]
        _, _, plat = super().get_tag()
        if plat.startswith("linux_") and _bundled is not None and _bundled.is_file():
            # pip and PyPI accept only manylinux tags; this one is honest because the tag's
            # glibc is the newest the library's symbols need (auditwheel show agrees).
            minor = max(17, glibc_needed(_bundled) or 17)
            plat = f"manylinux_2_{minor}_{plat[len('linux_'):]}"
        return "py3", "none", plat


class sdist(_sdist):
    """Adds the Rust crate as ``cargo package`` publishes it (manifest without the
    workspace, Cargo.lock, sources, header) under ``rust/``, so the sdist builds on its own."""

    def make_release_tree(self, base_dir, files):  # type: ignore[no-untyped-def]
        super().make_release_tree(base_dir, files)
        if (BUNDLED_CRATE / "Cargo.toml").is_file():  # an sdist made from an sdist
            shutil.copytree(BUNDLED_CRATE, Path(base_dir) / "rust")
            return
        root = find_workspace()
        check_header_version(root)
        cargo = find_cargo()
        cmd = [cargo, "package", "--quiet", "--no-verify", "--allow-dirty", "-p", "tether"]
        print(f"tether sdist: {' '.join(cmd)} (in {root})", flush=True)
        r = subprocess.run(cmd, cwd=root)
        if r.returncode != 0:
            _fail(f"`{' '.join(cmd)}` failed with exit status {r.returncode}")
        meta = json.loads(
            subprocess.run(
                [cargo, "metadata", "--format-version", "1", "--no-deps"],
                cwd=root, check=True, capture_output=True, text=True,
            ).stdout
        )
        version = next(p["version"] for p in meta["packages"] if p["name"] == "tether")
        crate = Path(meta["target_directory"]) / "package" / f"tether-{version}.crate"
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(crate) as tar:
                # The "data" filter (where this Python has it) refuses links and absolute
                # paths; the archive is cargo's own, so this is belt and braces.
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, **safe)
            src = Path(tmp) / f"tether-{version}"
            for extra in ("Cargo.toml.orig", ".cargo_vcs_info.json"):
                (src / extra).unlink(missing_ok=True)
            shutil.copytree(src, Path(base_dir) / "rust")


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:
        return True


setup(
    cmdclass={"build_py": build_py, "bdist_wheel": bdist_wheel, "sdist": sdist},
    distclass=BinaryDistribution,
)
