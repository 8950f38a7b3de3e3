//! The resume point, in one place: what the app persists (run id, last received event, the
//! credential), and the gomuks rules that keep it right across connections and backend
//! restarts (gomuks-rpc.md §7). Imports only leaves.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::lock;
use crate::secret::Secret;

/// Resume point carried across clients (and processes): the backend's `run_id` and the most
/// recent (most negative) buffered event id the app has taken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResumeState {
    /// `run_id` string from the backend's `run_id` event; empty if unknown.
    pub run_id: String,
    /// Most recent negative event id the app has taken from the client; 0 if none.
    pub last_received_event: i64,
}

impl ResumeState {
    /// Whether a connection can ask the backend to resume from here (§7.2: both parts known).
    pub(crate) fn is_resumable(&self) -> bool {
        !self.run_id.is_empty() && self.last_received_event < 0
    }
}

/// The longest `run_id` accepted, in bytes. gomuks sends a decimal `int64` (at most 20
/// characters); this leaves room for other backends while keeping a hostile or corrupt id out
/// of every upgrade URL.
pub(crate) const MAX_RUN_ID_BYTES: usize = 64;

/// Why `run_id` cannot be resumed with, if it cannot: the resume state reaches C
/// NUL-terminated, so an id holding a NUL would be persisted cut off and ask to resume a run
/// that never was, and an overlong one would go into every upgrade URL.
pub(crate) fn unusable_run_id(run_id: &str) -> Option<String> {
    if run_id.contains('\0') {
        return Some("the run_id holds a NUL".to_owned());
    }
    (run_id.len() > MAX_RUN_ID_BYTES).then(|| {
        format!(
            "the run_id is {} bytes long, over the {MAX_RUN_ID_BYTES} accepted (gomuks sends a \
             decimal number)",
            run_id.len()
        )
    })
}

/// Whether two run ids name the same backend run: gomuks compares them as decimal numbers
/// (§7.2), so a persisted `0123` resumes run `123` there, and must not read as a new run here.
fn same_run(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (a.parse::<i64>(), b.parse::<i64>()),
            (Ok(x), Ok(y)) if x == y
        )
}

/// What an app persists to come back later, readable from any thread while the session task
/// updates it: the resume point and the credential the next connection sends.
///
/// Two points are kept. The *received* point is the newest event the session has read: a
/// reconnect of this client resumes from it, since what it read before the cut is still in
/// the client's queue, and pings acknowledge it (an older ack would risk the backend's
/// collection dropping the listener, §7.4). The *taken* point is the newest event the app has
/// taken from that queue: it is what [`SharedResume::get`] hands out to persist, because a
/// later client starts with an empty queue, so events read but never taken must be replayed
/// to it. If a ping acknowledged them meanwhile the backend may have dropped them, and the
/// later client's resume then fails (RESET): never a silent gap.
#[derive(Debug)]
pub(crate) struct SharedResume {
    run_id: Mutex<String>,
    last_event: AtomicI64,
    taken: Mutex<Taken>,
    token: Mutex<Option<Secret>>,
}

/// The taken point, and the era whose events may move it.
#[derive(Debug)]
struct Taken {
    /// Bumped whenever the ids before it stop counting: a new run, a resume that failed, a
    /// connection that did not resume. Events still queued from an earlier era are taken
    /// without moving the point.
    era: u32,
    point: i64,
    /// The first event of each batch of this era that a consumer has taken and not handed
    /// over yet, one entry per batch: the point handed out stops short of every one, so a
    /// thread that hands over a newer batch does not claim one another thread still holds.
    held: Vec<i64>,
}

impl SharedResume {
    /// Seeded from the configuration.
    pub(crate) fn new(resume: &ResumeState, token: Option<Secret>) -> SharedResume {
        SharedResume {
            run_id: Mutex::new(resume.run_id.clone()),
            last_event: AtomicI64::new(resume.last_received_event),
            taken: Mutex::new(Taken {
                era: FIRST_ERA,
                point: resume.last_received_event,
                held: Vec::new(),
            }),
            token: Mutex::new(token),
        }
    }

    /// The token the next connection sends: the configured one, or the one the last login or
    /// renewal obtained.
    pub(crate) fn token(&self) -> Option<Secret> {
        lock(&self.token).clone()
    }

    /// Records a token obtained from the backend.
    pub(crate) fn set_token(&self, token: Secret) {
        *lock(&self.token) = Some(token);
    }

    /// What the app persists: the run and the newest event it has taken. A consistent
    /// snapshot: the point is read under the run id's lock, which a new run holds while it
    /// replaces both, so an old run's id never comes with the new run's id.
    pub(crate) fn get(&self) -> ResumeState {
        let run_id = lock(&self.run_id);
        let t = lock(&self.taken);
        // Ids only decrease: a held batch's first event is claimed by any point below it.
        let point = t
            .held
            .iter()
            .fold(t.point, |p, &first| p.max(first.saturating_add(1)));
        ResumeState {
            run_id: run_id.clone(),
            last_received_event: point,
        }
    }

    /// What a reconnect of this client asks for: the run and the newest event received.
    fn received(&self) -> ResumeState {
        let run_id = lock(&self.run_id);
        ResumeState {
            run_id: run_id.clone(),
            last_received_event: self.last_event.load(Ordering::Acquire),
        }
    }

    /// The app took buffered event `id` of era `era` from the queue.
    pub(crate) fn took(&self, era: u32, id: i64) {
        self.settle(era, None, Some(id));
    }

    /// A consumer took a batch of era `era` whose first buffered event is `first`, to hand
    /// over later: until [`SharedResume::settle`] releases it, the point stops short of it.
    pub(crate) fn hold(&self, era: u32, first: i64) {
        let mut t = lock(&self.taken);
        if t.era == era {
            t.held.push(first);
        }
    }

    /// Releases the hold of the batch starting at `released` (if any) and, if the app got
    /// its events, moves the point to `taken`, the batch's newest, at once.
    pub(crate) fn settle(&self, era: u32, released: Option<i64>, taken: Option<i64>) {
        let mut t = lock(&self.taken);
        // An older era's events and holds no longer count (new_era dropped the holds).
        if t.era != era {
            return;
        }
        if let Some(first) = released {
            if let Some(i) = t.held.iter().position(|&f| f == first) {
                t.held.swap_remove(i);
            }
        }
        if let Some(id) = taken {
            // Ids only decrease within an era, so the minimum is the most recent.
            t.point = t.point.min(id);
        }
    }

    /// Ids only decrease within a run, so the minimum is the most recent.
    fn advance(&self, id: i64) {
        self.last_event.fetch_min(id, Ordering::AcqRel);
    }

    /// Starts a new era and returns it: the ids received so far stop counting, except
    /// `last_event` (this connection's own); nothing of the new era is taken yet.
    fn new_era(&self, last_event: i64) -> u32 {
        self.last_event.store(last_event, Ordering::Release);
        let mut t = lock(&self.taken);
        t.era = t.era.wrapping_add(1).max(FIRST_ERA);
        t.point = 0;
        t.held.clear();
        t.era
    }

    /// Stores the run id; if it changed (a different backend process, or unknown before),
    /// the last event becomes `last_event` (the new run's only), together, and the new era
    /// is returned.
    fn new_run(&self, run_id: &str, last_event: i64) -> Option<u32> {
        let mut g = lock(&self.run_id);
        let same = same_run(&g, run_id);
        // The backend's spelling is the one persisted from now on.
        *g = run_id.to_owned();
        (!same).then(|| self.new_era(last_event))
    }
}

/// Era 0 marks an event no resume point follows (replies, rwws, in-process).
const FIRST_ERA: u32 = 1;

/// What became of a connection's request to resume. The server never says (§7.2); the client
/// infers it: a `sync_complete` with `clear_state` before `init_complete`, or a changed
/// `run_id` without `last_server_ts`, means the state was reset; one with `catchup` means
/// the resume point was gone (in the same run or a new one) and a catchup since
/// `last_server_ts` replaced the replay (§6.1); `init_complete` without any of these means
/// every missed event was replayed (or, in a new run, that nothing was).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResumeOutcome {
    /// Every missed event was replayed.
    Succeeded,
    /// The backend started afresh: the app's cached state is gone.
    Reset,
    /// The missed events are gone, but a catchup sync brings the state up to date.
    CaughtUp,
}

/// The gomuks session's side of resume: follows received event ids and `run_id` events, says
/// what a new connection asks for, and which id each ping acknowledges.
pub(crate) struct Tracker {
    shared: Arc<SharedResume>,
    /// Most negative event id seen on the current connection (§7.2: a changed run_id makes
    /// every older id meaningless, but ids from this connection already belong to it).
    conn_min_event: i64,
    /// Last id sent as an ack; the same id is never acked twice (§7.4 item 2).
    last_sent_ack: i64,
    /// The backend's id for our current listener, for `prev_listener_id` (§7.4).
    listener_id: u64,
    /// This connection asked to resume and its outcome is not known yet.
    deciding: bool,
    /// This connection sent `last_server_ts`, so a failed resume may be a catchup (§6.1).
    catchup_asked: bool,
    /// This connection's `run_id` differs from the one it asked to resume: the missed events
    /// are gone whatever follows.
    run_changed: bool,
    /// No fresh start (a connection that did not resume, or whose resume failed) is under
    /// way. A fresh start sends the backend's state in payloads no resume replays (id 0,
    /// §3.3) between its buffered events: until its `init_complete`, resuming from one of
    /// those events would skip the rest of that state, so none counts for the point the app
    /// persists, and a reconnect starts afresh again.
    settled: bool,
    /// While a resume is being decided: the id the replay continues with. A replay is the
    /// contiguous tail after the point asked for (§7.2), so any other buffered id means the
    /// resume failed, even before the `sync_complete` that says so.
    replay_next: i64,
    /// This connection's replay was broken by a live event: the resume failed, whatever the
    /// backend sends next (it may send no `sync_complete` at all when building one fails).
    replay_broken: bool,
    /// The era this tracker stamps buffered events with: the taken point's, which only this
    /// tracker moves on.
    era: u32,
}

impl Tracker {
    pub(crate) fn new(shared: Arc<SharedResume>) -> Tracker {
        Tracker {
            shared,
            conn_min_event: 0,
            last_sent_ack: 0,
            listener_id: 0,
            deciding: false,
            catchup_asked: false,
            run_changed: false,
            settled: true,
            replay_next: 0,
            replay_broken: false,
            era: FIRST_ERA,
        }
    }

    /// Whether [`Tracker::begin_attempt`] would ask to resume now.
    pub(crate) fn will_resume(&self) -> bool {
        self.settled && self.shared.received().is_resumable()
    }

    /// The resume point a new connection asks for, if there is one (§7.2). The server's ack
    /// entry for a resumed listener starts there, so the next ack is counted from it.
    /// `catchup_asked`: the connection sends `last_server_ts`.
    pub(crate) fn begin_attempt(&mut self, catchup_asked: bool) -> Option<ResumeState> {
        let snapshot = self.shared.received();
        self.deciding = self.will_resume();
        self.catchup_asked = catchup_asked;
        self.run_changed = false;
        self.replay_broken = false;
        if self.deciding {
            self.last_sent_ack = snapshot.last_received_event;
            self.replay_next = snapshot.last_received_event - 1;
            Some(snapshot)
        } else {
            self.last_sent_ack = 0;
            self.fresh_start(0);
            None
        }
    }

    /// A fresh start begins: what was received before stops counting, except `last_event`
    /// (this connection's own), and nothing counts for the app's point until it is settled.
    fn fresh_start(&mut self, last_event: i64) {
        self.era = self.shared.new_era(last_event);
        self.settled = false;
    }

    /// The backend's state is complete on this connection (`init_complete`).
    fn settle(&mut self) {
        self.settled = true;
    }

    /// A replay holds a buffered `init_complete`: it followed state no resume replays (the
    /// room list after a login, sent while this client was away, §4.2). The resume cannot
    /// bring it; only a start afresh does.
    pub(crate) fn missed_state(&mut self) {
        self.replay_broken = true;
        self.fresh_start(self.conn_min_event);
    }

    /// A `sync_complete` with id 0: state no resume replays (a start's, a catchup, or the
    /// room list after a login, §3.3, §4.2). Until the `init_complete` after it, this is a
    /// fresh start.
    pub(crate) fn unreplayable_state(&mut self) {
        if self.settled {
            self.fresh_start(self.conn_min_event);
        }
    }

    /// A new connection is open: its events start afresh.
    pub(crate) fn connection_opened(&mut self) {
        self.conn_min_event = 0;
    }

    /// The listener id of the previous connection, once known.
    pub(crate) fn listener_id(&self) -> Option<u64> {
        (self.listener_id != 0).then_some(self.listener_id)
    }

    /// A server event with id `id` was received (negative ids are buffered events, §7.1).
    /// Returns the era to stamp its [`crate::event::Event`] with, so that taking it moves the
    /// taken point (0 for an id that is no buffered event). `completes_state`: the event is an
    /// `init_complete`, which ends a fresh start's state (a login's room list ends with a
    /// buffered one, §4.2), so taking it counts even though the start settles only after it.
    pub(crate) fn event(&mut self, id: i64, completes_state: bool) -> u32 {
        if id >= 0 {
            return 0;
        }
        self.conn_min_event = self.conn_min_event.min(id);
        self.shared.advance(id);
        if self.deciding && !self.run_changed && self.settled {
            if id == self.replay_next {
                self.replay_next -= 1;
            } else {
                // A live event where the replay would be: the backend started afresh.
                self.replay_broken = true;
                self.fresh_start(self.conn_min_event);
            }
        }
        if self.settled || completes_state {
            self.era
        } else {
            0
        }
    }

    /// The backend's `run_id` event (§7.2).
    pub(crate) fn run_id(&mut self, run_id: &str, listener_id: u64) -> Option<ResumeOutcome> {
        self.listener_id = listener_id;
        // New backend process: only this connection's ids are valid.
        if let Some(era) = self.shared.new_run(run_id, self.conn_min_event) {
            self.era = era;
            // The last ack stays: acking it again, for an event read before this message,
            // would drop the new listener (§7.4 item 2).
            self.settled = false;
            self.run_changed = true;
            // With `last_server_ts` a restarted backend sends a catchup rather than its
            // state afresh (§6.1, §7.5): the first sync_complete says which.
            if !self.catchup_asked {
                return self.decide(ResumeOutcome::Reset);
            }
        }
        None
    }

    /// Whether a `sync_complete` should be looked at for `clear_state`.
    pub(crate) fn deciding(&self) -> bool {
        self.deciding
    }

    /// A `sync_complete` arrived; `clear_state` says the backend sent its state afresh,
    /// `catchup` that it sent the changes since `last_server_ts` instead of a replay (§6.1).
    pub(crate) fn sync_complete(
        &mut self,
        clear_state: bool,
        catchup: bool,
    ) -> Option<ResumeOutcome> {
        let outcome = if clear_state {
            ResumeOutcome::Reset
        } else if catchup {
            ResumeOutcome::CaughtUp
        } else {
            return None;
        };
        if self.deciding && !self.run_changed {
            // The same run no longer holds the point asked for (or never did: a point from a
            // corrupt save, ahead of the backend). Kept, it would be asked for again after the
            // next cut, where the backend may by then hold it and replay only what follows,
            // skipping everything between (§7.2).
            self.fresh_start(self.conn_min_event);
        }
        self.decide(outcome)
    }

    /// `init_complete` arrived: with no reset seen, the replay was complete (§7.5). After a
    /// new run whose catchup never came (gomuks sends nothing else when building it fails),
    /// nothing was replayed: a reset.
    pub(crate) fn init_complete(&mut self) -> Option<ResumeOutcome> {
        self.settle();
        if self.run_changed || self.replay_broken {
            return self.decide(ResumeOutcome::Reset);
        }
        self.decide(ResumeOutcome::Succeeded)
    }

    fn decide(&mut self, outcome: ResumeOutcome) -> Option<ResumeOutcome> {
        std::mem::take(&mut self.deciding).then_some(outcome)
    }

    /// The id the next ping acknowledges, or 0 (§6: ack only on change): the newest received.
    pub(crate) fn ack(&mut self) -> i64 {
        let last = self.shared.last_event.load(Ordering::Acquire);
        if last == 0 || last == self.last_sent_ack {
            return 0;
        }
        self.last_sent_ack = last;
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(run_id: &str, last: i64) -> (Tracker, Arc<SharedResume>) {
        let shared = Arc::new(SharedResume::new(
            &ResumeState {
                run_id: run_id.into(),
                last_received_event: last,
            },
            None,
        ));
        (Tracker::new(shared.clone()), shared)
    }

    #[test]
    fn spec7_2_resume_needs_run_id_and_an_event() {
        assert!(tracker("", -5).0.begin_attempt(false).is_none());
        assert!(tracker("r", 0).0.begin_attempt(false).is_none());
        let got = tracker("r", -5).0.begin_attempt(false).unwrap();
        assert_eq!((got.run_id.as_str(), got.last_received_event), ("r", -5));
    }

    /// The session reads `id` and the app takes it.
    fn read_and_take(t: &mut Tracker, shared: &SharedResume, id: i64) {
        let era = t.event(id, false);
        shared.took(era, id);
    }

    /// §7.2: gomuks reads the run id it is asked for as a decimal `int64`, so a persisted
    /// `0123` resumes its run `123`: that is no new run (no false RESET), and the backend's
    /// spelling is what is persisted from then on.
    #[test]
    fn spec7_2_run_ids_compare_as_the_backend_parses_them() {
        let (mut t, shared) = tracker("0123", -5);
        assert!(t.begin_attempt(false).is_some());
        t.connection_opened();
        assert_eq!(t.run_id("123", 1), None);
        assert_eq!(
            shared.get(),
            ResumeState {
                run_id: "123".into(),
                last_received_event: -5
            }
        );
        assert_eq!(t.run_id("124", 2), Some(ResumeOutcome::Reset));
        assert!(same_run("r", "r") && !same_run("", "0") && !same_run("r", "s"));
    }

    #[test]
    fn spec7_4_acks_only_on_change_and_not_the_resume_point_again() {
        let (mut t, _) = tracker("r", -5);
        t.begin_attempt(false);
        t.connection_opened();
        assert_eq!(
            t.ack(),
            0,
            "the server already holds -5 as the resume point"
        );
        t.event(-6, false);
        t.event(-7, false);
        assert_eq!(t.ack(), -7, "what was read, taken or not");
        assert_eq!(t.ack(), 0);
        assert_eq!(t.event(3, false), 0, "a positive id is no buffered event");
        assert_eq!(t.ack(), 0);
    }

    /// §7.2: two consumers each hold a batch (two polling threads); the one that hands over
    /// the newer first does not claim the older batch, and a new era drops the holds.
    #[test]
    fn spec7_2_the_point_stops_short_of_every_batch_still_held() {
        let (mut t, shared) = tracker("r", -5);
        t.begin_attempt(false);
        t.connection_opened();
        let mut era = 0;
        for id in (-11..=-6).rev() {
            era = t.event(id, false);
        }
        shared.hold(era, -6); // -6 and -7, one thread's
        shared.hold(era, -8); // -8 to -11, another's
        shared.settle(era, Some(-8), Some(-11));
        assert_eq!(shared.get().last_received_event, -5, "-6 is still held");
        // A hold of another era, or released twice, changes nothing.
        shared.settle(era.wrapping_add(1), Some(-6), None);
        shared.settle(era, Some(-8), None);
        assert_eq!(shared.get().last_received_event, -5);
        // Dropped without the app getting it (a panic): released, not counted itself, so the
        // newer batch handed over before counts.
        shared.settle(era, Some(-6), None);
        assert_eq!(shared.get().last_received_event, -11);
        shared.hold(era, -12);
        assert_eq!(shared.get().last_received_event, -11);
        t.begin_attempt(false);
        t.connection_opened();
        assert_eq!(t.run_id("other", 2), Some(ResumeOutcome::Reset));
        assert_eq!(
            shared.get().last_received_event,
            0,
            "a new run holds nothing back"
        );
    }

    #[test]
    fn spec7_2_the_app_persists_what_it_took_a_reconnect_asks_for_what_was_read() {
        let (mut t, shared) = tracker("r", -5);
        t.begin_attempt(false);
        t.connection_opened();
        read_and_take(&mut t, &shared, -6);
        // Read, still queued for the app.
        t.event(-7, false);
        t.event(-8, false);
        assert_eq!(shared.get().last_received_event, -6);
        let asked = t.begin_attempt(false).expect("resumable");
        assert_eq!(
            asked.last_received_event, -8,
            "the queue still holds -7 and -8"
        );
    }

    #[test]
    fn spec7_2_new_run_id_keeps_only_this_connections_events() {
        let (mut t, shared) = tracker("old", -50);
        t.begin_attempt(false);
        t.connection_opened();
        let old_era = t.event(-1, false);
        t.event(-2, false);
        assert_eq!(t.run_id("new", 7), Some(ResumeOutcome::Reset));
        assert_eq!(t.listener_id(), Some(7));
        assert_eq!(t.ack(), -2);
        // Events of the old era still queued move nothing when taken.
        shared.took(old_era, -2);
        assert_eq!(
            shared.get(),
            ResumeState {
                run_id: "new".into(),
                last_received_event: 0
            }
        );
        // The new run's fresh start counts once its state is complete.
        read_and_take(&mut t, &shared, -3);
        assert_eq!(shared.get().last_received_event, 0);
        assert!(
            !t.will_resume(),
            "a reconnect now would skip the rest of the state"
        );
        assert_eq!(t.init_complete(), None);
        read_and_take(&mut t, &shared, -4);
        assert_eq!(shared.get().last_received_event, -4);
        assert_eq!(t.begin_attempt(false).unwrap().last_received_event, -4);
        // The same run id again changes nothing.
        t.connection_opened();
        read_and_take(&mut t, &shared, -5);
        assert_eq!(t.run_id("new", 8), None);
        assert_eq!(shared.get().last_received_event, -5);
    }

    #[test]
    fn spec6_1_a_fresh_start_counts_and_resumes_only_once_its_state_is_complete() {
        let (mut t, shared) = tracker("", 0);
        assert!(t.begin_attempt(false).is_none());
        t.connection_opened();
        t.run_id("r", 1);
        // A live event between the state's payloads (§6.1).
        read_and_take(&mut t, &shared, -1);
        assert_eq!(shared.get().last_received_event, 0);
        assert!(!t.will_resume());
        assert!(
            t.begin_attempt(false).is_none(),
            "cut before init_complete: start afresh"
        );
        t.connection_opened();
        t.run_id("r", 2);
        read_and_take(&mut t, &shared, -2);
        t.init_complete();
        read_and_take(&mut t, &shared, -3);
        assert_eq!(shared.get().last_received_event, -3);
        assert!(t.will_resume());
        // A login's room list (id-0 sync_complete) is no more replayable than a fresh start's
        // state (§4.2).
        read_and_take(&mut t, &shared, -4);
        t.unreplayable_state();
        read_and_take(&mut t, &shared, -5);
        assert_eq!(shared.get().last_received_event, 0);
        assert!(!t.will_resume());
        t.init_complete();
        read_and_take(&mut t, &shared, -6);
        assert_eq!(shared.get().last_received_event, -6);
    }

    #[test]
    fn spec7_2_an_earlier_eras_event_taken_later_moves_nothing() {
        let (mut t, shared) = tracker("r", -5);
        t.begin_attempt(false);
        t.connection_opened();
        let old = t.event(-6, false);
        assert_eq!(old, FIRST_ERA, "a replayed event counts");
        assert_eq!(t.sync_complete(true, false), Some(ResumeOutcome::Reset));
        shared.took(old, -6);
        assert_eq!(shared.get().last_received_event, 0);
    }

    #[test]
    fn spec7_4_a_new_run_keeps_the_last_ack() {
        let (mut t, _) = tracker("old", -50);
        t.begin_attempt(false);
        t.connection_opened();
        t.event(-1, false);
        assert_eq!(t.ack(), -1);
        t.run_id("new", 2);
        assert_eq!(
            t.ack(),
            0,
            "-1 again would drop the new listener (§7.4 item 2)"
        );
    }

    #[test]
    fn spec7_2_a_live_event_where_the_replay_would_be_means_the_resume_failed() {
        let (mut t, shared) = tracker("r", -5);
        t.begin_attempt(false);
        t.connection_opened();
        assert_eq!(t.run_id("r", 1), None);
        read_and_take(&mut t, &shared, -6);
        read_and_take(&mut t, &shared, -7);
        assert_eq!(shared.get().last_received_event, -7, "the replay counts");
        // The backend no longer held -5: what comes is live, far past it.
        read_and_take(&mut t, &shared, -30);
        assert_eq!(shared.get().last_received_event, 0);
        assert!(!t.will_resume(), "a cut now starts afresh");
        // Failed, even when no sync_complete says so (a catchup that could not be built).
        assert_eq!(t.init_complete(), Some(ResumeOutcome::Reset));
        // The next ack is not the one already sent (§7.4 item 2).
        let (mut t, _) = tracker("r", -5);
        t.begin_attempt(false);
        t.connection_opened();
        t.event(-30, false);
        assert_eq!(t.ack(), -30);
        assert_eq!(t.sync_complete(true, false), Some(ResumeOutcome::Reset));
        assert_eq!(t.ack(), 0);
    }

    #[test]
    fn spec7_2_a_failed_resume_in_the_same_run_forgets_the_point_it_asked_for() {
        // A point ahead of the backend (a corrupt save): the backend starts afresh.
        let (mut t, shared) = tracker("r", -50);
        t.begin_attempt(false);
        t.connection_opened();
        let stale = t.event(-1, false);
        assert_eq!(t.run_id("r", 1), None);
        assert_eq!(t.sync_complete(true, false), Some(ResumeOutcome::Reset));
        shared.took(stale, -1);
        read_and_take(&mut t, &shared, -2);
        assert_eq!(
            shared.get().last_received_event,
            0,
            "not -50, nor inside the fresh state"
        );
        assert_eq!(t.ack(), -2);
        t.init_complete();
        read_and_take(&mut t, &shared, -3);
        assert_eq!(shared.get().last_received_event, -3);
        assert_eq!(t.begin_attempt(false).unwrap().last_received_event, -3);
        // A catchup forgets it too.
        let (mut t, shared) = tracker("r", -50);
        t.begin_attempt(true);
        t.connection_opened();
        assert_eq!(t.sync_complete(false, true), Some(ResumeOutcome::CaughtUp));
        assert_eq!(shared.get().last_received_event, 0);
        assert!(t.begin_attempt(false).is_none());
    }

    #[test]
    fn spec7_2_resume_outcome_is_decided_once_per_connection() {
        let (mut t, _) = tracker("r", -5);
        t.begin_attempt(false);
        assert!(t.deciding());
        assert_eq!(t.run_id("r", 1), None);
        assert_eq!(t.sync_complete(false, false), None);
        assert_eq!(t.init_complete(), Some(ResumeOutcome::Succeeded));
        assert_eq!(t.init_complete(), None, "decided once");

        let (mut t, _) = tracker("r", -5);
        t.begin_attempt(false);
        assert_eq!(t.sync_complete(true, false), Some(ResumeOutcome::Reset));
        assert_eq!(t.init_complete(), None);

        let (mut t, _) = tracker("r", -5);
        t.begin_attempt(false);
        assert_eq!(t.sync_complete(false, true), Some(ResumeOutcome::CaughtUp));
        assert_eq!(t.init_complete(), None);

        let (mut t, _) = tracker("old", -5);
        t.begin_attempt(false);
        assert_eq!(t.run_id("new", 1), Some(ResumeOutcome::Reset));

        // A new run after sending last_server_ts: its first sync says which (§6.1).
        let (mut t, _) = tracker("old", -5);
        t.begin_attempt(true);
        assert_eq!(t.run_id("new", 1), None);
        assert_eq!(t.sync_complete(false, true), Some(ResumeOutcome::CaughtUp));
        let (mut t, _) = tracker("old", -5);
        t.begin_attempt(true);
        assert_eq!(t.run_id("new", 1), None);
        assert_eq!(t.sync_complete(true, false), Some(ResumeOutcome::Reset));
        // ... and without any sync (the catchup failed), nothing was replayed.
        let (mut t, _) = tracker("old", -5);
        t.begin_attempt(true);
        assert_eq!(t.run_id("new", 1), None);
        assert_eq!(t.init_complete(), Some(ResumeOutcome::Reset));
        // The same run with last_server_ts still succeeds.
        let (mut t, _) = tracker("r", -5);
        t.begin_attempt(true);
        assert_eq!(t.run_id("r", 1), None);
        assert_eq!(t.init_complete(), Some(ResumeOutcome::Succeeded));

        // No resume asked: nothing to decide.
        let (mut t, _) = tracker("", 0);
        t.begin_attempt(false);
        assert!(!t.deciding());
        assert_eq!(t.init_complete(), None);
    }

    #[test]
    fn token_is_shared_with_readers() {
        let shared = SharedResume::new(&ResumeState::default(), Some(Secret::new("a")));
        shared.set_token(Secret::new("b"));
        assert_eq!(shared.token().unwrap().expose(), "b");
    }
}
