//! The operator port: how the operator's machine reaches the queue and the audit log of a
//! bundle whose files it cannot share (a pod on a cluster, reached through the API server's
//! port-forward).
//!
//! On a laptop the dashboard reads `queue/<identity>/` and `audit/` where supervise writes
//! them. In a pod they are files of the pod. The launcher's relay connects to this port and,
//! once a second or so, exchanges one [`SyncRequest`] for one [`SyncReply`]: the operator's
//! responses go in (written into the bundle's queue, where supervise applies them as it
//! applies any response), the pending proposals, the outcomes of handled ones and the new
//! audit lines come out.
//!
//! What keeps the port the operator's:
//! * it listens on the pod's loopback on a port that is not one of the sidecar ports, so the
//!   pod's packet filter refuses it to the agent's uid (only root in the pod's network
//!   namespace, which is how the kubelet's port-forward connects, and the bundle's own uid
//!   reach it);
//! * the first line of every connection is the bottle's operator token (a Secret key, in
//!   the bundle's environment, never in the pod spec), compared in constant time; anything
//!   else closes the connection with nothing read or written in the queue — fail closed;
//! * every line is bounded ([`MAX_LINE`]) and the hello must come within [`HELLO_TIMEOUT`].
//!
//! The protocol is JSON lines, one request and one reply per line, in both directions.
//!
//! # The end of a bottle
//!
//! The lines the sidecars write in their last moments (a DLP hit of the agent's last
//! request, an apply) must still reach the operator, so the port outlives them. The bundle
//! stops its sidecars when it gets SIGTERM (the kubelet's, once the agent has ended) or
//! when the launcher, having seen the agent end, sends a request with
//! [`SyncRequest::finish`]: the sidecars stop, what they queued is written out, and from
//! then every reply says [`SyncReply::ended`]. A finishing request answered with no new
//! audit line means the operator's side has everything: the bundle then exits, and
//! otherwise waits for that at most [`DRAIN_WAIT`] (a pod's grace period, which the
//! launcher derives from [`crate::SHUTDOWN_BOUND`], outlasts the whole shutdown).

use std::collections::BTreeMap;
use std::time::Duration;

use proposals::audit::{self, AuditEntry};
use proposals::proposal::ApplyFailure;
use proposals::{Home, Outcome, Proposal, Queue, Response, Status};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// The variable the bundle reads the operator token from.
pub const TOKEN_ENV: &str = "BOT_BOTTLE_OPERATOR_TOKEN";
/// The longest line either side sends (a proposal carries a whole routes file).
pub const MAX_LINE: u64 = 8 * 1024 * 1024;
/// How long a connection may take to present its token.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The most audit lines of one component in one reply (the rest come in the next).
pub const MAX_AUDIT_LINES: usize = 256;
/// How long a finishing request waits for the sidecars to stop and write out their lines
/// before it is answered anyway.
pub const FINISH_WAIT: Duration = Duration::from_secs(20);
/// How long an ended bundle keeps the port open for the operator's last round.
pub const DRAIN_WAIT: Duration = Duration::from_secs(15);

/// The first line of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The bottle's operator token.
    pub token: String,
}

/// The answer to a [`Hello`] (and to anything that cannot be answered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// The bottle the port belongs to, when the token was right.
    #[serde(default)]
    pub identity: Option<String>,
    /// Why the connection is refused.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the operator's side sends each round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The operator's responses, to be written into the bundle's queue (each once: a
    /// proposal answered already keeps its first response).
    #[serde(default)]
    pub responses: Vec<Response>,
    /// Proposals the operator's side holds as pending: their outcomes come back once
    /// handled.
    #[serde(default)]
    pub watching: Vec<String>,
    /// Per component (`egress`, `gitleaks`), how many audit lines the operator's side has
    /// copied already: the reply carries the lines after those.
    #[serde(default)]
    pub audit_seen: BTreeMap<String, u64>,
    /// The agent has ended (the launcher saw it): stop the sidecars, write out what they
    /// queued, then answer. Sent only by the launcher that started the bottle.
    #[serde(default)]
    pub finish: bool,
}

/// A pending proposal of the bundle's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// The proposal as supervise wrote it.
    pub proposal: Proposal,
    /// Where it stands in the bundle (`pending`, `answered`, `apply-failed`).
    pub status: Status,
    /// The last failed apply of it.
    #[serde(default)]
    pub failure: Option<ApplyFailure>,
}

/// What the bundle answers each round.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncReply {
    /// Every pending proposal, by arrival.
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// Outcomes of the watched proposals that were handled.
    #[serde(default)]
    pub outcomes: Vec<Outcome>,
    /// New audit lines by component, in order.
    #[serde(default)]
    pub audit: BTreeMap<String, Vec<AuditEntry>>,
    /// Responses that were not written, with why (`<id>: <reason>`).
    #[serde(default)]
    pub refused: Vec<String>,
    /// The sidecars have stopped and every line they wrote is on disk: nothing new comes
    /// after the lines of this reply (and of the next ones, when one was capped).
    #[serde(default)]
    pub ended: bool,
}

/// How the port and the bundle agree on the end of the bottle (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Lifecycle {
    /// Cancelled to stop the sidecars: by a finishing request (the bundle's SIGTERM does
    /// the same without it).
    pub stop: CancellationToken,
    /// Cancelled by the bundle once its sidecars have stopped and their lines are on disk.
    pub ended: CancellationToken,
    /// Cancelled once a finishing request was answered with no new audit line: the
    /// operator's side has everything.
    pub drained: CancellationToken,
}

/// The operator port of one bottle.
#[derive(Clone)]
pub struct OperatorPort {
    home: Home,
    identity: String,
    token: String,
    lifecycle: Option<Lifecycle>,
}

impl std::fmt::Debug for OperatorPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorPort")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl OperatorPort {
    /// The port of bottle `identity` whose files are under `home`, opened by `token`
    /// (never empty: an empty token would open it to anyone).
    pub fn new(home: Home, identity: String, token: String) -> Option<OperatorPort> {
        (!token.is_empty()).then_some(OperatorPort {
            home,
            identity,
            token,
            lifecycle: None,
        })
    }

    /// The port of a bundle whose end it takes part in (without one, a finishing request
    /// is answered as any other, and never says `ended`).
    pub fn with_lifecycle(mut self, lifecycle: Lifecycle) -> OperatorPort {
        self.lifecycle = Some(lifecycle);
        self
    }

    fn token_matches(&self, offered: &str) -> bool {
        bool::from(offered.as_bytes().ct_eq(self.token.as_bytes()))
    }

    /// Serves one connection until it closes (or `stop`).
    pub async fn serve_connection<S>(&self, stream: S, stop: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (read, mut write) = tokio::io::split(stream);
        let mut read = BufReader::new(read);
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_line(&mut read)).await {
            Ok(Ok(Some(line))) => serde_json::from_slice::<Hello>(&line).ok(),
            _ => None,
        };
        let Some(hello) = hello.filter(|h| self.token_matches(&h.token)) else {
            tracing::warn!(identity = %self.identity, "operator port: a connection without the operator token was refused");
            let refused = Welcome {
                identity: None,
                error: Some("the operator token is wrong; the bundle answers only the launcher that started it".into()),
            };
            let _ = write_line(&mut write, &refused).await;
            let _ = write.shutdown().await;
            return;
        };
        drop(hello);
        let welcome = Welcome {
            identity: Some(self.identity.clone()),
            error: None,
        };
        if write_line(&mut write, &welcome).await.is_err() {
            return;
        }
        loop {
            let line = tokio::select! {
                () = stop.cancelled() => return,
                line = read_line(&mut read) => line,
            };
            let request = match line {
                Ok(Some(line)) => match serde_json::from_slice::<SyncRequest>(&line) {
                    Ok(request) => request,
                    Err(e) => {
                        let _ = write_line(
                            &mut write,
                            &Welcome {
                                identity: None,
                                error: Some(format!("not a sync request: {e}")),
                            },
                        )
                        .await;
                        return;
                    }
                },
                Ok(None) | Err(_) => return,
            };
            if request.finish
                && let Some(lifecycle) = &self.lifecycle
            {
                lifecycle.stop.cancel();
                if tokio::time::timeout(FINISH_WAIT, lifecycle.ended.cancelled())
                    .await
                    .is_err()
                {
                    tracing::warn!(identity = %self.identity, "operator port: the sidecars did not stop within {} s; answering with what is on disk", FINISH_WAIT.as_secs());
                }
            }
            // Read before the round: a reply saying `ended` holds every line written.
            let ended = self
                .lifecycle
                .as_ref()
                .is_some_and(|l| l.ended.is_cancelled());
            let finish = request.finish;
            let port = self.clone();
            let mut reply = tokio::task::spawn_blocking(move || port.sync(&request))
                .await
                .unwrap_or_else(|e| SyncReply {
                    refused: vec![format!("the bundle failed to answer: {e}")],
                    ..SyncReply::default()
                });
            reply.ended = ended;
            let caught_up = finish && ended && reply.audit.is_empty();
            if write_line(&mut write, &reply).await.is_err() {
                return;
            }
            if caught_up && let Some(lifecycle) = &self.lifecycle {
                lifecycle.drained.cancel();
            }
        }
    }

    /// One round: the responses written, the queue and the new audit lines read.
    pub fn sync(&self, request: &SyncRequest) -> SyncReply {
        let mut reply = SyncReply::default();
        let queue = match Queue::new(self.home.clone(), &self.identity) {
            Ok(queue) => queue,
            Err(e) => {
                reply.refused.push(e.to_string());
                return reply;
            }
        };
        for response in &request.responses {
            if let Err(e) = queue.respond(response) {
                reply.refused.push(format!("{}: {e}", response.id));
            }
        }
        match queue.pending() {
            Ok((entries, problems)) => {
                for p in problems {
                    tracing::warn!(path = %p.path.display(), reason = %p.reason, "operator port: skipping a queue file");
                }
                reply.pending = entries
                    .into_iter()
                    .map(|e| Pending {
                        proposal: e.proposal,
                        status: e.status,
                        failure: e.failure,
                    })
                    .collect();
            }
            Err(e) => reply.refused.push(format!("cannot read the queue: {e}")),
        }
        for id in &request.watching {
            if let Ok(Some(outcome)) = queue.outcome(id) {
                reply.outcomes.push(outcome);
            }
        }
        for component in audit::COMPONENTS {
            let path = self.home.audit_file(component, &self.identity);
            if !path.exists() {
                continue;
            }
            let seen = request.audit_seen.get(component).copied().unwrap_or(0);
            match audit::read_file(&path) {
                Ok(entries) => {
                    let new: Vec<AuditEntry> = entries
                        .into_iter()
                        .filter(|e| e.seq > seen)
                        .take(MAX_AUDIT_LINES)
                        .collect();
                    if !new.is_empty() {
                        reply.audit.insert(component.to_owned(), new);
                    }
                }
                Err(e) => reply
                    .refused
                    .push(format!("cannot read the audit log: {e}")),
            }
        }
        reply
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at the end of the stream.
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = (&mut *read)
        .take(MAX_LINE + 1)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line longer than {MAX_LINE} bytes, or cut short"),
        ));
    }
    line.pop();
    Ok(Some(line))
}

/// Writes `value` as one JSON line.
pub async fn write_line<W: AsyncWrite + Unpin, T: Serialize>(
    write: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await
}

/// Accepts connections on `listener` until `stop`, each served by `port`.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    port: OperatorPort,
    stop: CancellationToken,
) -> std::io::Result<()> {
    accept_loop(port, stop, || listener.accept()).await
}

/// Accepts connections on a Unix socket until `stop`, each served by `port`.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    port: OperatorPort,
    stop: CancellationToken,
) -> std::io::Result<()> {
    accept_loop(port, stop, || listener.accept()).await
}

/// The loop of [`serve_tcp`] and [`serve_unix`]: `accept` is the listener's own.
async fn accept_loop<S, A, F, Fut>(
    port: OperatorPort,
    stop: CancellationToken,
    mut accept: F,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<(S, A)>>,
{
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            accepted = accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: the port stays, the next accept may work.
                    tracing::warn!(error = %e, "operator port: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let port = port.clone();
        let stop = stop.clone();
        tokio::spawn(async move { port.serve_connection(stream, stop).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use proposals::{Decision, NewProposal, Tool};

    const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn world() -> (tempfile::TempDir, Home, OperatorPort, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let port = OperatorPort::new(home.clone(), "dev-1a2b3".into(), TOKEN.into()).unwrap();
        let queue = Queue::new(home.clone(), "dev-1a2b3").unwrap();
        (dir, home, port, queue)
    }

    fn propose(queue: &Queue) -> Proposal {
        queue
            .submit(NewProposal {
                tool: Tool::EgressAllow,
                proposed_file: "routes:\n  - host: api.example.com\n".into(),
                justification: "docs".into(),
                current_file: Some("routes: []\n".into()),
                args: None,
            })
            .unwrap()
            .0
    }

    fn response(id: &str) -> Response {
        Response {
            id: id.into(),
            status: Decision::Approved,
            final_file: None,
            notes: None,
            operator: "op".into(),
            responded_at: "2026-12-06T06:00:00Z".into(),
            audited: true,
            grant: proposals::Grant::Bottle,
        }
    }

    /// A client of the port over an in-memory stream: what it reads back, line by line.
    async fn session(port: &OperatorPort, lines: Vec<String>) -> Vec<String> {
        let (near, far) = tokio::io::duplex(1 << 20);
        let stop = CancellationToken::new();
        let server = {
            let port = port.clone();
            let stop = stop.clone();
            tokio::spawn(async move { port.serve_connection(far, stop).await })
        };
        let (read, mut write) = tokio::io::split(near);
        let mut read = BufReader::new(read);
        let mut got = Vec::new();
        for line in lines {
            // The server may have closed already (a refused token): writing then fails.
            if write
                .write_all(format!("{line}\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
            match read_line(&mut read).await.unwrap() {
                Some(answer) => got.push(String::from_utf8(answer).unwrap()),
                None => break,
            }
        }
        drop(write);
        server.await.unwrap();
        // Nothing more after the last answer: the connection is closed.
        assert_eq!(read_line(&mut read).await.unwrap(), None);
        got
    }

    /// The end of a bottle: a finishing request stops the sidecars and is answered once
    /// they wrote their last line, with that line and `ended`; the next one, with nothing
    /// new, tells the bundle the operator's side has everything. A plain round stops
    /// nothing.
    #[tokio::test]
    async fn a_finishing_request_gets_the_lines_written_as_the_sidecars_stop_then_the_port_is_drained()
     {
        let (_dir, home, port, queue) = world();
        let lifecycle = Lifecycle::default();
        let port = port.with_lifecycle(lifecycle.clone());
        let p = propose(&queue);
        // The bundle: once told to stop, its sidecars write a last line, then it has ended.
        let bundle = {
            let lifecycle = lifecycle.clone();
            let (queue, p) = (queue.clone(), p.clone());
            tokio::spawn(async move {
                lifecycle.stop.cancelled().await;
                proposals::queue::audit_decision(&queue, &p, &response(&p.id), "applied", None)
                    .unwrap();
                lifecycle.ended.cancel();
            })
        };
        let hello = serde_json::to_string(&Hello {
            token: TOKEN.into(),
        })
        .unwrap();
        let round = |finish: bool, seen: u64| {
            serde_json::to_string(&SyncRequest {
                audit_seen: BTreeMap::from([("egress".to_owned(), seen)]),
                finish,
                ..SyncRequest::default()
            })
            .unwrap()
        };
        let (near, far) = tokio::io::duplex(1 << 20);
        let server = {
            let port = port.clone();
            tokio::spawn(async move { port.serve_connection(far, CancellationToken::new()).await })
        };
        let (read, mut write) = tokio::io::split(near);
        let mut read = BufReader::new(read);
        let mut got = Vec::new();
        for line in [hello, round(false, 0), round(true, 0), round(true, 1)] {
            write
                .write_all(format!("{line}\n").as_bytes())
                .await
                .unwrap();
            let answer = read_line(&mut read).await.unwrap().unwrap();
            if got.len() == 1 {
                // A plain round stopped nothing.
                assert!(!lifecycle.stop.is_cancelled());
                assert!(!lifecycle.drained.is_cancelled());
            }
            got.push(answer);
        }
        drop((read, write));
        server.await.unwrap();
        bundle.await.unwrap();
        let replies: Vec<SyncReply> = got[1..]
            .iter()
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert!(!replies[0].ended);
        assert!(replies[0].audit.is_empty());
        // The line written as the sidecars stopped is in the finishing round's reply.
        assert!(replies[1].ended);
        let lines = &replies[1].audit["egress"];
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].stage.as_deref(), Some("applied"));
        assert_eq!(lines[0].proposal_id, p.id);
        // Then nothing new: drained.
        assert!(replies[2].ended);
        assert!(replies[2].audit.is_empty());
        assert!(lifecycle.drained.is_cancelled());
        drop(home);
    }

    #[tokio::test]
    async fn a_wrong_or_missing_token_is_refused_and_nothing_is_read_or_written() {
        let (_dir, _home, port, queue) = world();
        let p = propose(&queue);
        let sync = serde_json::to_string(&SyncRequest {
            responses: vec![response(&p.id)],
            ..SyncRequest::default()
        })
        .unwrap();
        for hello in [
            serde_json::to_string(&Hello {
                token: TOKEN.replace('0', "1"),
            })
            .unwrap(),
            serde_json::to_string(&Hello {
                token: TOKEN[..63].to_owned(),
            })
            .unwrap(),
            serde_json::to_string(&Hello {
                token: String::new(),
            })
            .unwrap(),
            // A client that skips the hello and sends its request at once.
            sync.clone(),
            "not json".to_owned(),
        ] {
            let got = session(&port, vec![hello.clone(), sync.clone()]).await;
            assert_eq!(got.len(), 1, "{hello}: {got:?}");
            let welcome: Welcome = serde_json::from_str(&got[0]).unwrap();
            assert_eq!(welcome.identity, None);
            assert!(
                welcome
                    .error
                    .unwrap()
                    .contains("the operator token is wrong"),
                "{hello}"
            );
            // The response was not delivered: the proposal is still unanswered.
            assert_eq!(queue.status(&p.id).unwrap(), Some(Status::Pending));
        }
        // An empty token never opens a port.
        assert!(OperatorPort::new(Home::new("/h"), "dev-1a2b3".into(), String::new()).is_none());
    }

    #[tokio::test]
    async fn with_the_token_a_round_delivers_responses_and_returns_the_queue_and_new_audit_lines() {
        let (_dir, home, port, queue) = world();
        let p = propose(&queue);
        let hello = serde_json::to_string(&Hello {
            token: TOKEN.into(),
        })
        .unwrap();
        // The first round: the proposal is pending, no audit line yet.
        let first = serde_json::to_string(&SyncRequest {
            watching: vec![p.id.clone()],
            ..SyncRequest::default()
        })
        .unwrap();
        // The second: the operator's response goes in; a line was audited meanwhile.
        let second = serde_json::to_string(&SyncRequest {
            responses: vec![response(&p.id), response("00000000000000ff")],
            watching: vec![p.id.clone()],
            audit_seen: BTreeMap::new(),
            finish: false,
        })
        .unwrap();
        let got = {
            let port = port.clone();
            let home = home.clone();
            let p = p.clone();
            let (near, far) = tokio::io::duplex(1 << 20);
            let server =
                tokio::spawn(
                    async move { port.serve_connection(far, CancellationToken::new()).await },
                );
            let (read, mut write) = tokio::io::split(near);
            let mut read = BufReader::new(read);
            let mut got = Vec::new();
            for (n, line) in [hello, first, second].into_iter().enumerate() {
                if n == 2 {
                    let r = response(&p.id);
                    proposals::queue::audit_decision(&queue, &p, &r, "applied", None).unwrap();
                }
                write
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .unwrap();
                got.push(read_line(&mut read).await.unwrap().unwrap());
            }
            // Both halves gone: the connection ends, and so does the server's side.
            drop((read, write));
            server.await.unwrap();
            drop(home);
            got
        };
        let welcome: Welcome = serde_json::from_slice(&got[0]).unwrap();
        assert_eq!(welcome.identity.as_deref(), Some("dev-1a2b3"));
        let first: SyncReply = serde_json::from_slice(&got[1]).unwrap();
        assert_eq!(
            first,
            SyncReply {
                pending: vec![Pending {
                    proposal: p.clone(),
                    status: Status::Pending,
                    failure: None,
                }],
                ..SyncReply::default()
            }
        );
        let second: SyncReply = serde_json::from_slice(&got[2]).unwrap();
        assert_eq!(second.pending[0].status, Status::Answered);
        assert_eq!(queue.response(&p.id).unwrap(), Some(response(&p.id)));
        assert_eq!(second.refused.len(), 1, "{:?}", second.refused);
        assert!(
            second.refused[0].starts_with("00000000000000ff: no pending proposal"),
            "{:?}",
            second.refused
        );
        let lines = &second.audit["egress"];
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].seq, 1);
        assert_eq!(lines[0].stage.as_deref(), Some("applied"));
        // Seen lines are not sent again; the outcome of a handled proposal is.
        let outcome = Outcome {
            id: p.id.clone(),
            status: Decision::Approved,
            final_file: None,
            notes: None,
            operator: "op".into(),
            decided_at: "2026-12-06T06:00:00Z".into(),
            applied_at: Some("2026-12-06T06:00:01Z".into()),
            grant: proposals::Grant::Bottle,
            expires: None,
        };
        queue.archive(&outcome).unwrap();
        let third = port.sync(&SyncRequest {
            watching: vec![p.id.clone()],
            audit_seen: BTreeMap::from([("egress".to_owned(), 1)]),
            ..SyncRequest::default()
        });
        assert_eq!(
            third,
            SyncReply {
                outcomes: vec![outcome],
                ..SyncReply::default()
            }
        );
    }
}
