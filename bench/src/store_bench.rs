//! tether-bench-store: what the gomuks store costs (docs/store.md, "Memory").
//!
//! Against `tether-backend` with its room model: the same client work with and without a store
//! attached, alternating in one process, so the difference is the store's. Per round and mode:
//! the time from `connect` to `init_complete` taken (the initial sync of ROOMS rooms), the time
//! to take a burst of BURST live messages spread over those rooms, and the heap held after
//! each (a counting allocator: live bytes, not RSS, so the figures do not depend on the
//! allocator's caching). With the store, also the heap after evicting every room that is not
//! open. One JSON line per round and mode.
//!
//! Usage: tether-bench-store URL ROOMS HISTORY BURST ROUNDS

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use tether::{Client, Config, Event, EventKind, Pop, Store};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// POSTs to the backend's control endpoint; returns the body.
fn control(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("backend reachable");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

fn take(c: &Client) -> Event {
    match c.poll(Some(Duration::from_secs(60))) {
        Pop::Event(ev) => ev,
        other => panic!("no event: {other:?}"),
    }
}

/// Takes events until `done` says so; counts STORE events on the way.
fn take_until(c: &Client, mut done: impl FnMut(&Event) -> bool) -> u64 {
    let mut stores = 0;
    loop {
        let ev = take(c);
        if std::env::var_os("STORE_BENCH_DEBUG").is_some() {
            eprintln!("{:?} {} {}", ev.kind(), ev.command(), ev.request_id());
        }
        stores += u64::from(ev.kind() == EventKind::Store);
        if done(&ev) {
            return stores;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("usage: tether-bench-store URL ROOMS HISTORY BURST ROUNDS");
            std::process::exit(2)
        })
    };
    let url = arg(1);
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let rooms: usize = arg(2).parse().unwrap();
    let history: usize = arg(3).parse().unwrap();
    let burst: usize = arg(4).parse().unwrap();
    let rounds: usize = arg(5).parse().unwrap();
    let config = || {
        Config::builder(url)
            .basic_auth("tether", "tether-password")
            .build()
            .unwrap()
    };
    // Brings up the shared runtime, so its memory is in every baseline.
    let warm = Client::new(config());
    warm.connect().unwrap();
    take_until(&warm, |e| e.command() == "init_complete");
    warm.close().unwrap();
    take_until(&warm, |e| e.kind() == EventKind::Closed);
    drop(warm);
    for round in 1..=rounds {
        for with_store in [false, true] {
            control(
                addr,
                &format!("/_testkit/rooms/seed?n={rooms}&history={history}"),
            );
            std::thread::sleep(Duration::from_millis(50));
            let base = live();
            let c = Client::new(config());
            let store = with_store.then(|| Store::attach(&c, br#"{"evict_after_ms": 0}"#).unwrap());
            let t0 = Instant::now();
            c.connect().unwrap();
            let mut stores = take_until(&c, |e| e.command() == "init_complete");
            // The STORE event for init_complete follows it.
            if with_store {
                stores += take_until(&c, |e| e.kind() == EventKind::Store);
            }
            let init_s = t0.elapsed().as_secs_f64();
            let after_init = live() - base;
            let t1 = Instant::now();
            let body = control(addr, &format!("/_testkit/rooms/burst?n={burst}"));
            let newest: i64 = serde_json::from_str::<serde_json::Value>(&body).unwrap()
                ["newest_id"]
                .as_i64()
                .unwrap();
            stores += take_until(&c, |e| {
                e.kind() == EventKind::Message && e.request_id() == newest
            });
            if with_store {
                stores += take_until(&c, |e| e.kind() == EventKind::Store);
            }
            let burst_s = t1.elapsed().as_secs_f64();
            let after_burst = live() - base;
            let after_gc = store.as_ref().map(|s| {
                s.collect_garbage();
                live() - base
            });
            // What the client alone still holds (its queue grew with the burst): the store's
            // own footprint after eviction is the difference.
            drop(store);
            let without = live() - base;
            let opt = |v: Option<isize>| v.map_or("null".to_owned(), |g| g.to_string());
            println!(
                "{{\"round\":{round},\"store\":{with_store},\"rooms\":{rooms},\"burst\":{burst},\"init_s\":{init_s:.6},\"burst_s\":{burst_s:.6},\"heap_after_init\":{after_init},\"heap_after_burst\":{after_burst},\"heap_after_gc\":{},\"heap_store_dropped\":{},\"store_events\":{stores}}}",
                opt(after_gc),
                opt(with_store.then_some(without))
            );
            c.close().unwrap();
            take_until(&c, |e| e.kind() == EventKind::Closed);
            drop(c);
        }
    }
}
