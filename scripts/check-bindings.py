#!/usr/bin/env python3
"""Checks that every C function the Swift and Kotlin bindings use exists in include/tether.h
and is called (Swift) or declared (Kotlin) with the header's number of arguments, and that
every version number copied by hand (the Python package and its ABI, the Kotlin jar and its
binding version) is the crate's: a check in seconds, before the bindings' own stages (a JDK
build, a Swift root) compile and test them. (Swift reads the header's macros.)"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def header_functions():
    text = (ROOT / "include/tether.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    funcs = {}
    for m in re.finditer(r"\b(tether_[a-z0-9_]+)\s*\(([^()]*)\)\s*;", text):
        args = m.group(2).strip()
        funcs[m.group(1)] = 0 if args in ("", "void") else args.count(",") + 1
    return funcs


def call_arity(src, start):
    """Number of top-level arguments of the call whose '(' is at src[start]."""
    depth, args, seen_any, i = 0, 0, False, start
    while i < len(src):
        c = src[i]
        if c in "([{":
            depth += 1
            if depth == 1 and c == "(":
                i += 1
                continue
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return args + 1 if seen_any else 0
        elif c == '"':
            i = src.index('"', i + 1)
        elif c == "," and depth == 1:
            args += 1
        if depth >= 1 and not c.isspace():
            seen_any = True
        i += 1
    raise ValueError("unbalanced call")


def versions():
    """(where, version found) for each hand-copied version, and the crate's version."""

    def find(path, pattern):
        m = re.search(pattern, (ROOT / path).read_text(), re.M)
        return (path, m.group(1) if m else "(not found)")

    crate = find("Cargo.toml", r'^version = "([^"]+)"')[1]
    found = [
        find("include/tether.h", r'^#define TETHER_VERSION_STRING "([^"]+)"'),
        find("bindings/python/pyproject.toml", r'^version = "([^"]+)"'),
        find("bindings/python/tether/__init__.py", r'^__version__ = "([^"]+)"'),
        find("bindings/kotlin/pom.xml", r"^  <version>([^<]+)</version>"),
        find(
            "bindings/kotlin/src/main/kotlin/org/tether/TetherClient.kt",
            r'const val BINDING_VERSION = "([^"]+)"',
        ),
    ]
    abi = find("bindings/python/tether/_ffi.py", r"^ABI_VERSION: .* = \((\d+, \d+)\)")
    found.append((abi[0], abi[1].replace(", ", ".") + "." + crate.split(".")[2]))
    return crate, found


def main():
    funcs = header_functions()
    problems, checked = [], 0
    crate, found = versions()
    for where, version in found:
        checked += 1
        if version != crate:
            problems.append(f"{where}: version {version}, the crate is {crate}")
    for path in sorted((ROOT / "bindings/swift").rglob("*.swift")) + sorted(
        (ROOT / "examples/swift").rglob("*.swift")
    ):
        src = path.read_text()
        for m in re.finditer(r"\b(tether_[a-z0-9_]+)\s*\(", src):
            name = m.group(1)
            if src[max(0, m.start() - 5) : m.start()].strip().endswith("func"):
                continue
            checked += 1
            if name not in funcs:
                problems.append(f"{path.relative_to(ROOT)}: {name} is not in the header")
                continue
            n = call_arity(src, m.end() - 1)
            if n != funcs[name]:
                problems.append(
                    f"{path.relative_to(ROOT)}: {name} called with {n} arguments, header has {funcs[name]}"
                )
    for path in sorted((ROOT / "bindings/kotlin/src/main").rglob("*.kt")):
        src = path.read_text()
        for m in re.finditer(r"external fun (tether_[a-z0-9_]+)\(([^)]*)\)", src):
            name, params = m.group(1), m.group(2).strip()
            n = 0 if not params else params.count(",") + 1
            checked += 1
            if name not in funcs:
                problems.append(f"{path.relative_to(ROOT)}: {name} is not in the header")
            elif n != funcs[name]:
                problems.append(
                    f"{path.relative_to(ROOT)}: {name} declared with {n} parameters, header has {funcs[name]}"
                )
    for p in problems:
        print(p, file=sys.stderr)
    if checked == 0:
        print("check-bindings: found no calls to check", file=sys.stderr)
        return 1
    print(f"check-bindings: {checked - len(problems)} passed, {len(problems)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
