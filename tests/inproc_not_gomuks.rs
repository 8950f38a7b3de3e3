//! One Go runtime per process (gomuks-rpc.md §12), when the first Go library named is not a
//! gomuks FFI: it is refused for what it is, but its Go runtime started with it, so a gomuks
//! library named next is refused too, unloaded. Alone in its test binary: it leaves its
//! process with such a library loaded.

mod common;

use std::path::PathBuf;

use common::*;
use tether::{Client, Config, Status};

#[test]
fn spec12_a_go_library_that_is_not_gomuks_still_holds_the_go_runtime() {
    let dir = fake_gomuksffi_dir();
    let (not_gomuks, gomuks) = (
        dir.join("libnotgomuks-go.so"),
        dir.join("libfakegomuksffi-go.so"),
    );
    let root = std::env::temp_dir().join(format!("tether-not-gomuks-{}", std::process::id()));
    let connect = |lib: &PathBuf| {
        Client::new(Config::builder("").in_process(lib, &root).build().unwrap())
            .connect()
            .unwrap_err()
    };
    for _ in 0..2 {
        // Asked again, the loaded library is refused the same way (not loaded twice).
        let e = connect(&not_gomuks);
        assert_eq!(e.status(), Status::ErrConfig, "{e}");
        assert!(
            e.message()
                .contains("is not a gomuks FFI library (no GomuksInit)"),
            "{e}"
        );
    }
    let e = connect(&gomuks);
    assert_eq!(e.status(), Status::ErrConfig, "{e}");
    assert!(
        e.message().contains("Go runtime") && e.message().contains("libnotgomuks-go.so"),
        "{e}"
    );
    // /proc/self/maps names files by their real path.
    let real = gomuks.canonicalize().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(!maps.contains(real.to_str().unwrap()), "it was loaded");
    let _ = std::fs::remove_dir_all(&root);
}
