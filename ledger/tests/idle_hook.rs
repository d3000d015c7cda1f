//! The idle hook (`set_idle_hook`): its own test binary, because the hook is process-wide and
//! the ledgers of other tests would call it too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use provledger_ledger::{set_idle_hook, Ledger, LedgerConfig, PreparedRecord, IDLE_AFTER};

static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Names of the threads that called the hook, in order.
static CALLERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn count() {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    if let Ok(mut callers) = CALLERS.lock() {
        callers.push(name);
    }
}

fn callers() -> Vec<String> {
    let mut callers = CALLERS.lock().map(|c| c.clone()).unwrap_or_default();
    callers.sort();
    callers
}

fn wait_for_calls(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while CALLS.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_pipeline_thread_calls_the_hook_once_per_quiet_spell() {
    assert!(set_idle_hook(count));
    assert!(!set_idle_hook(|| {}), "the first hook stays");

    let dir = tempfile::tempdir().expect("tempdir");
    let key = provledger_signer::SigningKey::generate("example.com/idle").expect("key");
    let ledger = Ledger::open(
        &LedgerConfig::new(dir.path()),
        key,
        &prometheus::Registry::new(),
    )
    .expect("open");
    let append = || {
        let input = serde_json::from_str(r#"{"kind":"input","actor":{"type":"agent","id":"a"}}"#)
            .expect("record");
        let record = PreparedRecord::prepare(input, "record").expect("prepare");
        ledger.append_blocking(vec![record]).expect("append");
    };

    // A ledger that has done nothing does not call it.
    std::thread::sleep(IDLE_AFTER * 2);
    assert_eq!(callers(), Vec::<String>::new());

    // After an append, the writer, the committer and the publisher each fall quiet and call
    // it, once each however long they stay idle.
    append();
    wait_for_calls(3);
    std::thread::sleep(IDLE_AFTER * 2);
    let stages = [
        "provledger-committer",
        "provledger-publisher",
        "provledger-writer",
    ];
    assert_eq!(callers(), stages);

    // The next burst, the next quiet spell.
    append();
    wait_for_calls(6);
    std::thread::sleep(IDLE_AFTER * 2);
    let twice: Vec<&str> = stages.iter().flat_map(|s| [*s, *s]).collect();
    assert_eq!(callers(), twice);
}
