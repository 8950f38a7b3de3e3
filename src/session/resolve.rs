//! Name resolution as RFC 8305 §3 asks for it: the AAAA and A lookups run at once, and
//! connecting starts on the first useful answer instead of waiting for both. A resolver
//! whose AAAA answer never comes (a middlebox that drops those queries, a broken DNS64) then
//! costs the Resolution Delay, not the resolver's timeout of several seconds; the answer that
//! comes late joins the race of addresses still under way.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// RFC 8305 §3's recommended Resolution Delay: how long an A answer waits for the AAAA answer
/// before connecting starts without it.
const RESOLUTION_DELAY: Duration = Duration::from_millis(50);

/// One family's lookup, or the addresses of a family that answered late.
type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// The addresses of the family that answered late; empty if it found none or failed.
pub(crate) type Later = Pin<Box<dyn Future<Output = Vec<SocketAddr>> + Send>>;

/// A name's addresses: those to try now, in the order RFC 8305 §4 tries them, and the other
/// family's answer if it has not come yet.
pub(crate) struct Resolved {
    pub(crate) now: Vec<SocketAddr>,
    pub(crate) later: Option<Later>,
}

/// Resolves `host` (without brackets) for `port`: an IP literal at once, a name with both
/// lookups at once (see the module's comment). An error only when neither family has an
/// address: the A lookup's error, which names the usual cause (no such name), unless only the
/// AAAA one failed.
pub(crate) async fn resolve(host: &str, port: u16) -> io::Result<Resolved> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Resolved {
            now: vec![SocketAddr::new(ip, port)],
            later: None,
        });
    }
    first_answers(lookup(host, port, true), lookup(host, port, false)).await
}

/// [`resolve`], waiting for both answers: where the addresses are handed over as one list
/// (through a plain SOCKS5 proxy, which is given them one by one).
pub(crate) async fn resolve_all(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let r = resolve(host, port).await?;
    let mut all = r.now;
    if let Some(later) = r.later {
        all.extend(later.await);
    }
    Ok(interleave(all))
}

/// Picks the addresses to start with from the two lookups (RFC 8305 §3): the AAAA answer at
/// once; the A answer after waiting up to [`RESOLUTION_DELAY`] for the AAAA one. A family
/// that failed or found nothing waits for the other.
async fn first_answers(mut v6: Lookup, mut v4: Lookup) -> io::Result<Resolved> {
    let (first_is_v6, first) = tokio::select! {
        biased;
        r = &mut v6 => (true, r),
        r = &mut v4 => (false, r),
    };
    let first = match first {
        Ok(addrs) if !addrs.is_empty() => addrs,
        failed => {
            // Nothing to start with: everything rests on the other answer.
            let other = if first_is_v6 { v4.await } else { v6.await };
            let (v6, v4) = if first_is_v6 {
                (failed, other)
            } else {
                (other, failed)
            };
            let found = |addrs: Vec<SocketAddr>| Resolved {
                now: interleave(addrs),
                later: None,
            };
            return match (v6, v4) {
                (_, Ok(addrs)) if !addrs.is_empty() => Ok(found(addrs)),
                (Ok(addrs), _) if !addrs.is_empty() => Ok(found(addrs)),
                // The A lookup's error first: it names the usual cause (no such name).
                (_, Err(e)) | (Err(e), _) => Err(e),
                _ => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the name has no address",
                )),
            };
        }
    };
    if first_is_v6 {
        return Ok(Resolved {
            now: interleave(first),
            later: Some(Box::pin(async move { v4.await.unwrap_or_default() })),
        });
    }
    match tokio::time::timeout(RESOLUTION_DELAY, &mut v6).await {
        Ok(v6) => {
            let mut both = v6.unwrap_or_default();
            both.extend(first);
            Ok(Resolved {
                now: interleave(both),
                later: None,
            })
        }
        Err(_) => Ok(Resolved {
            now: interleave(first),
            later: Some(Box::pin(async move { v6.await.unwrap_or_default() })),
        }),
    }
}

/// One family's addresses of `host` from the system's resolver, on a blocking thread; in unit
/// tests, those a test gave the name ([`fake::resolving`]): no machine's resolver offers one
/// name with several loopback addresses.
fn lookup(host: &str, port: u16, v6: bool) -> Lookup {
    #[cfg(test)]
    if let Some(answer) = fake::answer(host, port, v6) {
        return answer;
    }
    let owned = host.to_owned();
    with_port(shared(host, v6, move || family_lookup(&owned, v6)), port)
}

/// A family's answer, shared by every attempt that asked while it ran: the error's kind and
/// text, since an `io::Error` cannot be cloned.
type Answer = Result<Arc<[IpAddr]>, (io::ErrorKind, String)>;

/// How long a running lookup is joined. An attempt after that (at the app's cue after a
/// network change, say) asks afresh: the new network's resolver may answer at once where the
/// old one stalls.
const JOIN_WITHIN: Duration = Duration::from_secs(1);

/// The most lookups of one name and family running at once; past it, attempts join the
/// youngest, whatever its age.
pub(crate) const MAX_RUNNING: usize = 4;

/// The lookups still running.
static RUNNING: Mutex<Vec<Running>> = Mutex::new(Vec::new());

struct Running {
    id: u64,
    host: String,
    v6: bool,
    since: std::time::Instant,
    answer: watch::Receiver<Option<Answer>>,
}

/// Takes a finished lookup out of [`RUNNING`], also if its thread never ran it (the runtime
/// shutting down), so that a later attempt starts afresh instead of waiting on it.
struct Finished(u64);

impl Drop for Finished {
    fn drop(&mut self) {
        crate::lock(&RUNNING).retain(|r| r.id != self.0);
    }
}

/// The answer of `blocking` (one family's lookup of `host`) on the blocking pool, or of a
/// lookup of the same name and family still running that started within [`JOIN_WITHIN`]:
/// `getaddrinfo` cannot be cancelled, so each attempt that gave up on a stalled resolver (at
/// its connect timeout, a pause, a close) would otherwise leave a thread behind, until a long
/// outage filled the pool the library's other blocking work needs. With this, a name holds at
/// most [`MAX_RUNNING`] threads per family, and later attempts get the answer a stalled
/// lookup brings at last.
fn shared(
    host: &str,
    v6: bool,
    blocking: impl FnOnce() -> io::Result<Vec<IpAddr>> + Send + 'static,
) -> impl Future<Output = io::Result<Arc<[IpAddr]>>> + Send + 'static {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (mut answer, start) = {
        let mut running = crate::lock(&RUNNING);
        let same = || running.iter().filter(|r| r.host == host && r.v6 == v6);
        match same().max_by_key(|r| r.since) {
            Some(r) if r.since.elapsed() < JOIN_WITHIN || same().count() >= MAX_RUNNING => {
                (r.answer.clone(), None)
            }
            _ => {
                let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (tx, rx) = watch::channel(None);
                running.push(Running {
                    id,
                    host: host.to_owned(),
                    v6,
                    since: std::time::Instant::now(),
                    answer: rx.clone(),
                });
                (rx, Some((id, tx)))
            }
        }
    };
    // Spawned with the list unlocked: a task the pool refuses is dropped at once, and its
    // `Finished` takes the list's lock.
    if let Some((id, tx)) = start {
        let finished = Finished(id);
        tokio::task::spawn_blocking(move || {
            let answer = blocking()
                .map(Arc::from)
                .map_err(|e| (e.kind(), e.to_string()));
            // Out of the list first: whoever asks after this answer asks anew.
            drop(finished);
            let _ = tx.send(Some(answer));
        });
    }
    async move {
        let done = answer.wait_for(Option::is_some).await.map_err(|_| {
            io::Error::other("the name lookup ended without an answer (the runtime is stopping)")
        })?;
        match done.as_ref().expect("waited for an answer") {
            Ok(ips) => Ok(ips.clone()),
            Err((kind, text)) => Err(io::Error::new(*kind, text.clone())),
        }
    }
}

/// `answer`'s addresses with `port`.
fn with_port(
    answer: impl Future<Output = io::Result<Arc<[IpAddr]>>> + Send + 'static,
    port: u16,
) -> Lookup {
    Box::pin(async move {
        let ips = answer.await?;
        Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
    })
}

/// `getaddrinfo` for one family, stream sockets only (one answer per address).
fn family_lookup(host: &str, v6: bool) -> io::Result<Vec<IpAddr>> {
    let hints = dns_lookup::AddrInfoHints {
        flags: 0,
        address: if v6 { libc::AF_INET6 } else { libc::AF_INET },
        socktype: libc::SOCK_STREAM,
        protocol: 0,
    };
    let found = dns_lookup::getaddrinfo(Some(host), None, Some(hints)).map_err(io::Error::from)?;
    let mut ips = Vec::new();
    for info in found {
        let ip = info?.sockaddr.ip();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Ok(ips)
}

/// Orders addresses as RFC 8305 §4 asks: families alternate, starting with the family of the
/// first address, each family keeping the resolver's order.
pub(crate) fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first_v6) = addrs.first().map(SocketAddr::is_ipv6) else {
        return addrs;
    };
    let (mut first, mut second): (VecDeque<_>, VecDeque<_>) =
        addrs.into_iter().partition(|a| a.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(first.len() + second.len());
    while !first.is_empty() || !second.is_empty() {
        out.extend(first.pop_front());
        out.extend(second.pop_front());
    }
    out
}

/// `addrs` joining a race whose last attempt went to `last`: [`interleave`]d, starting with
/// the other family when there is one, so that families keep alternating (RFC 8305 §4).
pub(crate) fn interleave_after(
    last: Option<SocketAddr>,
    addrs: Vec<SocketAddr>,
) -> Vec<SocketAddr> {
    let mut out = interleave(addrs);
    if let Some(last) = last {
        if let Some(other) = out.iter().position(|a| a.is_ipv6() != last.is_ipv6()) {
            let first = out.remove(other);
            out.insert(0, first);
            out = interleave(out);
        }
    }
    out
}

/// Names with addresses given by tests, for [`lookup`] (in the whole process: a client's
/// session runs on the library's threads; each test uses names of its own).
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    struct Name {
        name: String,
        ips: Vec<IpAddr>,
        /// How long each family's answer takes (AAAA, A); `None`: it never comes.
        delays: [Option<Duration>; 2],
        /// Looked up on the blocking pool, as the system's resolver is, held there until
        /// released.
        held: Option<Arc<Held>>,
    }

    /// A stalled resolver: each lookup of its name holds a blocking thread until
    /// [`Held::release`].
    pub(crate) struct Held {
        started: std::sync::atomic::AtomicUsize,
        released: Mutex<bool>,
        cond: std::sync::Condvar,
    }

    impl Held {
        /// How many lookups of the name have started on a blocking thread.
        pub(crate) fn started(&self) -> usize {
            self.started.load(std::sync::atomic::Ordering::SeqCst)
        }

        /// Lets every lookup, held or later, answer.
        pub(crate) fn release(&self) {
            *crate::lock(&self.released) = true;
            self.cond.notify_all();
        }

        fn block(&self) {
            self.started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut released = crate::lock(&self.released);
            while !*released {
                released = self.cond.wait(released).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Releases its [`Held`] when dropped, also when the test fails: held blocking threads
    /// would keep the test's runtime from shutting down.
    pub(crate) struct Release(pub(crate) Arc<Held>);

    impl Drop for Release {
        fn drop(&mut self) {
            self.0.release();
        }
    }

    /// From now on `name`'s lookups hold a blocking thread each until released, then resolve
    /// to `ips`.
    pub(crate) fn held(name: &str, ips: &[IpAddr]) -> Arc<Held> {
        let held = Arc::new(Held {
            started: Default::default(),
            released: Mutex::new(false),
            cond: Default::default(),
        });
        crate::lock(&NAMES).push(Name {
            name: name.to_owned(),
            ips: ips.to_vec(),
            delays: [Some(Duration::ZERO); 2],
            held: Some(held.clone()),
        });
        held
    }

    static NAMES: Mutex<Vec<Name>> = Mutex::new(Vec::new());

    /// From now on `name` resolves to `ips`, in that order, both families answering at once.
    pub(crate) fn resolving(name: &str, ips: &[IpAddr]) {
        resolving_after(name, ips, Some(Duration::ZERO), Some(Duration::ZERO));
    }

    /// `name` resolves to `ips`; its AAAA answer comes after `v6`, its A answer after `v4`
    /// (`None`: never).
    pub(crate) fn resolving_after(
        name: &str,
        ips: &[IpAddr],
        v6: Option<Duration>,
        v4: Option<Duration>,
    ) {
        crate::lock(&NAMES).push(Name {
            name: name.to_owned(),
            ips: ips.to_vec(),
            delays: [v6, v4],
            held: None,
        });
    }

    /// The answer of family `v6` that a test gave `host`, with `port`.
    pub(super) fn answer(host: &str, port: u16, v6: bool) -> Option<Lookup> {
        let names = crate::lock(&NAMES);
        let n = names.iter().rev().find(|n| n.name == host)?;
        let ips: Vec<IpAddr> = n
            .ips
            .iter()
            .filter(|ip| ip.is_ipv6() == v6)
            .copied()
            .collect();
        if let Some(held) = n.held.clone() {
            let answer = shared(host, v6, move || {
                held.block();
                Ok(ips)
            });
            return Some(with_port(answer, port));
        }
        let delay = n.delays[usize::from(!v6)];
        let answer = async move {
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
            Ok(Arc::from(ips))
        };
        Some(with_port(answer, port))
    }
}

#[cfg(test)]
mod tests {
    use super::fake::resolving_after;
    use super::*;
    use std::time::Instant;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// RFC 8305 §3: an AAAA answer that never comes costs the Resolution Delay, and the
    /// A answer's addresses are tried meanwhile; the AAAA ones would join the race later.
    #[tokio::test]
    async fn rfc8305_3_a_silent_aaaa_lookup_costs_only_the_resolution_delay() {
        resolving_after(
            "no-aaaa.test",
            &[ip("::1"), ip("127.0.0.1")],
            None,
            Some(Duration::ZERO),
        );
        let t0 = Instant::now();
        let r = resolve("no-aaaa.test", 80).await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert_eq!(r.now, [SocketAddr::new(ip("127.0.0.1"), 80)]);
        assert!(r.later.is_some(), "the AAAA answer may still come");
    }

    /// RFC 8305 §3: an AAAA answer starts connecting at once; the A answer follows as
    /// `later`. Both within the Resolution Delay: one list, IPv6 first, families alternating.
    #[tokio::test]
    async fn rfc8305_3_the_aaaa_answer_starts_at_once_and_the_a_answer_joins_later() {
        resolving_after(
            "slow-a.test",
            &[ip("127.0.0.1"), ip("::1"), ip("127.0.0.2")],
            Some(Duration::ZERO),
            Some(Duration::from_millis(300)),
        );
        let r = resolve("slow-a.test", 80).await.unwrap();
        assert_eq!(r.now, [SocketAddr::new(ip("::1"), 80)]);
        let later = r.later.expect("the A answer").await;
        assert_eq!(later.len(), 2);

        resolving_after(
            "both.test",
            &[ip("127.0.0.1"), ip("127.0.0.2"), ip("::1")],
            Some(Duration::from_millis(10)),
            Some(Duration::ZERO),
        );
        let r = resolve("both.test", 80).await.unwrap();
        let order: Vec<IpAddr> = r.now.iter().map(SocketAddr::ip).collect();
        assert_eq!(order, [ip("::1"), ip("127.0.0.1"), ip("127.0.0.2")]);
        assert!(r.later.is_none());
        assert_eq!(resolve_all("slow-a.test", 80).await.unwrap().len(), 3);
    }

    /// A family with no address leaves it all to the other; neither: a clear error. IP
    /// literals are not looked up.
    #[tokio::test]
    async fn a_family_without_addresses_waits_for_the_other() {
        resolving_after(
            "v4-only.test",
            &[ip("127.0.0.1")],
            Some(Duration::ZERO),
            Some(Duration::from_millis(100)),
        );
        let r = resolve("v4-only.test", 80).await.unwrap();
        assert_eq!(r.now, [SocketAddr::new(ip("127.0.0.1"), 80)]);
        assert!(r.later.is_none());
        resolving_after("none.test", &[], Some(Duration::ZERO), Some(Duration::ZERO));
        let e = resolve("none.test", 80).await.err().expect("no address");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let r = resolve("::1", 80).await.unwrap();
        assert_eq!(r.now, [SocketAddr::new(ip("::1"), 80)]);
    }

    /// `getaddrinfo` cannot be cancelled: attempts that gave up on a stalled lookup leave it
    /// running, and later ones within [`JOIN_WITHIN`] wait for it instead of starting another
    /// (one blocking thread per name and family, not two per attempt); once it answered, the
    /// next one asks anew.
    #[tokio::test]
    async fn a_stalled_lookup_is_shared_by_later_attempts() {
        let held = super::fake::held("held.test", &[ip("127.0.0.1"), ip("::1")]);
        let _release = super::fake::Release(held.clone());
        let first = Instant::now();
        for _ in 0..20 {
            let attempt = tokio::time::timeout(Duration::from_millis(5), resolve("held.test", 80));
            assert!(attempt.await.is_err(), "held: no answer yet");
        }
        let t0 = Instant::now();
        while held.started() < 2 && t0.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(held.started(), 2, "one lookup per family");
        // One more attempt joins the held lookups, then gets their answer.
        let mut waiting = Box::pin(resolve_all("held.test", 80));
        let joined = tokio::time::timeout(Duration::from_millis(5), &mut waiting);
        assert!(joined.await.is_err(), "held: no answer yet");
        // Normally well within the window; a machine slowed past it may start a second pair.
        let shared = if first.elapsed() < JOIN_WITHIN { 2 } else { 4 };
        held.release();
        let mut all = waiting.await.unwrap();
        assert!(held.started() <= shared, "the last attempt shared them too");
        let before = held.started();
        // Either family may answer first once released.
        all.sort();
        assert_eq!(
            all,
            [
                SocketAddr::new(ip("127.0.0.1"), 80),
                SocketAddr::new(ip("::1"), 80)
            ]
        );
        let again = resolve_all("held.test", 81).await.unwrap();
        assert!(again.iter().all(|a| a.port() == 81), "{again:?}");
        assert_eq!(
            held.started(),
            before + 2,
            "answered lookups are not reused"
        );
    }

    /// A lookup stalled for over [`JOIN_WITHIN`] is not joined (the resolver of a network the
    /// device just joined may answer at once), up to [`MAX_RUNNING`] per name and family;
    /// past that, attempts join the youngest.
    #[tokio::test]
    async fn an_old_stalled_lookup_is_not_joined_up_to_a_cap() {
        let held = super::fake::held("held-long.test", &[ip("127.0.0.1"), ip("::1")]);
        let _release = super::fake::Release(held.clone());
        for round in 1..=MAX_RUNNING + 1 {
            let attempt =
                tokio::time::timeout(Duration::from_millis(5), resolve("held-long.test", 80));
            assert!(attempt.await.is_err(), "held: no answer yet");
            let expected = 2 * round.min(MAX_RUNNING);
            let t0 = Instant::now();
            while held.started() < expected && t0.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(held.started(), expected, "round {round}");
            tokio::time::sleep(JOIN_WITHIN + Duration::from_millis(50)).await;
        }
    }

    /// The system's resolver, one family at a time: `localhost` has an IPv4 address.
    #[tokio::test]
    async fn the_system_resolver_answers_per_family() {
        let all = resolve_all("localhost", 80).await.unwrap();
        assert!(all.iter().any(SocketAddr::is_ipv4), "{all:?}");
        assert!(all.iter().all(|a| a.port() == 80));
        assert!(resolve("no-such-name.invalid", 80).await.is_err());
    }
}
