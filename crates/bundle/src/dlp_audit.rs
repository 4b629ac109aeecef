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

/// A sink for egress's DLP hits that writes each as a `dlp-hit` line of `identity`'s
/// egress audit chain under `home`. Must be called inside the bundle's runtime.
pub(crate) fn sink(home: proposals::Home, identity: String) -> egress::DlpHitSink {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<egress::DlpHit>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let lost = dropped.clone();
    tokio::spawn(async move {
        while let Some(hit) = rx.recv().await {
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
    Arc::new(move |hit| {
        if tx.try_send(hit).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    })
}
