//! Project tasks that need more than `cargo build`; run them as `cargo xtask <task>`.
//!
//! `header` regenerates the two committed files that follow from the Rust sources:
//!
//! - `src/ffi/consts.rs`: the `TETHER_<STATUS>`, `TETHER_EVENT_<KIND>`, `TETHER_RESUME_*`,
//!   `TETHER_STATE_*` and `TETHER_LOG_*` constants, derived from the `Status`, `EventKind`,
//!   `ResumeOutcome`, `ConnectionState` and `LogLevel` enums so that the header, the Rust API
//!   and the bindings cannot drift apart (the enums stay the one source);
//! - `include/tether.h`: cbindgen's header for the C ABI. The exports are written with the
//!   `ffi_fn!` macro, so cbindgen reads the macro-expanded crate (`[parse.expand]` in
//!   cbindgen.toml), which needs `-Zunpretty=expanded` and so `RUSTC_BOOTSTRAP=1` on a stable
//!   toolchain.
//!
//! `header --check` writes nothing: it fails when either file differs from what would be
//! generated, or when the functions the header declares are not exactly the `tether_*`
//! symbols the built cdylib exports.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T> = std::result::Result<T, String>;

const CONSTS: &str = "src/ffi/consts.rs";
const HEADER: &str = "include/tether.h";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args[..] {
        ["header"] => header(false),
        ["header", "--check"] => header(true),
        _ => {
            eprintln!(
                "usage: cargo xtask header [--check]\n\n  header          regenerate {HEADER} \
                 and {CONSTS}\n  header --check  fail if either is stale or the header and \
                 the library's exports differ"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn header(check: bool) -> Result<()> {
    let root = root();
    let consts = generate_consts(&root)?;
    let mut stale = Vec::new();
    if check {
        if read(&root.join(CONSTS)) != consts {
            stale.push(CONSTS);
        }
    } else {
        // Written first: the header is generated from the crate as it is on disk.
        write_if_changed(&root.join(CONSTS), &consts)?;
    }

    let header = generate_header(&root)?;
    if check {
        if read(&root.join(HEADER)) != header {
            stale.push(HEADER);
        }
        let mut problems = Vec::new();
        if !stale.is_empty() {
            problems.push(format!(
                "{} out of date: the C API or the status/event enums changed. Run `cargo xtask \
                 header`, review the diff and commit it.",
                stale.join(" and ")
            ));
        }
        if let Err(e) = check_exports(&root, &read(&root.join(HEADER))) {
            problems.push(e);
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        println!("{HEADER} and {CONSTS} are up to date; the header declares every export");
    } else {
        write_if_changed(&root.join(HEADER), &header)?;
    }
    Ok(())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn write_if_changed(path: &Path, content: &str) -> Result<()> {
    if read(path) == content {
        println!("{} unchanged", path.display());
        return Ok(());
    }
    std::fs::write(path, content).map_err(|e| format!("write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// cbindgen on the expanded crate, then the fix-ups cbindgen has no option for.
fn generate_header(root: &Path) -> Result<String> {
    // Expansion runs `cargo rustc -- -Zunpretty=expanded`. It gets its own target directory:
    // RUSTC_BOOTSTRAP changes what some build scripts detect (proc-macro2 reruns on it), so
    // sharing `target/debug` would rebuild half the dependency tree on every switch.
    std::env::set_var("RUSTC_BOOTSTRAP", "1");
    std::env::set_var(
        "CARGO_EXPAND_TARGET_DIR",
        target_dir(root).join("xtask-expand"),
    );

    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .map_err(|e| format!("cbindgen.toml: {e}"))?;
    config.after_includes = Some(version_macros(root)?);
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_crate(root)
        .generate()
        .map_err(|e| format!("cbindgen failed: {e}"))?;
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let header = String::from_utf8(raw).map_err(|_| "cbindgen wrote non-UTF-8".to_owned())?;
    let header = parenthesize_negative_defines(&header);
    assert_namespaced(&header)?;
    Ok(header)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Every macro the header defines must carry the library's prefix: a bare `PING` or `VERSION`
/// from some `pub const` deep in the crate would collide with the including program's names.
/// cbindgen exports every public constant it finds, so a new one fails here until it is added
/// to `exclude` in cbindgen.toml (or given a `TETHER_` name on purpose).
fn assert_namespaced(h: &str) -> Result<()> {
    let leaked: Vec<&str> = h
        .lines()
        .filter_map(|l| l.strip_prefix("#define "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|name| !name.starts_with("TETHER_"))
        .collect();
    if leaked.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{HEADER} would define un-prefixed macros {leaked:?}: add them to `exclude` in \
             cbindgen.toml or make them non-public"
        ))
    }
}

/// `#define X -1` breaks in expressions like `a-X`; cbindgen writes bare literals, so wrap them.
fn parenthesize_negative_defines(h: &str) -> String {
    let mut out = String::with_capacity(h.len() + 256);
    for line in h.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        match body
            .strip_prefix("#define ")
            .and_then(|r| r.split_once(" -"))
        {
            Some((name, num)) if num.bytes().all(|b| b.is_ascii_digit()) => {
                out.push_str(&format!("#define {name} (-{num})\n"));
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// `#define`s for the version, from the `[package]` version in Cargo.toml.
fn version_macros(root: &Path) -> Result<String> {
    let manifest: toml::Table = read(&root.join("Cargo.toml"))
        .parse()
        .map_err(|e| format!("Cargo.toml: {e}"))?;
    let version = manifest
        .get("package")
        .and_then(|p| p.get("version"))
        .and_then(|v| v.as_str())
        .ok_or("Cargo.toml has no package.version")?;
    let core = version.split(['-', '+']).next().unwrap_or(version);
    let parts: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = parts[..] else {
        return Err(format!("version {version} is not MAJOR.MINOR.PATCH"));
    };
    Ok(format!(
        "\n/** Version of the tether library this header belongs to (from Cargo.toml). */\n\
         #define TETHER_VERSION_MAJOR {major}\n\
         #define TETHER_VERSION_MINOR {minor}\n\
         #define TETHER_VERSION_PATCH {patch}\n\
         #define TETHER_VERSION_STRING \"{version}\"\n\
         /** (MAJOR << 16) | (MINOR << 8) | PATCH; compare with tether_version_number(). */\n\
         #define TETHER_VERSION_NUMBER (({major}u << 16) | ({minor}u << 8) | {patch}u)\n"
    ))
}

/// The header must declare exactly the functions the library exports: the exports are
/// macro-generated, so one cbindgen could not see would be missing from C without any other
/// test noticing. The symbols come from the built cdylib, the ground truth for C callers.
fn check_exports(root: &Path, header: &str) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "tether", "--lib"])
        .current_dir(root)
        .env_remove("RUSTC_BOOTSTRAP")
        .status()
        .map_err(|e| format!("cannot run cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build -p tether --lib failed".into());
    }
    let lib = target_dir(root).join("debug/libtether.so");
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .map_err(|e| format!("cannot run nm (binutils) on {}: {e}", lib.display()))?;
    if !out.status.success() {
        return Err(format!(
            "nm -D {} failed: {}",
            lib.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("tether_"))
        .map(str::to_owned)
        .collect();
    let declared = declared_functions(header);
    if exported == declared {
        return Ok(());
    }
    let missing: Vec<_> = exported.difference(&declared).collect();
    let extra: Vec<_> = declared.difference(&exported).collect();
    Err(format!(
        "{HEADER} and {} disagree: exported but not declared {missing:?}; declared but not \
         exported {extra:?}",
        lib.display()
    ))
}

/// Names of the functions the header declares (cbindgen writes one declaration per line).
fn declared_functions(header: &str) -> BTreeSet<String> {
    header
        .lines()
        .filter(|l| !l.starts_with([' ', '#', '/', '*', '}']) && !l.starts_with("typedef"))
        .filter_map(|l| {
            let before = &l[..l.find('(')?];
            let name = before
                .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()?;
            name.starts_with("tether_").then(|| name.to_owned())
        })
        .collect()
}

/// `src/ffi/consts.rs`: one `pub const` per variant of `Status`, `EventKind`,
/// `ConnectionState` and `LogLevel`, with the variant's doc comment.
fn generate_consts(root: &Path) -> Result<String> {
    let mut out = String::from(
        "//! `TETHER_<STATUS>`, `TETHER_EVENT_<KIND>`, `TETHER_RESUME_<OUTCOME>`, `TETHER_STATE_<STATE>`\n\
         //! and `TETHER_LOG_<LEVEL>`, generated by `cargo xtask header` from `Status`\n\
         //! (src/status.rs), `EventKind` and `ResumeOutcome` (src/event.rs), `ConnectionState`\n\
         //! (src/stats.rs) and `LogLevel` (src/logging.rs). Do not\n\
         //! edit: change the enums and rerun it.\n\
         \n\
         use super::tether_status;\n\
         \n",
    );
    enum_consts(
        &root.join("src/status.rs"),
        "Status",
        "TETHER_",
        "tether_status",
        &mut out,
    )?;
    out.push('\n');
    enum_consts(
        &root.join("src/event.rs"),
        "EventKind",
        "TETHER_EVENT_",
        "u32",
        &mut out,
    )?;
    out.push('\n');
    enum_consts(
        &root.join("src/event.rs"),
        "ResumeOutcome",
        "TETHER_RESUME_",
        "u32",
        &mut out,
    )?;
    out.push('\n');
    enum_consts(
        &root.join("src/stats.rs"),
        "ConnectionState",
        "TETHER_STATE_",
        "u32",
        &mut out,
    )?;
    out.push('\n');
    enum_consts(
        &root.join("src/logging.rs"),
        "LogLevel",
        "TETHER_LOG_",
        "u32",
        &mut out,
    )?;
    Ok(out)
}

/// Appends one `pub const PREFIX_VARIANT: ty = value;` per variant of `enum_name`, keeping the
/// variant's doc comment. Discriminants must be integer literals (optionally negated).
fn enum_consts(
    file: &Path,
    enum_name: &str,
    prefix: &str,
    ty: &str,
    out: &mut String,
) -> Result<()> {
    let src = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let parsed = syn::parse_file(&src).map_err(|e| format!("{}: {e}", file.display()))?;
    let item = parsed
        .items
        .iter()
        .find_map(|i| match i {
            syn::Item::Enum(e) if e.ident == enum_name => Some(e),
            _ => None,
        })
        .ok_or_else(|| format!("enum {enum_name} not found in {}", file.display()))?;
    for v in &item.variants {
        let (_, expr) = v
            .discriminant
            .as_ref()
            .ok_or_else(|| format!("{enum_name}::{} needs an explicit value", v.ident))?;
        let value = int_literal(expr)
            .ok_or_else(|| format!("{enum_name}::{} must be an integer literal", v.ident))?;
        for attr in &v.attrs {
            if let syn::Meta::NameValue(nv) = &attr.meta {
                if nv.path.is_ident("doc") {
                    if let syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) = &nv.value
                    {
                        let _ = writeln!(out, "///{}", s.value());
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "pub const {prefix}{}: {ty} = {value};",
            screaming_snake(&v.ident.to_string())
        );
    }
    Ok(())
}

fn int_literal(expr: &syn::Expr) -> Option<i64> {
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => i.base10_parse().ok(),
        syn::Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            expr,
            ..
        }) => int_literal(expr).map(|v| -v),
        _ => None,
    }
}

/// `ErrInvalidUtf8` -> `ERR_INVALID_UTF8`.
fn screaming_snake(name: &str) -> String {
    let mut s = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_defines_get_parentheses() {
        let h = "#define TETHER_ERR_NULL -1\n#define TETHER_OK 0\n#define TETHER_X -1u\n";
        assert_eq!(
            parenthesize_negative_defines(h),
            "#define TETHER_ERR_NULL (-1)\n#define TETHER_OK 0\n#define TETHER_X -1u\n"
        );
    }

    #[test]
    fn unprefixed_macros_are_refused() {
        assert!(assert_namespaced("#define TETHER_OK 0\n").is_ok());
        assert!(assert_namespaced("#define TETHER_OK 0\n#define PING 0\n").is_err());
    }

    #[test]
    fn declared_functions_are_found() {
        let h = "typedef void (*tether_event_cb)(void *ctx);\n\
                 const char *tether_version(void);\n\
                 tether_status tether_client_new(const struct tether_config *cfg);\n\
                 #define TETHER_VERSION_NUMBER ((0u << 16))\n";
        let names: Vec<_> = declared_functions(h).into_iter().collect();
        assert_eq!(names, ["tether_client_new", "tether_version"]);
    }

    #[test]
    fn screaming_snake_case() {
        assert_eq!(screaming_snake("ErrInvalidUtf8"), "ERR_INVALID_UTF8");
        assert_eq!(screaming_snake("Ok"), "OK");
    }
}
