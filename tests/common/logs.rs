//! The log records of the process, for tests that check what a client logged.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tether::{LogLevel, LogRecord};

use super::WAIT;

/// Every record of the process at DEBUG and above, for the tests to filter by client id (the
/// sink is global).
pub fn records() -> &'static Mutex<Vec<LogRecord>> {
    static RECORDS: OnceLock<Mutex<Vec<LogRecord>>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        assert!(tether::set_log_sink(
            Some(Box::new(|r: &LogRecord| {
                records().lock().unwrap().push(r.clone());
            })),
            LogLevel::Debug,
        ));
        Mutex::new(Vec::new())
    })
}

/// Waits (bounded) until client `id` logged a record containing `text`; returns its records.
pub async fn wait_log(id: u64, text: &str) -> Vec<LogRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mine: Vec<LogRecord> = records()
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.client == id)
            .cloned()
            .collect();
        if mine.iter().any(|r| r.message.contains(text)) {
            return mine;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record with {text:?} for client {id}: {:#?}",
            mine.iter().map(|r| &r.message).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
