//! The crate's imports point one way. Reads the sources: every `crate::`, `super::` and
//! relative module path is an edge between modules, and
//! - the top-level modules keep the layer order declared in src/lib.rs (groups of `mod`
//!   lines separated by blank lines, highest first): a module imports only from lower groups,
//!   and the last group imports nothing of the crate;
//! - at every level, the child modules of one parent never import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Module = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib")) {
        m.pop();
    }
    m
}

/// The source without comments and string literals, so neither can fake or hide an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i..].starts_with(b"r#\"") {
            let end = text[i + 3..].find("\"#").map_or(b.len(), |e| i + 3 + e + 2);
            i = end;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Every path in `code` that starts with one of `roots` (`crate`, `super`, or a child module
/// name), expanding `use a::{b, c::d}` groups. Each path is a list of segments.
fn paths(code: &str, roots: &BTreeSet<String>) -> Vec<Vec<String>> {
    let toks: Vec<&str> = tokenize(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts = roots.contains(toks[i])
            && toks.get(i + 1) == Some(&"::")
            && (i == 0 || !matches!(toks[i - 1], "::" | "."));
        if starts {
            let (mut got, next) = tree(&toks, i);
            out.append(&mut got);
            i = next;
        } else {
            i += 1;
        }
    }
    out
}

fn tokenize(code: &str) -> Vec<&str> {
    let mut toks = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push(&code[s..i]);
        } else if code[i..].starts_with("::") {
            toks.push("::");
            i += 2;
        } else {
            if !c.is_ascii_whitespace() {
                toks.push(&code[i..i + 1]);
            }
            i += 1;
        }
    }
    toks
}

/// Parses `a::b::{c, d::e}` from token `i`; returns the expanded paths and the next index.
fn tree(toks: &[&str], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        match toks.get(i) {
            Some(&"{") => {
                let mut out = Vec::new();
                i += 1;
                while i < toks.len() && toks[i] != "}" {
                    if toks[i] == "," {
                        i += 1;
                        continue;
                    }
                    let (sub, next) = tree(toks, i);
                    for s in sub {
                        let mut p = prefix.clone();
                        p.extend(s);
                        out.push(p);
                    }
                    i = next.max(i + 1);
                }
                return (out, i + 1);
            }
            Some(t) if t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                prefix.push((*t).to_owned());
                i += 1;
                if toks.get(i) == Some(&"::") {
                    i += 1;
                } else {
                    return (vec![prefix], i);
                }
            }
            _ => return (vec![prefix], i),
        }
    }
}

/// The longest known module that `path`, read from inside `from`, names.
fn resolve(path: &[String], from: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    let mut base: Module = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("super") => {
            base = from.clone();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => base = from.clone(),
    }
    let mut best = None;
    let mut m = base.clone();
    if modules.contains(&m) {
        best = Some(m.clone());
    }
    for seg in rest {
        m.push(seg.clone());
        if modules.contains(&m) {
            best = Some(m.clone());
        } else {
            break;
        }
    }
    best
}

fn find_cycle(nodes: &BTreeSet<String>, edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeSet<(String, String)>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for (_, to) in edges.iter().filter(|(f, _)| f == n) {
            match state.get(to).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == to).unwrap();
                    let mut cyc = stack[at..].to_vec();
                    cyc.push(to.clone());
                    return Some(cyc);
                }
                0 => {
                    if let Some(c) = visit(to, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in nodes {
        if state.get(n).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, edges, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// (importing module, imported module) for every import in the crate.
fn edges(src: &Path) -> (BTreeSet<Module>, BTreeSet<(Module, Module)>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(src, f)).collect();
    let mut out = BTreeSet::new();
    for f in &files {
        let from = module_of(src, f);
        let mut roots: BTreeSet<String> = ["crate", "super"].map(String::from).into();
        for m in &modules {
            if m.len() == from.len() + 1 && m.starts_with(&from) {
                roots.insert(m.last().unwrap().clone());
            }
        }
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        for p in paths(&code, &roots) {
            if let Some(to) = resolve(&p, &from, &modules) {
                if to != from {
                    out.insert((from.clone(), to));
                }
            }
        }
    }
    (modules, out)
}

/// The layer groups declared in src/lib.rs, highest first.
fn declared_layers(lib: &str) -> Vec<Vec<String>> {
    let mut layers = vec![Vec::new()];
    for line in lib.lines() {
        let l = line.trim();
        if let Some(name) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            layers.last_mut().unwrap().push(name.to_owned());
        } else if l.is_empty() && !layers.last().unwrap().is_empty() {
            layers.push(Vec::new());
        }
    }
    layers.retain(|l| !l.is_empty());
    layers
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn top_level_modules_keep_the_declared_layers() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let layers = declared_layers(&lib);
    assert!(layers.len() >= 3, "layers in lib.rs: {layers:?}");
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let (_, edges) = edges(&src());
    let mut wrong = Vec::new();
    for (from, to) in &edges {
        let (Some(f), Some(t)) = (from.first(), to.first()) else {
            continue;
        };
        if f == t {
            continue;
        }
        let (rf, rt) = (rank[f.as_str()], rank[t.as_str()]);
        if rt <= rf || rf == layers.len() - 1 {
            wrong.push(format!("{} -> {}", from.join("::"), to.join("::")));
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layer order of src/lib.rs {layers:?}:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn sibling_modules_never_import_each_other_in_a_circle() {
    let (modules, edges) = edges(&src());
    let mut by_parent: BTreeMap<Module, BTreeSet<(String, String)>> = BTreeMap::new();
    for (from, to) in &edges {
        let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
        if common < from.len() && common < to.len() {
            by_parent
                .entry(from[..common].to_vec())
                .or_default()
                .insert((from[common].clone(), to[common].clone()));
        }
    }
    let mut cycles = Vec::new();
    for (parent, e) in &by_parent {
        let nodes: BTreeSet<String> = modules
            .iter()
            .filter(|m| m.len() == parent.len() + 1 && m.starts_with(parent))
            .map(|m| m.last().unwrap().clone())
            .collect();
        if let Some(c) = find_cycle(&nodes, e) {
            cycles.push(format!(
                "in crate::{}: {}",
                parent.join("::"),
                c.join(" -> ")
            ));
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

/// The checker itself finds what it must: grouped imports, `super`, and a planted cycle.
#[test]
fn the_checker_sees_grouped_imports_and_cycles() {
    let roots: BTreeSet<String> = ["crate", "super", "child"].map(String::from).into();
    let code = code_only(
        "use crate::{a::X, b::{c::Y, Z}};\n// crate::hidden::X\nlet s = \"crate::str\";\nfn f() { super::super::d::g(); child::h(); x.crate_like(); }",
    );
    let got: BTreeSet<String> = paths(&code, &roots).iter().map(|p| p.join("::")).collect();
    let want: BTreeSet<String> = [
        "crate::a::X",
        "crate::b::c::Y",
        "crate::b::Z",
        "super::super::d::g",
        "child::h",
    ]
    .map(String::from)
    .into();
    assert_eq!(got, want);
    let nodes: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let cyc: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a")]
        .map(|(x, y)| (x.to_owned(), y.to_owned()))
        .into();
    assert!(find_cycle(&nodes, &cyc).is_some());
    let dag: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("a", "c")]
        .map(|(x, y)| (x.to_owned(), y.to_owned()))
        .into();
    assert!(find_cycle(&nodes, &dag).is_none());
}
