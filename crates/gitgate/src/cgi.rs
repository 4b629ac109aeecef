//! `git http-backend` as CGI: the request body streams into its stdin (with a size limit),
//! its stdout streams back as the response body. The child runs in its own process group;
//! whatever happens to the request — the client goes away, the deadline passes, the body is
//! too large — the whole group is killed and the child reaped.
//!
//! The response ends when http-backend's stdout ends, which is when every process holding it
//! has closed it — not only http-backend. A descendant that inherited it and lives on (a hook's
//! background job) would keep the client waiting until the deadline; so once http-backend has
//! exited, the rest of its group gets [`DRAIN_AFTER_EXIT`] to finish, is then killed, and if the
//! output is still open after another such wait (a descendant in a session of its own) the
//! response ends with what http-backend wrote.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, ReadBuf};
use tokio::process::{Child, ChildStdout};
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};

use crate::process::{DRAIN_AFTER_EXIT, ExitWatch, kill_group};
use crate::server::{GateBody, text_response};

/// Largest CGI header block accepted.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What the CGI child is given.
#[derive(Debug, Clone)]
pub(crate) struct CgiRequest {
    pub method: String,
    pub path_info: String,
    pub query: String,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
    pub content_encoding: Option<String>,
    pub git_protocol: Option<String>,
    pub remote_addr: String,
}

/// Fixed settings for every CGI run.
#[derive(Debug, Clone)]
pub(crate) struct CgiSettings {
    pub project_root: PathBuf,
    pub safe_directories: Vec<PathBuf>,
    pub remote_user: String,
    pub max_request_bytes: u64,
    pub timeout: Duration,
    pub home: PathBuf,
    /// The CGI program and its arguments (`git http-backend`).
    pub program: Vec<OsString>,
}

/// Owns the child until it has exited: dropping it kills the whole process group.
struct ChildGuard {
    child: Option<Child>,
    pgid: Option<u32>,
    tasks: Vec<AbortHandle>,
    /// Kills the group when the client goes away; stopped before the child is reaped.
    watcher: Option<AbortHandle>,
    /// Kills what is left of the group once the child has exited (see the module docs);
    /// stopped before the child is reaped.
    stragglers: Option<AbortHandle>,
    /// The child's exit, seen without reaping it (absent without `pidfd_open`).
    exit: Option<std::sync::Arc<ExitWatch>>,
}

impl ChildGuard {
    /// Hands the child over for reaping (the caller waits for it); the group is no longer
    /// killed on drop.
    fn release(&mut self) -> Option<Child> {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(s) = self.stragglers.take() {
            s.abort();
        }
        self.pgid = None;
        self.child.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(s) = self.stragglers.take() {
            s.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
        if let Some(pgid) = self.pgid {
            kill_group(pgid);
        }
        // `kill_on_drop` plus tokio's orphan reaping take care of the direct child.
        self.child.take();
    }
}

#[derive(Debug)]
enum BodyError {
    TooLarge,
    Client(String),
    Child(io::Error),
}

fn cgi_env(settings: &CgiSettings, req: &CgiRequest) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        env.push(("PATH".into(), path));
    }
    env.push(("HOME".into(), settings.home.clone().into()));
    env.extend(crate::process::hermetic_git_env());
    env.push((
        "GIT_CONFIG_COUNT".into(),
        settings.safe_directories.len().to_string().into(),
    ));
    for (i, dir) in settings.safe_directories.iter().enumerate() {
        env.push((
            format!("GIT_CONFIG_KEY_{i}").into(),
            "safe.directory".into(),
        ));
        env.push((format!("GIT_CONFIG_VALUE_{i}").into(), dir.clone().into()));
    }
    env.push((
        "GIT_PROJECT_ROOT".into(),
        settings.project_root.clone().into(),
    ));
    env.push(("GIT_HTTP_EXPORT_ALL".into(), "1".into()));
    env.push(("GATEWAY_INTERFACE".into(), "CGI/1.1".into()));
    env.push(("SERVER_PROTOCOL".into(), "HTTP/1.1".into()));
    env.push(("REQUEST_METHOD".into(), req.method.clone().into()));
    env.push(("PATH_INFO".into(), req.path_info.clone().into()));
    env.push(("QUERY_STRING".into(), req.query.clone().into()));
    env.push(("REMOTE_USER".into(), settings.remote_user.clone().into()));
    env.push(("REMOTE_ADDR".into(), req.remote_addr.clone().into()));
    if let Some(v) = &req.content_type {
        env.push(("CONTENT_TYPE".into(), v.into()));
    }
    if let Some(v) = &req.content_length {
        env.push(("CONTENT_LENGTH".into(), v.into()));
    }
    if let Some(v) = &req.content_encoding {
        env.push(("HTTP_CONTENT_ENCODING".into(), v.into()));
    }
    if let Some(v) = &req.git_protocol {
        env.push(("GIT_PROTOCOL".into(), v.into()));
    }
    env
}

/// Runs `git http-backend` for one request. `hold` is kept alive until the child has
/// exited (the repository lock for pushes).
pub(crate) async fn run(
    settings: &CgiSettings,
    req: CgiRequest,
    body: Incoming,
    hold: Option<Box<dyn Send + Sync>>,
    probe: &crate::server::Probe,
) -> Response<GateBody> {
    let deadline = Instant::now() + settings.timeout;
    let Some((program, args)) = settings.program.split_first() else {
        return text_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "git gate: no CGI program\n",
        );
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(cgi_env(settings, &req))
        .current_dir(&settings.project_root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot start git http-backend");
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the git gate cannot start git http-backend; is git installed?\n",
            );
        }
    };
    let pgid = child.id();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "git gate: no pipes\n");
    };
    let exit = pgid
        .and_then(|p| ExitWatch::new(p).ok())
        .map(std::sync::Arc::new);
    let mut guard = ChildGuard {
        child: Some(child),
        pgid,
        tasks: Vec::new(),
        watcher: None,
        stragglers: None,
        exit: exit.clone(),
    };

    // http-backend exited → its leftovers get a moment, then are killed; `given_up` turns
    // true when even that did not close the output
    let (give_up_tx, give_up_rx) = tokio::sync::watch::channel(false);
    if let (Some(exit), Some(p)) = (exit, pgid) {
        let path_info = req.path_info.clone();
        let stragglers = tokio::spawn(async move {
            exit.exited().await;
            tokio::time::sleep(DRAIN_AFTER_EXIT).await;
            // The child is not reaped before this task is stopped (`release`): the group id
            // is still its own.
            kill_group(p);
            tokio::time::sleep(DRAIN_AFTER_EXIT).await;
            tracing::warn!(path = %path_info, "git http-backend exited but its output stayed open; ending the response");
            let _ = give_up_tx.send(true);
        });
        guard.stragglers = Some(stragglers.abort_handle());
    }
    let given_up = move || {
        let mut rx = give_up_rx.clone();
        async move {
            if rx.wait_for(|v| *v).await.is_err() {
                // Stopped before giving up: never.
                std::future::pending::<()>().await;
            }
        }
    };

    // client gone → kill the group, whatever phase the request is in
    let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let (Ok(probe), Some(p)) = (probe.try_clone(), pgid) {
        let path_info = req.path_info.clone();
        let gone = gone.clone();
        let watcher = tokio::spawn(async move {
            crate::server::client_gone(&probe).await;
            tracing::info!(path = %path_info, "client went away; stopping git");
            gone.store(true, std::sync::atomic::Ordering::SeqCst);
            kill_group(p);
        });
        guard.watcher = Some(watcher.abort_handle());
    }

    // stderr → log (bounded), so http-backend's complaints are not lost
    let path_info = req.path_info.clone();
    let log_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut n = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            n += 1;
            if n <= 20 {
                tracing::warn!(path = %path_info, "git http-backend: {line}");
            }
        }
    });
    guard.tasks.push(log_task.abort_handle());

    // request body → stdin, with the size limit
    let limit = settings.max_request_bytes;
    let kill_pgid = pgid;
    let feed = tokio::spawn(async move {
        let result = feed_stdin(body, stdin, limit).await;
        if let Err(e) = &result {
            match e {
                BodyError::TooLarge => tracing::warn!("request body over the size limit"),
                BodyError::Client(m) => tracing::info!("client request body ended early: {m}"),
                BodyError::Child(e) => tracing::debug!("git http-backend stopped reading: {e}"),
            }
            if let Some(p) = kill_pgid {
                kill_group(p);
            }
        }
        result
    });
    guard.tasks.push(feed.abort_handle());

    let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
    let headers = tokio::time::timeout_at(deadline, async {
        tokio::select! {
            h = read_headers(&mut stdout) => h,
            () = given_up() => Err("git http-backend exited without ending its output".into()),
        }
    })
    .await;
    let headers = match headers {
        Ok(Ok(h)) => h,
        Ok(Err(problem)) => {
            // The child died or wrote garbage; see whether the request was the reason.
            if gone.load(std::sync::atomic::Ordering::SeqCst) {
                return text_response(StatusCode::BAD_REQUEST, "client went away\n");
            }
            if feed.is_finished() {
                match feed.await {
                    Ok(Err(BodyError::TooLarge)) => {
                        return text_response(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &format!(
                                "the git gate accepts requests of at most {limit} bytes; push fewer or smaller commits at a time\n"
                            ),
                        );
                    }
                    Ok(Err(BodyError::Client(_))) => {
                        return text_response(
                            StatusCode::BAD_REQUEST,
                            "the request body ended early; try again\n",
                        );
                    }
                    _ => {}
                }
            }
            tracing::error!(path = %req.path_info, problem = %problem, "malformed CGI output from git http-backend");
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the git gate got a malformed response from git http-backend; see the gate's log\n",
            );
        }
        Err(_) => {
            tracing::warn!(path = %req.path_info, "git http-backend timed out before responding");
            return text_response(
                StatusCode::GATEWAY_TIMEOUT,
                "the git gate timed out waiting for git; try again\n",
            );
        }
    };

    let mut response = Response::new(GateBody::Cgi(Box::new(CgiBody {
        stdout,
        guard,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
        given_up: Box::pin(given_up()),
        hold,
        done: false,
    })));
    *response.status_mut() = headers.status;
    for (name, value) in headers.headers {
        response.headers_mut().append(name, value);
    }
    response
}

async fn feed_stdin(
    mut body: Incoming,
    mut stdin: tokio::process::ChildStdin,
    limit: u64,
) -> Result<u64, BodyError> {
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Client(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > limit {
                return Err(BodyError::TooLarge);
            }
            stdin.write_all(&data).await.map_err(BodyError::Child)?;
        }
    }
    stdin.shutdown().await.map_err(BodyError::Child)?;
    Ok(total)
}

/// Parsed CGI response headers.
#[derive(Debug)]
pub(crate) struct CgiHeaders {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

async fn read_headers<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<CgiHeaders, String> {
    let mut block = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| format!("reading CGI headers: {e}"))?;
        if n == 0 {
            return Err("CGI output ended before the end of the headers".into());
        }
        if block.len() + line.len() > MAX_HEADER_BYTES {
            return Err("CGI headers too large".into());
        }
        let trimmed: &[u8] = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(&line);
        if trimmed.is_empty() {
            break;
        }
        block.push(trimmed.to_vec());
    }
    parse_headers(&block)
}

/// Parses CGI header lines (`Status:` becomes the HTTP status).
pub(crate) fn parse_headers(lines: &[Vec<u8>]) -> Result<CgiHeaders, String> {
    let mut status = StatusCode::OK;
    let mut headers = Vec::new();
    for line in lines {
        let text = std::str::from_utf8(line).map_err(|_| "non-UTF-8 CGI header".to_string())?;
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| format!("CGI header line without a colon: {:?}", truncate(text)))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| format!("invalid CGI Status {:?}", truncate(value)))?;
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid CGI header name {:?}", truncate(name)))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid CGI header value for {name}"))?;
        headers.push((name, value));
    }
    Ok(CgiHeaders { status, headers })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The response body: http-backend's stdout after the headers.
pub(crate) struct CgiBody {
    stdout: BufReader<ChildStdout>,
    guard: ChildGuard,
    deadline: Pin<Box<Sleep>>,
    /// Ready once http-backend has exited and its output still has not ended.
    given_up: Pin<Box<dyn Future<Output = ()> + Send>>,
    hold: Option<Box<dyn Send + Sync>>,
    done: bool,
}

impl CgiBody {
    /// Output is complete: wait for the child in the background (bounded), keeping the
    /// repository lock until it has exited.
    fn finish(&mut self) {
        self.done = true;
        let pgid = self.guard.pgid;
        let exit = self.guard.exit.clone();
        let child = self.guard.release();
        let hold = self.hold.take();
        if let Some(mut child) = child {
            tokio::spawn(async move {
                let status = match exit {
                    // Exited or not, nothing of its group may outlive it: the group is
                    // killed while the child is still unreaped, then it is reaped.
                    Some(exit) => {
                        let _ = tokio::time::timeout(Duration::from_secs(30), exit.exited()).await;
                        if let Some(p) = pgid {
                            kill_group(p);
                        }
                        child.wait().await
                    }
                    None => match tokio::time::timeout(Duration::from_secs(30), child.wait()).await
                    {
                        Ok(status) => status,
                        Err(_) => {
                            if let Some(p) = pgid {
                                kill_group(p);
                            }
                            child.wait().await
                        }
                    },
                };
                if let Ok(status) = status
                    && !status.success()
                {
                    tracing::warn!(%status, "git http-backend exited with an error");
                }
                drop(hold);
            });
        }
    }
}

impl Body for CgiBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.done = true;
            tracing::warn!("git http-backend response exceeded the request deadline");
            // Dropping the guard with the body kills the group.
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "git gate request deadline exceeded",
            ))));
        }
        let mut buf = vec![0u8; 64 * 1024];
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut self.stdout).poll_read(cx, &mut rb) {
            Poll::Pending => {
                if self.given_up.as_mut().poll(cx).is_ready() {
                    // Everything http-backend wrote has been read: end the response.
                    self.finish();
                    return Poll::Ready(None);
                }
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    self.finish();
                    Poll::Ready(None)
                } else {
                    buf.truncate(n);
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    #[test]
    fn status_header_becomes_http_status() {
        let h = parse_headers(&[
            b"Status: 404 Not Found".to_vec(),
            b"Content-Type: text/plain".to_vec(),
        ])
        .unwrap();
        assert_eq!(h.status, StatusCode::NOT_FOUND);
        assert_eq!(h.headers.len(), 1);
    }

    #[test]
    fn malformed_headers_are_errors() {
        assert_eq!(
            parse_headers(&[b"garbage".to_vec()]).unwrap_err(),
            "CGI header line without a colon: \"garbage\""
        );
        assert_eq!(
            parse_headers(&[b"Status: abc".to_vec()]).unwrap_err(),
            "invalid CGI Status \"abc\""
        );
    }

    #[tokio::test]
    async fn headers_must_end_with_a_blank_line() {
        let mut r = tokio::io::BufReader::new(&b"Content-Type: x\r\n"[..]);
        assert_eq!(
            read_headers(&mut r).await.unwrap_err(),
            "CGI output ended before the end of the headers"
        );
        let mut r = tokio::io::BufReader::new(&b"Content-Type: x\r\n\r\nbody"[..]);
        assert_eq!(read_headers(&mut r).await.unwrap().headers.len(), 1);
    }
}
