//! Secret scanner: gitleaks-compatible TOML rules, a built-in rule set, and a fast engine
//! (keyword pre-filter, byte regexes without Unicode, parallel over files) that scans files,
//! stdin, the lines git commits add and git objects themselves. Binary content is scanned for
//! what it holds; UTF-16 text and base64 / hex / percent-encoded runs are decoded and scanned
//! too; compressed or encrypted content is reported as unreadable rather than passed (or, with
//! [`ScanOptions::max_archive_depth`], zip, tar, gzip, xz and zstd files are opened, bounded).
//!
//! Used by `bot-bottle scan` and by the git gate, which scans pushed ranges inside a receive
//! quarantine with [`Scanner::scan_push`] (what [`Scanner::scan_git`] and
//! [`Scanner::scan_git_objects`] find, each new blob read once) and inline allow markers
//! switched off. Rules tagged [`ASSIGNMENT_TAG`] have the value they match judged: prose,
//! references and placeholders assigned to a secret's name are not reported.
//!
//! ```no_run
//! # fn main() -> Result<(), scan::ScanError> {
//! let scanner = scan::Scanner::builtin()?.with_options(scan::ScanOptions {
//!     honor_inline_allow: false,
//!     ..scan::ScanOptions::default()
//! });
//! let findings = scanner.scan_git(&scan::GitScanRequest {
//!     repo: "/srv/repo.git".into(),
//!     rev_args: vec!["0123abc".into(), "--not".into(), "--all".into()],
//!     env: vec![],
//! })?;
//! # Ok(()) }
//! ```

mod archive;
mod baseline;
pub mod compat;
mod config;
mod decode;
mod engine;
mod error;
mod finding;
mod git;
mod locality;
mod objects;
mod own_files;
mod precheck;
mod report;
mod value;

/// What the fuzz targets (`fuzz/`) call: the parsers of git's output, without git. Not an
/// API.
#[doc(hidden)]
pub mod fuzzing {
    /// A tree entry: name, is a tree, is a blob, hex id.
    pub type TreeEntry = (Vec<u8>, bool, bool, String);
    /// A `git log -p` fragment: commit, path, added bytes, line numbers on the new side.
    pub type LogFragment = (String, String, Vec<u8>, Vec<u32>);

    /// Every fragment of `bytes` read as a `git log -p` stream (see `git/parse.rs`).
    pub fn git_log(bytes: &[u8], batch_bytes: usize) -> Vec<LogFragment> {
        crate::git::log_fragments(bytes, batch_bytes)
    }

    /// The entries of a tree object (see `objects.rs`).
    pub fn tree(data: &[u8], hash_len: usize) -> Option<Vec<TreeEntry>> {
        crate::objects::tree_entries(data, hash_len)
    }
}

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

pub use baseline::Baseline;
pub use config::{
    ASSIGNMENT_TAG, BUILTIN_RULES, ConfigError, GITLEAKS_DEFAULT_IDS, Required, Rule, RulePattern,
    RuleSet, gitleaks_default, gitleaks_ids_of,
};
pub use decode::DEFAULT_MAX_DECODE_DEPTH;
pub use engine::INLINE_ALLOW;
pub use error::ScanError;
pub use finding::{
    Finding, FindingJson, MatchSpan, REDACTED, Secret, fingerprint, shannon_entropy,
};
pub use git::{GitScanCounts, GitScanRequest};
pub use objects::{DEFAULT_MAX_BLOB_SIZE, ObjectScan, ObjectScanOptions, Unreadable};
pub use report::{
    Format, RuleInfo, render, render_gitleaks, render_json, render_sarif, render_text,
};

use engine::{Engine, Fragment};

/// Files larger than this are skipped by default (reported in verbose mode).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 10 * 1024 * 1024;

/// How a scan behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// Honour inline `gitleaks:allow` markers (the git gate turns this off, so an agent cannot
    /// wave its own secret through).
    pub honor_inline_allow: bool,
    /// Files larger than this many bytes are skipped (directory and file scans only).
    pub max_file_size: u64,
    /// Respect `.gitignore`, `.ignore` and git's exclude files when walking directories.
    pub respect_gitignore: bool,
    /// How long `git log` may run before it is stopped and the scan fails.
    pub git_timeout: Duration,
    /// How many times encoded text (base64, hex, percent, Unicode escapes) is decoded in
    /// place and scanned again (gitleaks' `--max-decode-depth`; 0: never).
    pub max_decode_depth: usize,
    /// How deep nested archives and compressed files are opened (gitleaks'
    /// `--max-archive-depth`; 0: never, they are listed as skipped). Files on disk, and in git
    /// scans ([`Scanner::scan_git`], [`Scanner::scan_staged`]) the archives the commits add or
    /// change; not in [`Scanner::scan_push`], where the gate refuses what it cannot read.
    pub max_archive_depth: usize,
    /// Whether, in a fragment of at least 64 KiB, the first decoding pass looks for encoded
    /// runs on another thread of the rayon pool while the rules run (the default; same
    /// findings either way). Outbound DLP turns it off: it judges each batch of a body on a
    /// thread of its own beside the proxy already, and a rayon worker waiting for work spins
    /// on the processor the proxy and the agent need (bench/README.md, "the upload's
    /// judging in line").
    pub decode_beside: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            honor_inline_allow: true,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            respect_gitignore: true,
            git_timeout: Duration::from_secs(600),
            max_decode_depth: DEFAULT_MAX_DECODE_DEPTH,
            max_archive_depth: 0,
            decode_beside: true,
        }
    }
}

/// A file that was not scanned, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: String,
    /// Why (`larger than N bytes`, `allowlisted path`, `gzip-compressed (cannot be scanned)`).
    pub reason: String,
}

/// The outcome of scanning paths.
#[derive(Debug, Clone, Default)]
pub struct PathScan {
    /// What was found (sorted by file, line, column, rule).
    pub findings: Vec<Finding>,
    /// Files not scanned.
    pub skipped: Vec<Skipped>,
    /// Files scanned.
    pub files: u64,
    /// Bytes scanned.
    pub bytes: u64,
}

/// A loaded rule set plus options and a baseline: the scanner.
#[derive(Debug)]
pub struct Scanner {
    engine: Engine,
    options: ScanOptions,
    baseline: Baseline,
    /// The scan's own input files, left out (see `own_files.rs`).
    own_files: Vec<own_files::OwnFile>,
}

impl Scanner {
    /// A scanner with the built-in rules and default options.
    pub fn builtin() -> Result<Self, ScanError> {
        Ok(Self::from_rules(RuleSet::builtin()?))
    }

    /// A scanner with the rules of a gitleaks-format TOML file (layered on the built-in set
    /// with `[extend] useDefault = true`).
    pub fn from_config_file(path: &Path) -> Result<Self, ScanError> {
        Ok(Self::from_rules(RuleSet::from_file(path)?))
    }

    /// A scanner for a compiled rule set, with default options.
    pub fn from_rules(rules: RuleSet) -> Self {
        let options = ScanOptions::default();
        Self {
            engine: Engine::new(rules, options.honor_inline_allow),
            options,
            baseline: Baseline::default(),
            own_files: Vec::new(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ScanOptions) -> Self {
        self.engine
            .set_honor_inline_allow(options.honor_inline_allow);
        self.engine.set_max_decode_depth(options.max_decode_depth);
        self.engine.set_decode_beside(options.decode_beside);
        self.options = options;
        self
    }

    /// Findings whose fingerprints are in the baseline are dropped.
    pub fn with_baseline(mut self, baseline: Baseline) -> Self {
        self.baseline = baseline;
        self
    }

    /// Leaves a file out of directory and git scans because it is one of the scan's own
    /// inputs (`why`: `the rule file in use`, `the baseline`), as gitleaks leaves out its
    /// config file and its baseline. In a git scan, findings in the file's path (relative to
    /// the repository's top, or as given) are dropped.
    pub fn with_own_file(mut self, path: &Path, why: &str) -> Self {
        self.own_files.push(own_files::OwnFile::new(path, why));
        self
    }

    /// The options in force.
    pub fn options(&self) -> &ScanOptions {
        &self.options
    }

    /// The rules (for reports).
    pub fn rules(&self) -> &[Rule] {
        self.engine.rules()
    }

    /// The rules as SARIF wants them.
    pub fn rule_infos(&self) -> Vec<RuleInfo> {
        self.rules()
            .iter()
            .map(|r| RuleInfo {
                id: r.id.clone(),
                description: r.description.clone(),
            })
            .collect()
    }

    /// Scans bytes that came from `name` (no size or binary checks).
    pub fn scan_bytes(&self, name: &str, data: &[u8]) -> Vec<Finding> {
        self.scan_bytes_in(name, None, data)
    }

    /// [`Scanner::scan_bytes`] for a file of a commit (an archive's entry in a git scan).
    fn scan_bytes_in(&self, name: &str, commit: Option<&str>, data: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        self.engine.scan(
            &Fragment {
                path: name,
                commit,
                data,
                line_map: None,
            },
            &mut out,
        );
        self.finish(out)
    }

    /// Scans everything a reader yields (stdin), reported as `name`.
    pub fn scan_reader(
        &self,
        name: &str,
        mut reader: impl Read,
    ) -> Result<Vec<Finding>, ScanError> {
        let mut data = Vec::new();
        reader
            .read_to_end(&mut data)
            .map_err(|source| ScanError::Read {
                path: PathBuf::from(name),
                source,
            })?;
        Ok(self.scan_bytes(name, &data))
    }

    /// Scans files and directories (walked in parallel; `.gitignore` respected unless switched
    /// off). `-` reads stdin. A path that cannot be read is an error; oversized files and
    /// compressed or encrypted ones are skipped and listed (binary files are scanned).
    pub fn scan_paths(&self, paths: &[PathBuf]) -> Result<PathScan, ScanError> {
        let mut total = PathScan::default();
        for path in paths {
            if path.as_os_str() == "-" {
                let findings = self.scan_reader("-", std::io::stdin().lock())?;
                total.files += 1;
                total.findings.extend(findings);
                continue;
            }
            let meta = std::fs::metadata(path).map_err(|source| ScanError::Read {
                path: path.clone(),
                source,
            })?;
            if meta.is_dir() {
                self.scan_dir(path, &mut total)?;
            } else {
                self.scan_file(path, &display_path(path), true)?
                    .add_to(&mut total);
            }
        }
        total.findings.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.rule_id).cmp(&(&b.file, b.line, b.column, &b.rule_id))
        });
        Ok(total)
    }

    /// Scans the lines added by the commits git lists for `req.rev_args`, in git's order
    /// (newest first). Merge commits contribute only lines new to all their parents.
    ///
    /// Each blob the range brings in is read and scanned once; only the commits that bring in a
    /// blob that may hold a finding are then shown as patches, so the findings (commits, files,
    /// lines, fingerprints) are those of `git log -p` over the range.
    pub fn scan_git(&self, req: &GitScanRequest) -> Result<Vec<Finding>, ScanError> {
        Ok(self.scan_git_counted(req)?.0)
    }

    /// Scans what is staged for the next commit in `repo` (the index against `HEAD`, as a
    /// pre-commit hook sees it): the lines the staged files add. Findings have no commit.
    pub fn scan_staged(&self, repo: &Path) -> Result<Vec<Finding>, ScanError> {
        let req = GitScanRequest {
            repo: repo.to_path_buf(),
            rev_args: vec!["--staged".into()],
            env: Vec::new(),
        };
        let findings = git::scan_staged(&self.engine, &req, self.options.git_timeout)?;
        let findings = self.with_git_archives(&req, true, self.finish(findings))?;
        Ok(self.without_own_files(&req, findings))
    }

    /// [`Scanner::scan_git`], with how much it read (`None` when the revision arguments
    /// change the diffs and the range was scanned from one `git log -p`). For tests and
    /// benchmarks.
    #[doc(hidden)]
    pub fn scan_git_counted(
        &self,
        req: &GitScanRequest,
    ) -> Result<(Vec<Finding>, Option<GitScanCounts>), ScanError> {
        let (findings, counts) = git::scan_git_once(&self.engine, req, self.options.git_timeout)?;
        let findings = self.with_git_archives(req, false, self.finish(findings))?;
        Ok((self.without_own_files(req, findings), counts))
    }

    /// Scans every object `git rev-list --objects <rev_args>` lists that `git log -p` does not
    /// show: commit and tag objects whole (messages, identities), tree entry names, and blobs
    /// no listed commit reaches; and reports the blobs that cannot be read (too large,
    /// compressed, encrypted). With [`Scanner::scan_git`] over the same arguments this covers
    /// everything a push adds.
    pub fn scan_git_objects(
        &self,
        req: &GitScanRequest,
        options: &ObjectScanOptions,
    ) -> Result<ObjectScan, ScanError> {
        let (mut scan, _) = objects::scan_objects(
            &self.engine,
            req,
            options,
            self.options.git_timeout,
            objects::Judge::Not,
            true,
        )?;
        scan.findings = self.finish(std::mem::take(&mut scan.findings));
        Ok(scan)
    }

    /// Everything a push adds, each new blob read once: [`Scanner::scan_git`] and
    /// [`Scanner::scan_git_objects`] over the same arguments, their findings in that order
    /// (the lines the commits add, then the other objects), with the blobs the object scan
    /// reads judged there, so that the history scan reads only the blobs that are not new
    /// (an old file brought back by a commit). A new blob of 2 KB or more whose path had a
    /// blob in the parent commit is judged only where it differs from that blob (with
    /// context; see `git/change.rs` for what counts as already judged): the findings are
    /// those of judging every blob whole ([`Scanner::scan_push_judging_whole`]).
    pub fn scan_push(
        &self,
        req: &GitScanRequest,
        options: &ObjectScanOptions,
    ) -> Result<ObjectScan, ScanError> {
        self.scan_push_reading(req, options, true, objects::Judge::ByChange)
    }

    /// [`Scanner::scan_push`] with every object read one by one, as before received packs
    /// were walked in delta-tree order. For tests and benchmarks: the results are those of
    /// [`Scanner::scan_push`].
    #[doc(hidden)]
    pub fn scan_push_one_by_one(
        &self,
        req: &GitScanRequest,
        options: &ObjectScanOptions,
    ) -> Result<ObjectScan, ScanError> {
        self.scan_push_reading(req, options, false, objects::Judge::ByChange)
    }

    /// [`Scanner::scan_push`] with every new blob judged whole, as before blobs were judged
    /// by what changed from the blob their path had in the parent commit. For tests and
    /// benchmarks: the findings are those of [`Scanner::scan_push`].
    #[doc(hidden)]
    pub fn scan_push_judging_whole(
        &self,
        req: &GitScanRequest,
        options: &ObjectScanOptions,
    ) -> Result<ObjectScan, ScanError> {
        self.scan_push_reading(req, options, true, objects::Judge::Whole)
    }

    fn scan_push_reading(
        &self,
        req: &GitScanRequest,
        options: &ObjectScanOptions,
        walk: bool,
        judge: objects::Judge,
    ) -> Result<ObjectScan, ScanError> {
        let timeout = self.options.git_timeout;
        let (lines, mut scan) = if git::reads_blobs_once(req) {
            // The history scan's listing of the commits (a git process) runs while the
            // objects are read.
            let (objects, listed) = std::thread::scope(|s| {
                let listing = s.spawn(|| git::list_git_range(req, timeout));
                let objects =
                    objects::scan_objects(&self.engine, req, options, timeout, judge, walk);
                (objects, listing.join())
            });
            let (scan, judged) = objects?;
            let listed = listed.map_err(|_| ScanError::Git {
                repo: req.repo.clone(),
                range: req.describe(),
                message: "listing the pushed commits stopped unexpectedly".into(),
            })??;
            let (lines, _) =
                git::scan_git_blobs(&self.engine, req, timeout, judged.as_ref(), Some(listed))?;
            (lines, scan)
        } else {
            let (lines, objects) = std::thread::scope(|s| {
                let objects = s.spawn(|| {
                    objects::scan_objects(
                        &self.engine,
                        req,
                        options,
                        timeout,
                        objects::Judge::Not,
                        walk,
                    )
                });
                let lines = git::scan_git(&self.engine, req, timeout, git::SPLIT_MIN_COMMITS);
                (lines, objects.join())
            });
            let objects = objects.map_err(|_| ScanError::Git {
                repo: req.repo.clone(),
                range: req.describe(),
                message: "the object scan stopped unexpectedly".into(),
            })?;
            (lines?, objects?.0)
        };
        let mut findings = self.finish(lines);
        findings.extend(self.finish(std::mem::take(&mut scan.findings)));
        scan.findings = findings;
        Ok(scan)
    }

    /// The range scanned from `git log -p` over all of it (the way before [`Scanner::scan_git`]
    /// read each blob once), with the number of commits above which the range is split between
    /// two `git log` processes (`usize::MAX`: never). For tests and benchmarks: the results
    /// are those of [`Scanner::scan_git`].
    #[doc(hidden)]
    pub fn scan_git_split(
        &self,
        req: &GitScanRequest,
        split_min: usize,
    ) -> Result<Vec<Finding>, ScanError> {
        let findings = git::scan_git(&self.engine, req, self.options.git_timeout, split_min)?;
        Ok(self.finish(findings))
    }

    fn finish(&self, mut findings: Vec<Finding>) -> Vec<Finding> {
        if !self.baseline.is_empty() {
            findings.retain(|f| !self.baseline.allows(f));
        }
        findings
    }

    /// With [`ScanOptions::max_archive_depth`] set, a git scan's findings plus those in the
    /// entries of the archives its commits (`staged`: the index) add or change, each entry
    /// reported in its commit as `path!entry`, as gitleaks does in git mode; the findings of
    /// an opened archive's own patch (compressed bytes read as text) give way to its entries'.
    /// At depth 0 archives are not opened, and, as gitleaks skips them, the findings of their
    /// patches (an uncompressed tar reads as text) are dropped too.
    fn with_git_archives(
        &self,
        req: &GitScanRequest,
        staged: bool,
        mut findings: Vec<Finding>,
    ) -> Result<Vec<Finding>, ScanError> {
        let git_err = |message: String| ScanError::Git {
            repo: req.repo.clone(),
            range: req.describe(),
            message,
        };
        if self.options.max_archive_depth == 0 {
            if findings.is_empty() {
                return Ok(findings);
            }
            // Only the blobs with findings are read.
            let changed: Vec<_> = git::changed_blobs(req, staged)
                .map_err(git_err)?
                .into_iter()
                .filter(|c| {
                    findings
                        .iter()
                        .any(|f| f.file == c.path && f.commit.as_deref().unwrap_or("") == c.commit)
                })
                .collect();
            let archives =
                git::archive_blobs(req, changed, self.options.max_file_size).map_err(git_err)?;
            for (blob, _) in archives {
                let commit = Some(blob.commit.as_str()).filter(|c| !c.is_empty());
                tracing::info!(
                    "skipped {} in {}: an archive (opened with --max-archive-depth 1 or more)",
                    blob.path,
                    blob.commit
                );
                findings.retain(|f| !(f.file == blob.path && f.commit.as_deref() == commit));
            }
            return Ok(findings);
        }
        let changed = git::changed_blobs(req, staged).map_err(git_err)?;
        let archives =
            git::archive_blobs(req, changed, self.options.max_file_size).map_err(git_err)?;
        for (blob, data) in archives {
            let commit = Some(blob.commit.as_str()).filter(|c| !c.is_empty());
            match self.scan_archive(&blob.path, commit, &data) {
                FileOutcome::Many(scan) => {
                    findings.retain(|f| !(f.file == blob.path && f.commit.as_deref() == commit));
                    for s in &scan.skipped {
                        tracing::info!("skipped {} in {}: {}", s.path, blob.commit, s.reason);
                    }
                    findings.extend(scan.findings);
                }
                FileOutcome::Skipped(s) => {
                    tracing::warn!("{} in {}: {}", s.path, blob.commit, s.reason);
                }
                FileOutcome::Scanned { .. } => {}
            }
        }
        Ok(findings)
    }

    /// A git scan's findings without those in the scan's own files (see `own_files.rs`).
    fn without_own_files(&self, req: &GitScanRequest, mut findings: Vec<Finding>) -> Vec<Finding> {
        if self.own_files.is_empty() || findings.is_empty() {
            return findings;
        }
        let top = git::toplevel(req);
        let paths: Vec<(String, &str)> = self
            .own_files
            .iter()
            .flat_map(|o| {
                o.git_paths(top.as_deref())
                    .into_iter()
                    .map(|p| (p, o.why.as_str()))
            })
            .collect();
        findings.retain(|f| match paths.iter().find(|(p, _)| *p == f.file) {
            Some((p, why)) => {
                tracing::debug!(path = %p, "finding in {why} not reported (gitleaks skips it too)");
                false
            }
            None => true,
        });
        findings
    }

    fn scan_dir(&self, root: &Path, total: &mut PathScan) -> Result<(), ScanError> {
        let walker = self.walk(root);
        // This thread walks; the walk's entries go to the rayon pool in batches, numbered
        // (one hand-off per batch rather than per file), and the outcomes are put back in the
        // walk's order. The walk runs ahead of the scans by at most `WALK_AHEAD` batches: the
        // pool's threads find the next batch waiting rather than wait on the walk, and the
        // walk's own allocations stay on one thread.
        let done = Mutex::new(Vec::new());
        let ahead = WalkAhead::new();
        let on_pool = rayon::current_thread_index().is_some();
        rayon::in_place_scope(|scope| {
            for (n, entries) in Batches::new(walker) {
                // The entries are dropped here, on the thread that made them.
                let batch = WalkedBatch::new(root, entries);
                if on_pool && ahead.is_full() {
                    // A thread of the pool does not wait for the pool (which may be itself).
                    let outcomes = self.scan_walked_batch(batch);
                    lock(&done).push((n, outcomes));
                    continue;
                }
                ahead.wait_for_room();
                let (done, ahead) = (&done, &ahead);
                scope.spawn(move |_| {
                    let _scanned = ahead.scanning();
                    let outcomes = self.scan_walked_batch(batch);
                    lock(done).push((n, outcomes));
                });
            }
        });
        let mut batches: Vec<(usize, Vec<WalkedOutcome>)> =
            done.into_inner().unwrap_or_else(PoisonError::into_inner);
        batches.sort_unstable_by_key(|(n, _)| *n);
        for r in batches.into_iter().flat_map(|(_, outcomes)| outcomes) {
            r?.add_to(total);
        }
        Ok(())
    }

    /// The walk of a directory: `.gitignore` and the like as the options say, symbolic
    /// links not followed, `.git` never entered.
    fn walk(&self, root: &Path) -> ignore::Walk {
        ignore::WalkBuilder::new(root)
            .hidden(false)
            .parents(self.options.respect_gitignore)
            .ignore(self.options.respect_gitignore)
            .git_ignore(self.options.respect_gitignore)
            .git_global(false)
            .git_exclude(self.options.respect_gitignore)
            .require_git(false)
            .follow_links(false)
            .filter_entry(|e| e.file_name() != ".git")
            .build()
    }

    /// A batch of a directory walk's regular files and errors, in order. A directory holding
    /// two or more of the batch's files is opened once and its files opened relative to it
    /// (see [`state::read::WalkedDir`]); a file alone in its directory is opened by its path.
    fn scan_walked_batch(&self, batch: WalkedBatch) -> Vec<WalkedOutcome> {
        let WalkedBatch { paths, items } = batch;
        let file = |range: &std::ops::Range<usize>| {
            Path::new(std::ffi::OsStr::from_bytes(&paths[range.clone()]))
        };
        let mut dirs: Vec<BatchDir<'_>> = Vec::new();
        for item in &items {
            let WalkedItem::File(range) = item else {
                continue;
            };
            let Some(parent) = file(range).parent() else {
                continue;
            };
            match dirs
                .iter_mut()
                .find(|d| d.path.as_os_str() == parent.as_os_str())
            {
                Some(dir) => dir.files += 1,
                None => dirs.push(BatchDir {
                    path: parent,
                    files: 1,
                    opened: None,
                }),
            }
        }
        items
            .into_iter()
            .map(|item| match item {
                WalkedItem::File(range) => self.scan_walked(file(&range), &mut dirs),
                WalkedItem::Failed(err) => Err(err),
            })
            .collect()
    }

    /// A regular file a directory walk found.
    fn scan_walked(&self, path: &Path, dirs: &mut [BatchDir<'_>]) -> WalkedOutcome {
        let dir = path.parent().and_then(|parent| {
            let dir = dirs
                .iter_mut()
                .find(|d| d.path.as_os_str() == parent.as_os_str())?;
            if dir.files < 2 {
                return None;
            }
            // Opened at the first of its files; one that cannot be opened leaves its files
            // to be opened by their paths.
            dir.opened
                .get_or_insert_with(|| state::read::WalkedDir::open(dir.path).ok())
                .as_ref()
        });
        self.scan_file_in(path, &display_path(path), false, dir)
    }

    fn scan_file(&self, path: &Path, name: &str, explicit: bool) -> Result<FileOutcome, ScanError> {
        self.scan_file_in(path, name, explicit, None)
    }

    /// [`Scanner::scan_file`]; a walked file whose directory is open (`dir`) is opened
    /// relative to it.
    fn scan_file_in(
        &self,
        path: &Path,
        name: &str,
        explicit: bool,
        dir: Option<&state::read::WalkedDir>,
    ) -> Result<FileOutcome, ScanError> {
        let skipped = |reason: String| {
            tracing::debug!(path = %name, %reason, "skipped");
            Ok(FileOutcome::Skipped(Skipped {
                path: name.to_string(),
                reason,
            }))
        };
        if let Some(own) = self.own_files.iter().find(|o| o.is(path)) {
            return skipped(format!("{} (gitleaks skips it too)", own.why));
        }
        if !explicit && self.engine.skips_path(name) {
            return skipped("allowlisted path".into());
        }
        // Bounded: a path named on the command line may be a FIFO or `/dev/zero`, whose
        // length says nothing about what a read returns. (The reader looks at the path before
        // opening it and at the open descriptor: a file over the limit is refused there, not
        // by a look of our own, which cost one more system call per file.)
        let limit = self.options.max_file_size;
        // A file over the limit is skipped; any other failure to read is an error.
        let failed = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::FileTooLarge {
                skipped(format!("larger than {limit} bytes"))
            } else {
                Err(ScanError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        if explicit {
            return match state::read::read_limited(path, limit) {
                Ok(data) => self.scan_read(name, &data),
                Err(e) => failed(e),
            };
        }
        // A walk's entry, seen as a regular file, not a symbolic link: read into this
        // thread's buffer. (Taken out while in use: a thread waiting in the engine for another
        // to finish part of a large file may scan a file of its own meanwhile.)
        let mut data = READ_BUFFER.take();
        let read = match (dir, path.file_name()) {
            (Some(dir), Some(file_name)) => {
                state::read::read_walked_file_at_into(dir, file_name, path, limit, &mut data)
            }
            _ => state::read::read_walked_file_into(path, limit, &mut data),
        };
        let outcome = match read {
            Ok(()) => self.scan_read(name, &data),
            Err(e) => failed(e),
        };
        if data.capacity() <= READ_BUFFER_KEPT {
            READ_BUFFER.set(data);
        }
        outcome
    }

    /// A file's bytes, read: an archive is opened (or skipped), content no rule can see into
    /// is skipped, the rest is scanned.
    fn scan_read(&self, name: &str, data: &[u8]) -> Result<FileOutcome, ScanError> {
        let skipped = |reason: String| {
            tracing::debug!(path = %name, %reason, "skipped");
            Ok(FileOutcome::Skipped(Skipped {
                path: name.to_string(),
                reason,
            }))
        };
        if archive::is_archive(data) {
            if self.options.max_archive_depth == 0 {
                // As gitleaks: not opened, and not read as text either (an uncompressed tar
                // would be; its entries are scanned with a depth of 1 or more).
                return skipped(ARCHIVE_NOT_OPENED.into());
            }
            return Ok(self.scan_archive(name, None, data));
        }
        // Binary files are scanned too (their text runs match like any text); only content
        // no rule can see into is skipped, and listed.
        if let Some(kind) = decode::unreadable_kind(data) {
            return skipped(format!("{kind} (cannot be scanned)"));
        }
        let findings = self.scan_bytes(name, data);
        Ok(FileOutcome::Scanned {
            findings,
            bytes: data.len() as u64,
        })
    }

    /// The entries of an archive (and of the archives in it, down to the depth limit), each
    /// scanned as a file named `archive!entry`; an archive bomb is refused whole.
    fn scan_archive(&self, name: &str, commit: Option<&str>, data: &[u8]) -> FileOutcome {
        let max_file = self.options.max_file_size;
        let limits = archive::Limits {
            max_depth: self.options.max_archive_depth,
            max_entry: max_file,
            max_total: max_file.saturating_mul(ARCHIVE_EXPANSION_FACTOR),
            max_entries: MAX_ARCHIVE_ENTRIES,
            max_ratio: MAX_ARCHIVE_RATIO,
        };
        let expansion = match archive::expand(name, data, &limits) {
            Ok(x) => x,
            Err(refused) => {
                tracing::warn!(path = %name, "{refused}");
                return FileOutcome::Skipped(Skipped {
                    path: name.to_string(),
                    reason: refused.to_string(),
                });
            }
        };
        let mut out = PathScan::default();
        for (entry, bytes) in &expansion.entries {
            if self.engine.skips_path(entry) {
                out.skipped.push(Skipped {
                    path: entry.clone(),
                    reason: "allowlisted path".into(),
                });
                continue;
            }
            if let Some(kind) = decode::unreadable_kind(bytes) {
                out.skipped.push(Skipped {
                    path: entry.clone(),
                    reason: format!("{kind} (cannot be scanned)"),
                });
                continue;
            }
            out.files += 1;
            out.bytes += bytes.len() as u64;
            out.findings
                .extend(self.scan_bytes_in(entry, commit, bytes));
        }
        out.skipped.extend(
            expansion
                .skipped
                .into_iter()
                .map(|(path, reason)| Skipped { path, reason }),
        );
        FileOutcome::Many(out)
    }
}

std::thread_local! {
    /// The buffer a thread reads walked files into, one after another (no allocation, no
    /// fresh pages, per file).
    static READ_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A thread keeps a read buffer of at most this many bytes between files: files larger than
/// this are few, and each thread of the pool keeping room for the largest it met would hold
/// up to the file size limit per thread.
const READ_BUFFER_KEPT: usize = 1 << 20;

/// One archive's entries may expand to at most this many times the file size limit.
const ARCHIVE_EXPANSION_FACTOR: u64 = 4;
/// Why an archive is skipped at `--max-archive-depth 0` (the default).
const ARCHIVE_NOT_OPENED: &str = "an archive (opened with --max-archive-depth 1 or more)";
/// At most this many entries in one archive, all levels.
const MAX_ARCHIVE_ENTRIES: usize = 100_000;
/// An archive may expand at most this many times its own size (past 1 MiB).
const MAX_ARCHIVE_RATIO: u64 = 100;

enum FileOutcome {
    Scanned {
        findings: Vec<Finding>,
        bytes: u64,
    },
    Skipped(Skipped),
    /// An archive's entries.
    Many(PathScan),
}

impl FileOutcome {
    fn add_to(self, total: &mut PathScan) {
        match self {
            FileOutcome::Scanned { findings, bytes } => {
                total.files += 1;
                total.bytes += bytes;
                total.findings.extend(findings);
            }
            FileOutcome::Skipped(s) => total.skipped.push(s),
            FileOutcome::Many(scan) => {
                total.files += scan.files;
                total.bytes += scan.bytes;
                total.findings.extend(scan.findings);
                total.skipped.extend(scan.skipped);
            }
        }
    }
}

/// What became of a regular file a directory walk found, or the walk's error.
type WalkedOutcome = Result<FileOutcome, ScanError>;

/// How many walked entries are handed to the rayon pool at a time: enough that the hand-offs
/// (each a job for the pool, and a lock of the outcomes) cost little next to the files'
/// scans, few enough that the last batches still keep both threads busy.
const WALK_BATCH: usize = 32;

/// How many batches of walked entries may wait to be scanned: enough that the pool's
/// threads always find one, few enough that a walk of a large tree holds little of it.
const WALK_AHEAD: usize = 32;

/// The batches a walk has handed to the pool and not yet seen scanned, and the walking
/// thread, which pauses while [`WALK_AHEAD`] wait and is woken when half of them are scanned
/// (one wake-up per `WALK_AHEAD / 2` batches, not one per batch).
struct WalkAhead {
    waiting: AtomicUsize,
    walker: std::thread::Thread,
}

impl WalkAhead {
    /// For a walk on this thread.
    fn new() -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            walker: std::thread::current(),
        }
    }

    fn is_full(&self) -> bool {
        self.waiting.load(Ordering::Acquire) >= WALK_AHEAD
    }

    /// Waits (on the walking thread) until fewer than [`WALK_AHEAD`] batches wait, then counts
    /// one more.
    fn wait_for_room(&self) {
        // No wake-up is lost: the count only falls while the walk waits, so it passes
        // `WALK_AHEAD / 2` (and wakes the walk) before the last waiting batch is scanned; a
        // wake-up that comes before the walk parks makes the park return at once.
        while self.is_full() {
            std::thread::park();
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a batch scanned when the returned guard is dropped (also if its scan panics,
    /// so that the walk is not left waiting).
    fn scanning(&self) -> Scanning<'_> {
        Scanning(self)
    }
}

/// See [`WalkAhead::scanning`].
struct Scanning<'a>(&'a WalkAhead);

impl Drop for Scanning<'_> {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, Ordering::AcqRel) == WALK_AHEAD / 2 + 1 {
            self.0.walker.unpark();
        }
    }
}

/// The lock's contents, also after a panic elsewhere while it was held (the outcomes pushed
/// before it are whole).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A directory holding files of a batch of walked entries.
struct BatchDir<'a> {
    /// The directory, as the walk named it.
    path: &'a Path,
    /// How many of the batch's files it holds.
    files: usize,
    /// Opened (at its first file, when it holds two or more): `Some(None)` if that failed.
    opened: Option<Option<state::read::WalkedDir>>,
}

/// What the pool's threads need of a batch of walked entries, made on the walking thread:
/// the regular files' paths, all in one buffer, and the walk's errors, in the walk's order
/// (anything else is passed over). The entries themselves are dropped where they were made:
/// two allocations of the walking thread's go to the pool per batch, not one per entry.
struct WalkedBatch {
    /// The files' paths, one after another.
    paths: Vec<u8>,
    items: Vec<WalkedItem>,
}

enum WalkedItem {
    /// A regular file (not a symbolic link): its path's place in [`WalkedBatch::paths`].
    File(std::ops::Range<usize>),
    /// The walk failed here.
    Failed(ScanError),
}

impl WalkedBatch {
    fn new(root: &Path, entries: Vec<Result<ignore::DirEntry, ignore::Error>>) -> Self {
        let mut batch = WalkedBatch {
            // Room for paths of the usual length: one allocation, seldom grown.
            paths: Vec::with_capacity(entries.len() * 128),
            items: Vec::with_capacity(entries.len()),
        };
        for entry in entries {
            let item = match entry {
                Err(e) => WalkedItem::Failed(ScanError::Walk {
                    path: root.to_path_buf(),
                    message: e.to_string(),
                }),
                Ok(entry) if entry.file_type().is_some_and(|t| t.is_file()) => {
                    let start = batch.paths.len();
                    batch
                        .paths
                        .extend_from_slice(entry.path().as_os_str().as_bytes());
                    WalkedItem::File(start..batch.paths.len())
                }
                Ok(_) => continue,
            };
            batch.items.push(item);
        }
        batch
    }
}

/// An iterator's items in numbered batches of [`WALK_BATCH`].
struct Batches<I> {
    items: I,
    next: usize,
}

impl<I> Batches<I> {
    fn new(items: I) -> Self {
        Self { items, next: 0 }
    }
}

impl<I: Iterator> Iterator for Batches<I> {
    type Item = (usize, Vec<I::Item>);

    fn next(&mut self) -> Option<Self::Item> {
        let batch: Vec<I::Item> = self.items.by_ref().take(WALK_BATCH).collect();
        if batch.is_empty() {
            return None;
        }
        let n = self.next;
        self.next += 1;
        Some((n, batch))
    }
}

/// How a path is reported: as given, without a leading `./`.
fn display_path(path: &Path) -> std::borrow::Cow<'_, str> {
    // Borrowed, as most paths are UTF-8: no allocation per walked file.
    match path.to_string_lossy() {
        std::borrow::Cow::Borrowed(s) => s.strip_prefix("./").unwrap_or(s).into(),
        std::borrow::Cow::Owned(s) => match s.strip_prefix("./") {
            Some(rest) => rest.to_string().into(),
            None => s.into(),
        },
    }
}

#[cfg(test)]
mod builtin_tests;
#[cfg(test)]
mod walk_tests;
