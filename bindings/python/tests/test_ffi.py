"""The binding against include/tether.h: every function declared with the header's types,
every status mapped to an exception, the batch entry layout, the version check."""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import struct
from ctypes import POINTER, c_bool, c_char, c_char_p, c_double, c_int, c_int32, c_int64, c_size_t
from ctypes import c_uint8, c_uint16, c_uint32, c_uint64, c_void_p
from typing import Any, Dict, List, Tuple

import pytest

import tether
from tether import _ffi
from tether.errors import LibraryError, Status, TetherError, exception_for
from tether.events import EventKind

from conftest import HEADER, run_python

OPAQUE = {"tether_client", "tether_config", "tether_batch", "tether_event", "tether_settings",
          "tether_store", "tether_batch_entry", "tether_proxy_answer", "void"}
SCALARS: Dict[str, Any] = {
    "tether_status": c_int32,
    "int32_t": c_int32,
    "int64_t": c_int64,
    "uint32_t": c_uint32,
    "uint64_t": c_uint64,
    "uint16_t": c_uint16,
    "uint8_t": c_uint8,
    "size_t": c_size_t,
    "bool": c_bool,
    "int": c_int,
    "double": c_double,
    "void": None,
    "tether_event_cb": _ffi.EVENT_CB,
    "tether_destroy_cb": _ffi.DESTROY_CB,
    "tether_log_cb": _ffi.LOG_CB,
    "tether_proxy_resolver_cb": _ffi.PROXY_RESOLVER_CB,
}


def header_text() -> str:
    return re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)


def header_functions() -> Dict[str, Tuple[str, List[str]]]:
    """name -> (return type, [parameter types]) for every prototype in the header."""
    out: Dict[str, Tuple[str, List[str]]] = {}
    for m in re.finditer(r"(?m)^([A-Za-z_][\w \*]*?)\b(tether_[a-z0-9_]+)\(([^()]*)\);",
                         header_text()):
        ret, name, params = m.group(1).strip(), m.group(2), m.group(3).strip()
        types = []
        if params not in ("", "void"):
            for p in params.split(","):
                p = p.strip()
                types.append(re.sub(r"\b\w+$", "", p).strip())  # drop the parameter name
        out[name] = (ret, types)
    return out


def ctype_for(c: str) -> Any:
    """The ctypes type a C type must be declared as in this binding."""
    const = "const" in c.split()
    t = " ".join(w for w in c.replace("*", " * ").split() if w not in ("const", "struct"))
    stars = t.count("*")
    base = t.replace("*", "").strip()
    if stars == 0:
        return SCALARS[base]
    if stars == 2:
        return POINTER(c_void_p)  # out-pointers to handles and to borrowed memory
    if base in OPAQUE:
        return c_void_p
    if base == "char":
        return c_char_p if const else POINTER(c_char)
    if base == "uint8_t" and const:
        return c_char_p  # payloads in: bytes are passed without a copy
    if base == "tether_stats":
        return POINTER(_ffi.StatsStruct)
    return {"size_t": POINTER(c_size_t), "int64_t": POINTER(c_int64),
            "uint32_t": POINTER(c_uint32)}[base]


def test_the_header_parses_into_many_functions() -> None:
    funcs = header_functions()
    assert len(funcs) >= 50, sorted(funcs)
    assert funcs["tether_client_poll_batch"] == (
        "tether_status",
        ["struct tether_client *", "int32_t", "struct tether_batch *", "size_t *"],
    )


@pytest.mark.parametrize("name", sorted(header_functions()))
def test_every_header_function_is_declared_with_the_headers_types(name: str) -> None:
    ret, params = header_functions()[name]
    assert name in _ffi.SIGNATURES, f"{name} is in include/tether.h but not declared in _ffi"
    restype, argtypes = _ffi.SIGNATURES[name]
    assert restype == ctype_for(ret), f"{name}: restype {restype} for C {ret!r}"
    assert len(argtypes) == len(params), f"{name}: {len(argtypes)} argtypes, header {params}"
    for i, (got, c) in enumerate(zip(argtypes, params)):
        assert got == ctype_for(c), f"{name} argument {i}: {got} for C {c!r}"
    fn = getattr(_ffi.lib, name)
    assert fn.restype == restype and list(fn.argtypes) == list(argtypes)


def test_the_binding_declares_nothing_the_header_lacks() -> None:
    extra = set(_ffi.SIGNATURES) - set(header_functions())
    assert not extra, f"declared but not in the header: {sorted(extra)}"


def header_defines(prefix: str) -> Dict[str, int]:
    out = {}
    for m in re.finditer(r"(?m)^#define TETHER_(\w+) \(?(-?\d+)\)?\s*$", header_text()):
        if m.group(1).startswith(prefix):
            out[m.group(1)] = int(m.group(2))
    return out


def header_statuses() -> Dict[str, int]:
    return {k: v for k, v in header_defines("").items()
            if k in ("OK", "TIMEOUT", "CLOSED") or k.startswith("ERR_")}


def test_every_header_status_is_a_status_member() -> None:
    statuses = header_statuses()
    assert len(statuses) >= 25
    for name, code in statuses.items():
        assert Status[name] == code, name
    assert {s.name for s in Status} == set(statuses), "Status has values the header lacks"


@pytest.mark.parametrize("name", sorted(k for k in header_statuses() if k.startswith("ERR_")))
def test_every_error_status_has_its_own_exception_class(name: str) -> None:
    code = header_statuses()[name]
    e = exception_for(code, "why")
    assert isinstance(e, TetherError)
    assert not isinstance(e, LibraryError), f"TETHER_{name} has no exception class"
    assert type(e).STATUS == code and e.status == code and e.message == "why"
    assert type(e).__name__ in tether.__all__, f"{type(e).__name__} is not exported"
    # The library describes every status it defines.
    assert _ffi.status_str(code) != "unknown status"


def test_unknown_statuses_still_raise_a_tether_error() -> None:
    e = exception_for(-99, "from the future")
    assert isinstance(e, LibraryError) and e.status == -99


def test_exception_families() -> None:
    assert issubclass(tether.RequestTimeoutError, TimeoutError)
    assert issubclass(tether.RemoteError, tether.RequestError)
    assert issubclass(tether.UnauthorizedError, tether.AuthError)
    assert issubclass(tether.AuthError, tether.ConnectionFailedError)
    assert issubclass(tether.InflateError, tether.ProtocolError)
    assert issubclass(tether.ConfigError, ValueError)
    assert issubclass(tether.WrongModeError, tether.StateError)


def test_event_kinds_and_protocols_match_the_header() -> None:
    kinds = header_defines("EVENT_")
    assert {f"EVENT_{k.name}": int(k) for k in EventKind} == kinds
    outcomes = header_defines("RESUME_")
    assert {f"RESUME_{o.name}": int(o) for o in tether.ResumeOutcome} == outcomes
    protocols = header_defines("PROTOCOL_")
    assert protocols == {"PROTOCOL_GOMUKS": _ffi.PROTOCOL_GOMUKS, "PROTOCOL_RWWS": _ffi.PROTOCOL_RWWS}


def test_versions_match_the_header() -> None:
    text = HEADER.read_text()
    major = int(re.search(r"#define TETHER_VERSION_MAJOR (\d+)", text).group(1))
    minor = int(re.search(r"#define TETHER_VERSION_MINOR (\d+)", text).group(1))
    string = re.search(r'#define TETHER_VERSION_STRING "([^"]+)"', text).group(1)
    assert _ffi.ABI_VERSION == (major, minor)
    assert tether.__version__ == string
    n = _ffi.lib.tether_version_number()
    assert ((n >> 16) & 0xFF, (n >> 8) & 0xFF) == (major, minor)
    assert tether.library_version().split(".")[:2] == [str(major), str(minor)]


def test_the_version_check_refuses_another_abi() -> None:
    major, minor = _ffi.ABI_VERSION
    _ffi.check_version((major << 16) | (minor << 8) | 7, "x.y.7")  # a patch release is fine
    with pytest.raises(tether.LibraryLoadError, match="needs ABI"):
        _ffi.check_version((major << 16) | ((minor + 1) << 8), "next minor")
    with pytest.raises(tether.LibraryLoadError, match="needs ABI"):
        _ffi.check_version(((major + 1) << 16) | (minor << 8), "next major")
    # From 1.0 on a newer minor release only adds: it serves an older binding, not the other
    # way round (the CMake package's rule too).
    assert _ffi.compatible((1, 3), (1, 2)) and _ffi.compatible((1, 2), (1, 2))
    assert not _ffi.compatible((1, 1), (1, 2)) and not _ffi.compatible((2, 2), (1, 2))
    assert not _ffi.compatible((0, 3), (0, 2))


def header_batch_fields() -> List[Tuple[str, str, int]]:
    text = HEADER.read_text()
    body = re.search(r"typedef struct tether_batch_entry \{(.*?)\} tether_batch_entry;",
                     text, re.S).group(1)
    fields = []
    for m in re.finditer(r"Offset (\d+)\.\s*\*/\s*([\w]+) (\w+);", body):
        fields.append((m.group(3), m.group(2), int(m.group(1))))
    return fields


def test_the_batch_entry_layout_matches_the_header() -> None:
    fields = header_batch_fields()
    assert len(fields) == 15
    assert tuple(f[0] for f in fields) == _ffi.BATCH_FIELDS
    sizes = {"int64_t": "q", "uint64_t": "Q", "uint32_t": "I", "tether_status": "i",
             "uint16_t": "H", "uint8_t": "B"}
    fmt = _ffi.BATCH_ENTRY.format
    codes = fmt.lstrip("=<>!@")
    assert len(codes) == len(fields)
    offset = 0
    for code, (name, ctype, want) in zip(codes, fields):
        assert code == sizes[ctype], f"{name}: format {code}, header {ctype}"
        assert offset == want, f"{name}: offset {offset}, header {want}"
        offset += struct.calcsize("=" + code)
    assert offset == _ffi.BATCH_ENTRY.size == 80


def test_a_missing_library_fails_with_a_clear_import_error() -> None:
    r = run_python("import tether", TETHER_LIBRARY="/nonexistent/libtether.so")
    assert r.returncode != 0
    assert "native library not found at /nonexistent/libtether.so" in r.stderr
    assert "TETHER_LIBRARY" in r.stderr


def test_a_foreign_library_fails_with_a_clear_import_error() -> None:
    libc = ctypes.util.find_library("c")
    assert libc
    r = run_python("import tether", TETHER_LIBRARY=libc)
    assert r.returncode != 0
    assert "does not export tether_" in r.stderr, r.stderr


def test_invalid_configurations_raise_config_errors() -> None:
    with pytest.raises(tether.ConfigError, match="scheme"):
        tether.Client("ftp://127.0.0.1:1/")
    with pytest.raises(tether.InvalidArgumentError, match="protocol"):
        tether.Client("http://127.0.0.1:1", protocol="xmpp")
    with pytest.raises(tether.InvalidArgumentError, match="together"):
        tether.Client("http://127.0.0.1:1", username="u")
    with pytest.raises(tether.InvalidArgumentError, match="NUL"):
        tether.Client("http://127.0.0.1:1\0x")
    with pytest.raises(tether.ConfigError):
        tether.Client("http://127.0.0.1:1", reconnect_backoff=(2, 1))
    with pytest.raises(tether.ConfigError):
        tether.Client("http://127.0.0.1:1", protocol="rwws", token="!!!not base64")
    # Out of the C type's range: refused, not wrapped (-1 as size_t would lift the cap).
    for name, bad in (("max_message_bytes", -1), ("queue_capacity", -5),
                      ("max_message_bytes", 1 << 64), ("last_server_ts", 1 << 63)):
        with pytest.raises(tether.InvalidArgumentError, match=name):
            tether.Client("http://127.0.0.1:1", **{name: bad})
    with pytest.raises(tether.InvalidArgumentError, match="batch_size"):
        tether.Client("http://127.0.0.1:1", batch_size=-1)


def test_the_package_is_typed() -> None:
    from pathlib import Path

    assert (Path(tether.__file__).parent / "py.typed").exists()


def test_both_clients_take_the_options_declared_once() -> None:
    """Client and AsyncClient take tether.Options as **options; each option names a config
    function of the header, and every config setter of the header is some option's."""
    import inspect

    from tether._options import OPTIONS
    from tether.aio import AsyncClient

    assert list(OPTIONS) == list(tether.Options.__annotations__)
    assert "token" in OPTIONS and "allow_insecure_credentials" in OPTIONS
    for cls in (tether.Client, AsyncClient):
        params = inspect.signature(cls.__init__).parameters
        assert params["options"].kind == inspect.Parameter.VAR_KEYWORD
        assert str(params["options"].annotation) == "Unpack[Options]"
        assert not set(OPTIONS) & set(params), f"{cls.__name__} spells out an option again"
    setters = {o.setter for o in OPTIONS.values() if o.setter is not None}
    in_header = {
        n for n in header_functions() if n.startswith(("tether_config_set_", "tether_config_add_"))
    }
    assert setters == in_header - {"tether_config_set_url"}  # the url is a parameter
    assert OPTIONS["protocol"].default == "gomuks" and OPTIONS["compress"].default is True


def test_an_unknown_option_is_a_type_error() -> None:
    from tether.aio import AsyncClient

    with pytest.raises(TypeError, match=r"Client\(\) got an unexpected keyword argument 'tokn' "
                       r"\(did you mean 'token'\?\)"):
        tether.Client("http://127.0.0.1:1", tokn="x")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'on_event'"):
        AsyncClient("http://127.0.0.1:1", on_event=print)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        tether._options.build_config("http://127.0.0.1:1", bogus=1)


def header_struct_fields(name: str) -> List[Tuple[str, str]]:
    """``(field, C type)`` of ``typedef struct name { ... } name;``, in declaration order."""
    body = re.search(rf"typedef struct {name} \{{(.*?)\}} {name};", header_text(), re.S)
    assert body, name
    return [(m.group(2), m.group(1).replace("const ", "").strip())
            for m in re.finditer(r"([\w ]+?\**)\s*(\w+);", body.group(1))]


@pytest.mark.parametrize("name,struct", [("tether_stats", "StatsStruct"),
                                         ("tether_log_record", "LogRecord")])
def test_the_observability_structs_match_the_header(name: str, struct: str) -> None:
    fields = header_struct_fields(name)
    declared = getattr(_ffi, struct)._fields_
    assert [f for f, _ in fields] == [f for f, _ in declared]
    for (field, c), (_, ctype) in zip(fields, declared):
        want = c_char_p if c == "char *" else SCALARS[c]
        assert ctype == want, f"{name}.{field}: {ctype} for C {c!r}"


def test_state_and_log_levels_match_the_header() -> None:
    assert {f"STATE_{s.name}": int(s) for s in tether.ConnectionState} == header_defines("STATE_")
    from tether import _log

    assert {f"LOG_{k}": v for k, v in _log.NATIVE_LEVELS.items()} == header_defines("LOG_")
