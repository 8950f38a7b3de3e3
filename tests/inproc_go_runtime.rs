//! One Go runtime per process (gomuks-rpc.md §12): once a gomuks library with a Go runtime is
//! loaded, naming another one is refused before it is loaded. Alone in its test binary: it
//! leaves its process with such a library (a double that exports the marker symbol) loaded.

mod common;

use std::path::PathBuf;

use common::*;
use tether::{Client, Config, EventKind, Status};

fn root(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tether-go-runtime-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

#[tokio::test]
async fn spec12_a_second_gomuks_library_beside_a_go_runtime_is_refused_unloaded() {
    let dir = fake_gomuksffi_dir();
    let (go, plain) = (
        dir.join("libfakegomuksffi-go.so"),
        dir.join("libfakegomuksffi.so"),
    );
    let (a, b) = (root("a"), root("b"));
    let in_process = |lib: &PathBuf, root: &PathBuf| {
        Client::new(Config::builder("").in_process(lib, root).build().unwrap())
    };
    let first = in_process(&go, &a);
    first.connect().unwrap();
    until_kind(&first, EventKind::Connected).await;
    close_and_drain(&first).await;

    let other = in_process(&plain, &b);
    let e = other.connect().unwrap_err();
    assert_eq!(e.status(), Status::ErrConfig, "{e}");
    assert!(
        e.message().contains("Go runtime") && e.message().contains("libfakegomuksffi-go.so"),
        "{e}"
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!maps.contains(plain.to_str().unwrap()), "it was loaded");

    // The library already loaded serves a new client.
    let again = in_process(&go, &b);
    again.connect().unwrap();
    until_kind(&again, EventKind::Connected).await;
    close_and_drain(&again).await;
    for r in [a, b] {
        let _ = std::fs::remove_dir_all(r);
    }
}
