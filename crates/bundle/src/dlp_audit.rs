//! Every outbound DLP hit of egress becomes a line of the bottle's audit chain (the chain
//! `bot-bottle audit verify` checks), beside its request-log line: a hit is something the
//! operator may have to answer for later, and the request log is rotated away.
//!
//! Egress calls the sink while it judges a request, so the sink only queues the hit; one
//! task writes the lines in order (each append locks, extends the chain and syncs, off the
//! runtime's threads). A queue that is full (hits arriving faster than lines are synced)
//! drops the hit and the next line written says how many were dropped, so the chain never
//! silently misses them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many hits may wait to be written.
const QUEUE: usize = 1024;

/// What the writer task takes, in order.
enum Item {
    Hit(egress::DlpHit),
    /// Answered once every hit queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Waits until the hits queued so far are lines of the audit chain (the bundle's end:
/// the operator's last round must find them).
#[derive(Clone)]
pub(crate) struct Flush(tokio::sync::mpsc::Sender<Item>);

impl Flush {
    /// Returns once every hit queued before the call is written (or could not be: the
    /// error is logged as for any line).
    pub(crate) async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.0.send(Item::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// A sink for egress's DLP hits that writes each as a `dlp-hit` line of `identity`'s
/// egress audit chain under `home`, and its [`Flush`]. Must be called inside the bundle's
/// runtime.
pub(crate) fn sink(home: proposals::Home, identity: String) -> (egress::DlpHitSink, Flush) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let lost = dropped.clone();
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let hit = match item {
                Item::Hit(hit) => hit,
                Item::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let mut entry = proposals::dlp::Hit {
                time: hit.time,
                method: hit.method,
                host: hit.host,
                path: hit.path,
                rule: hit.rule,
                place: hit.place,
                action: hit.action.to_owned(),
            }
            .audit_entry(&identity);
            let n = lost.swap(0, Ordering::Relaxed);
            if n > 0 {
                entry.notes = Some(format!(
                    "{n} earlier dlp hits were not written: they came faster than the audit log is synced (each is in the request log)"
                ));
            }
            let home = home.clone();
            let written =
                tokio::task::spawn_blocking(move || proposals::audit::append(&home, entry)).await;
            match written {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot write a dlp hit to the audit log")
                }
                Err(e) => tracing::error!(error = %e, "cannot write a dlp hit to the audit log"),
            }
        }
    });
    let flush = Flush(tx.clone());
    let sink: egress::DlpHitSink = Arc::new(move |hit| {
        if tx.try_send(Item::Hit(hit)).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
    (sink, flush)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn hit(n: usize) -> egress::DlpHit {
        egress::DlpHit {
            time: "2026-12-06T09:00:00Z".into(),
            method: "POST".into(),
            host: "api.example.com".into(),
            path: Some(format!("/v1/{n}")),
            rule: "credential".into(),
            place: "body".into(),
            action: "blocked",
        }
    }

    /// The hits of the agent's last requests, queued as the bundle stops, are lines of the
    /// chain once the flush returns: the operator's last round finds them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_flush_every_hit_queued_before_it_is_in_the_audit_chain() {
        let dir = tempfile::tempdir().unwrap();
        let home = proposals::Home::new(dir.path());
        let (sink, flush) = sink(home.clone(), "dev-1a2b3".into());
        for n in 0..20 {
            sink(hit(n));
        }
        flush.flush().await;
        let lines = proposals::audit::read_file(&home.audit_file("egress", "dev-1a2b3")).unwrap();
        assert_eq!(lines.len(), 20);
        assert!(
            lines
                .iter()
                .all(|l| l.stage.as_deref() == Some(proposals::dlp::Hit::STAGE))
        );
        assert_eq!(proposals::audit::verify(&home).unwrap(), (vec![], 1));
    }
}
