//! The process-wide tokio runtime every client shares.

use once_cell::sync::OnceCell;
use tokio::runtime::{Handle, Runtime};

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// Handle of the shared runtime, created on first use with at most two I/O threads: tether's
/// work is I/O-bound and a host app must keep its cores.
pub fn handle() -> Result<Handle, std::io::Error> {
    RUNTIME
        .get_or_try_init(|| {
            let workers = std::thread::available_parallelism()
                .map(|n| n.get().min(2))
                .unwrap_or(1);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name_fn(|| {
                    use std::sync::atomic::{AtomicUsize, Ordering};
                    static N: AtomicUsize = AtomicUsize::new(0);
                    format!("tether-io-{}", N.fetch_add(1, Ordering::Relaxed))
                })
                .enable_all()
                .build()
        })
        .map(|rt| rt.handle().clone())
}
