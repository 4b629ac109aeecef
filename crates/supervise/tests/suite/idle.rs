//! An idle bottle costs nothing: the engine wakes for changes in its queue, never for
//! reads of it (its own passes, the agent's long poll, the dashboard's reloads). Counted
//! through the engine's wake-up counter, not timed.

use std::sync::Arc;
use std::time::Duration;

use pretty_assertions::assert_eq;
use supervise::queue::{self, NewProposal};
use supervise::{Engine, Home, Queue, WaitResult};
use tokio_util::sync::CancellationToken;

use super::common::{ROUTES, approve, recording};

fn proposal(host: &str) -> NewProposal {
    NewProposal {
        tool: supervise::Tool::EgressAllow,
        // The live routes plus one host: the effect the operator approves is the effect
        // applied (the engine refuses an approval whose effect changed meanwhile).
        proposed_file: format!("{ROUTES}  - host: {host}\n"),
        justification: "need it".into(),
        current_file: Some(ROUTES.into()),
        args: None,
    }
}

/// A couple of seconds of an idle bottle, with the operator's side reading every queue
/// as the dashboard does on each reload.
async fn idle_while_reading(home: &Home) {
    for _ in 0..20 {
        queue::pending_all(home, None).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reads_of_an_idle_queue_never_wake_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let q = Queue::new(home.clone(), "dev-00001").unwrap();
    // Two proposals waiting for the operator, one of them long-polled by the agent.
    let (a, _) = q.submit(proposal("a.example")).unwrap();
    let (b, _) = q.submit(proposal("b.example")).unwrap();
    let engine = Engine::new(q.clone(), Arc::new(recording()));
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.clone().run(stop.clone()));
    let waiter = {
        let engine = engine.clone();
        let id = a.id.clone();
        tokio::spawn(async move { engine.wait(&id, Duration::from_secs(120)).await })
    };

    idle_while_reading(&home).await;
    assert_eq!(
        engine.file_wakeups(),
        0,
        "nothing changed in the queue, yet file events woke the engine"
    );

    // A change still wakes it, through a file event (not the slow fallback rescan).
    approve(&home, &b.id);
    let mut handled = None;
    for _ in 0..500 {
        handled = q.outcome(&b.id).unwrap();
        if handled.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let handled = handled.unwrap_or_else(|| {
        panic!(
            "the approval of {} was not handled: status {:?}",
            b.id,
            q.status(&b.id).unwrap()
        )
    });
    assert_eq!(handled.status, supervise::Decision::Approved);
    let woken = engine.file_wakeups();
    assert!(woken >= 1, "the response did not wake the engine");

    // Idle again: the few events of handling the response, then nothing more.
    idle_while_reading(&home).await;
    let after = engine.file_wakeups();
    assert!(
        after <= 10,
        "handling one response and idling woke the engine {after} times"
    );
    assert!(!waiter.is_finished(), "the agent's wait for {} ended", a.id);
    stop.cancel();
    run.await.unwrap();
    waiter.abort();
    assert!(matches!(
        engine.wait(&a.id, Duration::ZERO).await.unwrap(),
        WaitResult::Pending(None)
    ));
}
