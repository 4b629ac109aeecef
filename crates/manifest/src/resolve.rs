//! `extends` resolution and validation.
//!
//! Each bottle is resolved once (cached), its parents folded left to right into one
//! effective parent, and its own fields merged on top, all through one function,
//! [`overlay`]. Every problem becomes a [`Diagnostic`]; a bottle whose parent failed fails
//! too, carrying the parent's diagnostics (reported once by [`crate::Manifest::errors`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use policy::raw::{LogMode, Route};

use crate::diag::{Diagnostic, Pos, Source};
use crate::load::BottleDef;
use crate::raw::{
    AgentProviderSpec, Extends, ExtendsEntry, GitUser, KeySpec, RepoSpec, Scalar, Spanned,
};
use crate::resolved::{
    AgentProvider, GenericProvider, ResolvedBottle, ResolvedEgress, ResolvedGitGate,
    ResolvedKubernetes, ResolvedResources,
};
use crate::validate::{
    check_namespace, check_registry, check_runtime_class, check_storage_class, check_storage_size,
    control_char, is_env_name, is_safe_name, is_ssh_url, parse_cpus, parse_memory, parse_pids,
};

/// What one bottle contributes, or what a fold of several has produced so far. `None`
/// means "not set here" so that a later layer only overrides what it sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layer {
    pub provider: Option<AgentProvider>,
    pub supervise: Option<bool>,
    pub env: BTreeMap<String, String>,
    pub user: GitUser,
    pub repos: BTreeMap<String, RepoSpec>,
    pub log: Option<LogMode>,
    pub upstream_ca: Vec<PathBuf>,
    /// Routes in order, each with the bottle that declared it.
    pub routes: Vec<(Route, String)>,
    /// `resources.cpus` in thousandths of a CPU.
    pub millicpus: Option<u32>,
    /// `resources.memory` in bytes.
    pub memory_bytes: Option<u64>,
    /// `resources.pids`.
    pub pids: Option<u32>,
    /// `resources.dangerously_allow_unenforced`.
    pub allow_unenforced: Option<bool>,
    /// `dangerously_run_as_host_root`.
    pub run_as_host_root: Option<bool>,
    /// `kubernetes`, each field on its own.
    pub kubernetes: ResolvedKubernetes,
}

/// Two different routes for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteConflict {
    pub host: String,
    pub first: String,
    pub second: String,
}

impl RouteConflict {
    fn message(&self, bottle: &str) -> String {
        let from = if self.first == self.second {
            format!("both from bottle `{}`", self.first)
        } else {
            format!("from bottle `{}` and bottle `{}`", self.first, self.second)
        };
        format!(
            "bottle `{bottle}`: two different routes for host `{}`, {from}; keep one route \
             per host (put alternatives under its `matches`) or make them identical",
            self.host
        )
    }
}

/// Adds a route unless the same route is already there (a diamond); a different route for
/// the same host is a conflict.
fn push_route(
    routes: &mut Vec<(Route, String)>,
    route: Route,
    origin: String,
    conflicts: &mut Vec<RouteConflict>,
) {
    if routes.iter().any(|(r, _)| *r == route) {
        return;
    }
    if let Some((_, first)) = routes
        .iter()
        .find(|(r, _)| r.host.eq_ignore_ascii_case(&route.host))
    {
        conflicts.push(RouteConflict {
            host: route.host.clone(),
            first: first.clone(),
            second: origin,
        });
        return;
    }
    routes.push((route, origin));
}

/// The one merge function: folds `later` on top of `acc`. `env` merges with later keys
/// winning; `git-gate.user` per field, later non-empty wins; `git-gate.repos` union by
/// name, same name merged per field (a field such as `key` replaced whole); routes
/// concatenated, earlier first, an identical route kept once at its first place, a
/// different route for a host already present reported as a conflict; `upstream_ca`
/// concatenated without repeats; `log`, `agent_provider`, `supervise`,
/// `dangerously_run_as_host_root` and each field of `resources` and of `kubernetes` last wins.
pub(crate) fn overlay(acc: &mut Layer, later: Layer, conflicts: &mut Vec<RouteConflict>) {
    fn last_wins<T>(have: &mut Option<T>, later: Option<T>) {
        if later.is_some() {
            *have = later;
        }
    }
    last_wins(&mut acc.millicpus, later.millicpus);
    last_wins(&mut acc.memory_bytes, later.memory_bytes);
    last_wins(&mut acc.pids, later.pids);
    if later.allow_unenforced.is_some() {
        acc.allow_unenforced = later.allow_unenforced;
    }
    if later.run_as_host_root.is_some() {
        acc.run_as_host_root = later.run_as_host_root;
    }
    last_wins(&mut acc.kubernetes.namespace, later.kubernetes.namespace);
    last_wins(
        &mut acc.kubernetes.runtime_class,
        later.kubernetes.runtime_class,
    );
    last_wins(&mut acc.kubernetes.registry, later.kubernetes.registry);
    last_wins(&mut acc.kubernetes.home_size, later.kubernetes.home_size);
    last_wins(
        &mut acc.kubernetes.storage_class,
        later.kubernetes.storage_class,
    );
    last_wins(&mut acc.kubernetes.sandbox, later.kubernetes.sandbox);
    if later.provider.is_some() {
        acc.provider = later.provider;
    }
    if later.supervise.is_some() {
        acc.supervise = later.supervise;
    }
    acc.env.extend(later.env);
    if let Some(name) = later.user.name.filter(|s| !s.is_empty()) {
        acc.user.name = Some(name);
    }
    if let Some(email) = later.user.email.filter(|s| !s.is_empty()) {
        acc.user.email = Some(email);
    }
    for (name, spec) in later.repos {
        match acc.repos.get_mut(&name) {
            Some(have) => merge_repo(have, spec),
            None => {
                acc.repos.insert(name, spec);
            }
        }
    }
    if later.log.is_some() {
        acc.log = later.log;
    }
    for ca in later.upstream_ca {
        if !acc.upstream_ca.contains(&ca) {
            acc.upstream_ca.push(ca);
        }
    }
    for (route, origin) in later.routes {
        push_route(&mut acc.routes, route, origin, conflicts);
    }
}

fn merge_repo(have: &mut RepoSpec, later: RepoSpec) {
    if later.url.is_some() {
        have.url = later.url;
    }
    if later.key.is_some() {
        have.key = later.key;
    }
    if later.host_key.is_some() {
        have.host_key = later.host_key;
    }
    if later.push_branches.is_some() {
        have.push_branches = later.push_branches;
    }
    if later.allow_force_push.is_some() {
        have.allow_force_push = later.allow_force_push;
    }
    if later.dangerously_push_unscannable.is_some() {
        have.dangerously_push_unscannable = later.dangerously_push_unscannable;
    }
}

/// Resolves a manifest path value: `~/` is the home directory, a relative path is relative
/// to the manifest's directory.
pub(crate) fn resolve_path(root: &Path, home: Option<&Path>, value: &str) -> PathBuf {
    if let (Some(rest), Some(home)) = (value.strip_prefix("~/"), home) {
        return home.join(rest);
    }
    if value == "~"
        && let Some(home) = home
    {
        return home.to_path_buf();
    }
    let path: PathBuf = Path::new(value)
        .components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect();
    if path.is_absolute() {
        path
    } else {
        root.join(path)
    }
}

/// Names joined for an error message.
pub(crate) fn list_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

/// Where semantic route validation from the `policy` crate plugs in (hosts, ports, paths,
/// methods, `token_env` names, `connect_to`). Returns one message per problem.
///
/// The same validation the egress proxy applies when it loads the routes, so a manifest
/// that passes `manifest check` is one the proxy accepts.
pub(crate) fn policy_validate_hook(egress: &ResolvedEgress) -> Vec<String> {
    let config = policy::EgressConfig {
        log: Some(egress.log),
        upstream_ca: (!egress.upstream_ca.is_empty()).then(|| {
            egress
                .upstream_ca
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        }),
        routes: Some(egress.routes.clone()),
    };
    match policy::validate(&config) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| format!("egress.{e}")).collect(),
    }
}

/// A bottle's fold result (what children inherit, kept even when the bottle has errors so
/// that children's own problems are still found) and its resolved form or its errors
/// (including its parents').
#[derive(Debug)]
struct Done {
    layer: Layer,
    /// Length of the longest `extends` chain from this bottle up (1 without parents).
    depth: usize,
    result: Result<ResolvedBottle, Vec<Diagnostic>>,
}

type Outcome = Arc<Done>;

/// Every bottle by name, resolved or with its errors, in definition order.
pub(crate) type Resolved = Vec<(String, Result<ResolvedBottle, Vec<Diagnostic>>)>;

enum Slot {
    Todo,
    Visiting,
    Done(Outcome),
}

/// Resolves every bottle of a manifest.
pub(crate) struct Resolver<'a> {
    defs: &'a [BottleDef],
    broken: &'a BTreeMap<String, Diagnostic>,
    index: HashMap<&'a str, usize>,
    slots: Vec<Slot>,
    stack: Vec<usize>,
    root: &'a Path,
    home: Option<&'a Path>,
    /// How many bottles were actually resolved (not served from the cache).
    resolutions: usize,
}

/// The deepest `extends` chain accepted; deeper is almost surely a mistake, and bounding it
/// bounds the resolver's recursion.
pub(crate) const MAX_DEPTH: usize = 64;

impl<'a> Resolver<'a> {
    pub fn new(
        defs: &'a [BottleDef],
        broken: &'a BTreeMap<String, Diagnostic>,
        root: &'a Path,
        home: Option<&'a Path>,
    ) -> Self {
        let mut index = HashMap::new();
        for (i, def) in defs.iter().enumerate() {
            index.entry(def.name.as_str()).or_insert(i);
        }
        Resolver {
            defs,
            broken,
            index,
            slots: defs.iter().map(|_| Slot::Todo).collect(),
            stack: Vec::new(),
            root,
            home,
            resolutions: 0,
        }
    }

    /// ` did you mean `base`?` when a defined bottle is a likely typo of `name`.
    fn did_you_mean(&self, name: &str) -> String {
        let names = self
            .defs
            .iter()
            .map(|d| d.name.as_str())
            .chain(self.broken.keys().map(String::as_str));
        crate::diag::closest(name, names)
            .map(|c| format!(" did you mean `{c}`?"))
            .unwrap_or_default()
    }

    fn available(&self) -> String {
        list_names(
            self.defs
                .iter()
                .map(|d| d.name.as_str())
                .chain(self.broken.keys().map(String::as_str)),
        )
    }

    /// Resolves every bottle, in definition order.
    pub fn resolve_all(self) -> Resolved {
        self.resolve_all_counted().0
    }

    /// [`Self::resolve_all`], also returning how many resolutions ran (each bottle once).
    fn resolve_all_counted(mut self) -> (Resolved, usize) {
        let mut out = Vec::new();
        for i in 0..self.defs.len() {
            let def = &self.defs[i];
            if self.index.get(def.name.as_str()) != Some(&i) {
                // The directory form cannot produce duplicates; kept for safety.
                continue;
            }
            let result = self.resolve(i).result.clone();
            out.push((def.name.clone(), result));
        }
        (out, self.resolutions)
    }

    fn resolve(&mut self, i: usize) -> Outcome {
        match &self.slots[i] {
            Slot::Done(outcome) => return Arc::clone(outcome),
            Slot::Visiting | Slot::Todo => {}
        }
        self.slots[i] = Slot::Visiting;
        self.stack.push(i);
        self.resolutions += 1;
        let def = &self.defs[i];
        let src = &def.source;
        let name = def.name.as_str();
        let mut errors = Vec::new();

        if !is_safe_name(name) {
            errors.push(src.diag(
                def.pos,
                format!(
                    "bottle name `{}` is not valid; use letters, digits, `.`, `_` and `-`, \
                     not starting with `.`",
                    name.escape_debug()
                ),
            ));
        }

        let mut acc: Option<Layer> = None;
        let mut depth = 1;
        let mut conflicts = Vec::new();
        for (parent, pos) in self.parent_edges(def, &mut errors) {
            if matches!(self.slots[parent], Slot::Visiting) {
                let from = self.stack.iter().position(|&s| s == parent).unwrap_or(0);
                let mut chain: Vec<&str> = self.stack[from..]
                    .iter()
                    .map(|&s| self.defs[s].name.as_str())
                    .collect();
                chain.push(self.defs[parent].name.as_str());
                errors.push(src.diag(
                    pos,
                    format!(
                        "bottle `{name}`: extends cycle: {}; remove one of these `extends` \
                         entries",
                        chain.join(" -> ")
                    ),
                ));
                continue;
            }
            if self.stack.len() >= MAX_DEPTH {
                // Bounds the recursion; the chain on the stack is already too deep.
                let top = self.defs[self.stack[0]].name.as_str();
                let parent_name = self.defs[parent].name.as_str();
                errors.push(src.diag(
                    pos,
                    format!(
                        "bottle `{name}`: extends chain {top} -> ... -> {name} -> {parent_name} \
                         is deeper than {MAX_DEPTH} bottles; flatten it"
                    ),
                ));
                continue;
            }
            let done = self.resolve(parent);
            if done.depth == MAX_DEPTH {
                errors.push(src.diag(
                    pos,
                    format!(
                        "bottle `{name}`: extends chain is deeper than {MAX_DEPTH} bottles; \
                         flatten it"
                    ),
                ));
            }
            depth = depth.max(done.depth + 1);
            if let Err(parent_errors) = &done.result {
                errors.extend(parent_errors.iter().cloned());
            }
            match acc.as_mut() {
                None => acc = Some(done.layer.clone()),
                Some(acc) => {
                    let mut found = Vec::new();
                    overlay(acc, done.layer.clone(), &mut found);
                    errors.extend(found.iter().map(|c| src.diag(pos, c.message(name))));
                }
            }
        }

        let own = self.own_layer(def, &mut errors, &mut conflicts);
        let egress_pos = own_egress_pos(def);
        let own_pos = egress_pos.unwrap_or(def.pos);
        errors.extend(conflicts.iter().map(|c| src.diag(own_pos, c.message(name))));
        let mut merged = acc.unwrap_or_default();
        let mut found = Vec::new();
        overlay(&mut merged, own, &mut found);
        errors.extend(found.iter().map(|c| src.diag(own_pos, c.message(name))));

        self.stack.pop();
        // Checks of the merged bottle only run on an otherwise sound bottle: with a broken
        // parent they would repeat the parent's problem under this bottle's name.
        let result = if errors.is_empty() {
            finish(def, &merged)
        } else {
            Err(errors)
        };
        let outcome = Arc::new(Done {
            layer: merged,
            depth,
            result,
        });
        self.slots[i] = Slot::Done(Arc::clone(&outcome));
        outcome
    }

    /// The parents named by `extends`, with the position of each entry. Problems with the
    /// entries themselves are reported here.
    fn parent_edges(&self, def: &BottleDef, errors: &mut Vec<Diagnostic>) -> Vec<(usize, Pos)> {
        let src = &def.source;
        let name = def.name.as_str();
        let Some(extends) = &def.raw.extends else {
            return Vec::new();
        };
        let whole = src.pos(&extends.referenced);
        let entries: Vec<(Option<usize>, Result<&str, &str>, Pos)> = match &extends.value {
            Extends::One(parent) => vec![(None, Ok(parent.as_str()), whole)],
            Extends::Many(list) => list
                .iter()
                .enumerate()
                .map(|(i, entry)| {
                    let pos = src.pos(&entry.referenced);
                    let pos = if pos.line.is_some() { pos } else { whole };
                    match &entry.value {
                        ExtendsEntry::Name(n) => (Some(i), Ok(n.as_str()), pos),
                        ExtendsEntry::Invalid(kind) => (Some(i), Err(*kind), pos),
                    }
                })
                .collect(),
            Extends::Invalid(kind) => {
                errors.push(src.diag(
                    whole,
                    format!(
                        "bottle `{name}`: extends must be a bottle name or a list of bottle \
                         names, found {kind}"
                    ),
                ));
                return Vec::new();
            }
        };
        let mut edges = Vec::new();
        for (index, entry, pos) in entries {
            let parent = match entry {
                Ok(parent) => parent,
                Err(kind) => {
                    errors.push(src.diag(
                        pos,
                        format!(
                            "bottle `{name}`: extends[{}] must be a bottle name (a string), \
                             found {kind}",
                            index.unwrap_or(0)
                        ),
                    ));
                    continue;
                }
            };
            if parent == name {
                errors.push(src.diag(
                    pos,
                    format!("bottle `{name}`: extends itself; remove the self-reference"),
                ));
                continue;
            }
            match self.index.get(parent) {
                Some(&p) => edges.push((p, pos)),
                // Its file is broken and already reported; this bottle fails with it.
                None if self.broken.contains_key(parent) => {
                    errors.extend(self.broken.get(parent).cloned());
                }
                None => errors.push(src.diag(
                    pos,
                    format!(
                        "bottle `{name}`: extends `{}`, which is not defined;{} available \
                         bottles: {}",
                        parent.escape_debug(),
                        self.did_you_mean(parent),
                        self.available()
                    ),
                )),
            }
        }
        edges
    }

    /// What the bottle itself sets, checked value by value.
    fn own_layer(
        &self,
        def: &BottleDef,
        errors: &mut Vec<Diagnostic>,
        conflicts: &mut Vec<RouteConflict>,
    ) -> Layer {
        let src = &def.source;
        let name = def.name.as_str();
        let raw = &def.raw;
        let mut layer = Layer {
            supervise: raw.supervise,
            run_as_host_root: raw.dangerously_run_as_host_root.as_ref().map(|b| b.value),
            ..Layer::default()
        };
        if let Some(resources) = &raw.resources {
            let block_pos = known_or(src.pos(&resources.referenced), def.pos);
            let r = &resources.value;
            let mut check =
                |field: &str,
                 value: &Option<Spanned<Scalar>>,
                 parse: &dyn Fn(&Scalar) -> Result<u64, String>| {
                    let value = value.as_ref()?;
                    match parse(&value.value) {
                        Ok(v) => Some(v),
                        Err(message) => {
                            errors.push(src.diag(
                                known_or(src.pos(&value.referenced), block_pos),
                                format!("bottle `{name}`: resources.{field} {message}"),
                            ));
                            None
                        }
                    }
                };
            layer.millicpus = check("cpus", &r.cpus, &|v| parse_cpus(v).map(u64::from))
                .and_then(|v| u32::try_from(v).ok());
            layer.memory_bytes = check("memory", &r.memory, &parse_memory);
            layer.pids = check("pids", &r.pids, &|v| parse_pids(v).map(u64::from))
                .and_then(|v| u32::try_from(v).ok());
            layer.allow_unenforced = r.dangerously_allow_unenforced;
        }
        if let Some(k) = &raw.kubernetes {
            let block_pos = known_or(src.pos(&k.referenced), def.pos);
            let mut check = |field: &str,
                             value: &Option<Spanned<String>>,
                             valid: fn(&str) -> Result<(), String>| {
                let value = value.as_ref()?;
                match valid(&value.value) {
                    Ok(()) => Some(value.value.clone()),
                    Err(message) => {
                        errors.push(src.diag(
                            known_or(src.pos(&value.referenced), block_pos),
                            format!(
                                "bottle `{name}`: kubernetes.{field} `{}` {message}",
                                value.value.escape_debug()
                            ),
                        ));
                        None
                    }
                }
            };
            layer.kubernetes = ResolvedKubernetes {
                namespace: check("namespace", &k.value.namespace, check_namespace),
                runtime_class: check("runtime_class", &k.value.runtime_class, check_runtime_class),
                registry: check("registry", &k.value.registry, check_registry),
                home_size: check("home_size", &k.value.home_size, check_storage_size),
                storage_class: check("storage_class", &k.value.storage_class, check_storage_class),
                sandbox: k.value.sandbox.as_ref().map(|s| s.value),
            };
        }
        if let Some(provider) = &raw.agent_provider {
            layer.provider = Some(match &provider.value {
                AgentProviderSpec::Stock(kind) => AgentProvider::Stock(*kind),
                AgentProviderSpec::Template {
                    template,
                    dockerfile,
                } => AgentProvider::Template {
                    template: *template,
                    dockerfile: resolve_path(self.root, self.home, dockerfile),
                },
                AgentProviderSpec::Generic(g) => {
                    let pos = src.pos(&provider.referenced);
                    for message in crate::validate::generic_provider_problems(g) {
                        errors.push(src.diag(pos, format!("bottle `{name}`: {message}")));
                    }
                    AgentProvider::Generic(GenericProvider {
                        command: g.command.clone(),
                        model_api: g.model_api.clone(),
                        mcp: g.mcp.clone(),
                        instructions: g.instructions.clone(),
                        dockerfile: g
                            .dockerfile
                            .as_deref()
                            .map(|d| resolve_path(self.root, self.home, d)),
                    })
                }
            });
        }
        for (key, value) in raw.env.iter().flat_map(|e| e.0.iter()) {
            let pos = src.pos(&key.referenced);
            if !is_env_name(&key.value) {
                errors.push(src.diag(
                    pos,
                    format!(
                        "bottle `{name}`: env name `{}` is not a valid environment variable \
                         name; use letters, digits and `_`, not starting with a digit",
                        key.value.escape_debug()
                    ),
                ));
            } else if value.contains('\0') {
                errors.push(src.diag(
                    pos,
                    format!("bottle `{name}`: env.{} contains a NUL byte", key.value),
                ));
            }
            layer.env.insert(key.value.clone(), value.clone());
        }
        if let Some(gate) = &raw.git_gate {
            let block_pos = src.pos(&gate.referenced);
            let check = |pos: Pos, field: String, value: &str| {
                control_char(value).map(|what| {
                    src.diag(
                        pos,
                        format!(
                            "bottle `{name}`: git-gate.{field} contains {what}; it is written \
                             into the agent's git configuration, so it must be one plain line"
                        ),
                    )
                })
            };
            if let Some(user) = &gate.value.user {
                let pos = known_or(src.pos(&user.referenced), block_pos);
                if let Some(v) = &user.value.name {
                    errors.extend(check(pos, "user.name".into(), v));
                }
                if let Some(v) = &user.value.email {
                    errors.extend(check(pos, "user.email".into(), v));
                }
                layer.user = user.value.clone();
            }
            for (repo, spec) in gate.value.repos.iter().flat_map(|r| r.0.iter()) {
                let pos = known_or(src.pos(&repo.referenced), block_pos);
                let repo = repo.value.as_str();
                if !is_safe_name(repo) {
                    errors.push(src.diag(
                        pos,
                        format!(
                            "bottle `{name}`: git-gate.repos: `{}` is not a valid repository \
                             name; use letters, digits, `.`, `_` and `-`, not starting with `.`",
                            repo.escape_debug()
                        ),
                    ));
                    continue;
                }
                let field = |f: &str| format!("repos.{repo}.{f}");
                if let Some(v) = &spec.url {
                    errors.extend(check(pos, field("url"), v));
                }
                if let Some(v) = &spec.host_key {
                    errors.extend(check(pos, field("host_key"), v));
                }
                for (i, b) in spec.push_branches.iter().flatten().enumerate() {
                    errors.extend(check(pos, field(&format!("push_branches[{i}]")), b));
                }
                match &spec.key {
                    Some(KeySpec::Static { path }) => {
                        errors.extend(check(pos, field("key.path"), path));
                    }
                    Some(KeySpec::Gitea {
                        forge_token_env,
                        api_url,
                    }) => {
                        if !is_env_name(forge_token_env) {
                            errors.push(src.diag(
                                pos,
                                format!(
                                    "bottle `{name}`: git-gate.repos.{repo}.key.forge_token_env \
                                     `{}` is not a valid environment variable name",
                                    forge_token_env.escape_debug()
                                ),
                            ));
                        }
                        if let Some(v) = api_url {
                            errors.extend(check(pos, field("key.api_url"), v));
                        }
                    }
                    None => {}
                }
                layer.repos.insert(repo.to_owned(), spec.clone());
            }
        }
        if let Some(egress) = &raw.egress {
            layer.log = egress.value.log;
            layer.upstream_ca = egress
                .value
                .upstream_ca
                .iter()
                .flatten()
                .map(|ca| resolve_path(self.root, self.home, ca))
                .collect();
            for route in egress.value.routes.iter().flatten() {
                push_route(&mut layer.routes, route.clone(), name.to_owned(), conflicts);
            }
        }
        layer
    }
}

fn known_or(pos: Pos, fallback: Pos) -> Pos {
    if pos.line.is_some() { pos } else { fallback }
}

fn own_egress_pos(def: &BottleDef) -> Option<Pos> {
    def.raw
        .egress
        .as_ref()
        .map(|e| def.source.pos(&e.referenced))
        .filter(|p| p.line.is_some())
}

/// Applies defaults and checks what only the merged bottle can show.
fn finish(def: &BottleDef, layer: &Layer) -> Result<ResolvedBottle, Vec<Diagnostic>> {
    let src: &Source = &def.source;
    let name = def.name.as_str();
    let gate = def.raw.git_gate.as_ref();
    let block_pos = gate
        .map(|g| known_or(src.pos(&g.referenced), def.pos))
        .unwrap_or(def.pos);
    // A repository is reported where this bottle names it, or at its `git-gate:` block.
    let repo_pos = |repo: &str| {
        gate.and_then(|g| g.value.repos.as_ref())
            .and_then(|r| r.0.iter().find(|(n, _)| n.value == repo))
            .map(|(n, _)| known_or(src.pos(&n.referenced), block_pos))
            .unwrap_or(block_pos)
    };
    let mut errors = Vec::new();
    for (repo, spec) in &layer.repos {
        let pos = repo_pos(repo);
        let Some(url) = &spec.url else {
            errors.push(src.diag(
                pos,
                format!(
                    "bottle `{name}`: git-gate.repos.{repo} has no `url`; add the upstream \
                     repository's URL"
                ),
            ));
            continue;
        };
        if is_ssh_url(url) {
            if spec.key.is_none() {
                errors.push(src.diag(
                    pos,
                    format!(
                        "bottle `{name}`: git-gate.repos.{repo} has an SSH upstream but no \
                         `key`; add `key: {{provider: static, path: PATH}}` or `key: \
                         {{provider: gitea, forge_token_env: VAR}}`"
                    ),
                ));
            }
            if spec.host_key.is_none() {
                errors.push(src.diag(
                    pos,
                    format!(
                        "bottle `{name}`: git-gate.repos.{repo} has an SSH upstream but no \
                         `host_key`; pin the upstream's host key (see `ssh-keyscan HOST`)"
                    ),
                ));
            }
        }
    }
    let bottle = ResolvedBottle {
        name: name.to_owned(),
        agent_provider: layer.provider.clone().unwrap_or_default(),
        supervise: layer.supervise.unwrap_or(true),
        env: layer.env.clone(),
        git_gate: ResolvedGitGate {
            user: layer.user.clone(),
            repos: layer.repos.clone(),
        },
        egress: ResolvedEgress {
            log: layer.log.unwrap_or_default(),
            upstream_ca: layer.upstream_ca.clone(),
            routes: layer.routes.iter().map(|(r, _)| r.clone()).collect(),
        },
        resources: ResolvedResources {
            millicpus: layer
                .millicpus
                .unwrap_or(ResolvedResources::DEFAULT_MILLICPUS),
            memory_bytes: layer
                .memory_bytes
                .unwrap_or(ResolvedResources::DEFAULT_MEMORY_BYTES),
            pids: layer.pids.unwrap_or(ResolvedResources::DEFAULT_PIDS),
            dangerously_allow_unenforced: layer.allow_unenforced.unwrap_or(false),
        },
        dangerously_run_as_host_root: layer.run_as_host_root.unwrap_or(false),
        kubernetes: layer.kubernetes.clone(),
    };
    let egress_pos = own_egress_pos(def).unwrap_or(def.pos);
    errors.extend(
        policy_validate_hook(&bottle.egress)
            .into_iter()
            .map(|m| src.diag(egress_pos, format!("bottle `{name}`: {m}"))),
    );
    if errors.is_empty() {
        Ok(bottle)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn parse(yaml: &str) -> crate::load::Parsed {
        crate::load::parse_file_text(Path::new("m.yaml"), yaml)
    }

    #[test]
    fn each_bottle_is_resolved_once() {
        let parsed = parse(
            "bottles:\n  base: {}\n  left: {extends: base}\n  right: {extends: base}\n  \
             child: {extends: [left, right, base]}\n  other: {extends: [child, left]}\n",
        );
        let broken = BTreeMap::new();
        let (out, resolutions) =
            Resolver::new(&parsed.bottles, &broken, Path::new("/"), None).resolve_all_counted();
        assert_eq!(out.len(), 5);
        assert_eq!(resolutions, 5);
    }

    #[test]
    fn overlay_with_an_empty_layer_changes_nothing() {
        let mut acc = Layer {
            provider: Some(AgentProvider::default()),
            supervise: Some(false),
            env: [("A".to_owned(), "1".to_owned())].into(),
            user: GitUser {
                name: Some("Bot".into()),
                email: None,
            },
            repos: BTreeMap::new(),
            log: Some(LogMode::All),
            upstream_ca: vec![PathBuf::from("/ca.pem")],
            routes: vec![(
                Route {
                    host: "a".into(),
                    websocket: None,
                    dangerously_raw_paths: None,
                    expires: None,
                    uses: None,
                    grant: None,
                    after_grant: None,
                    dlp: None,
                    dlp_allow: None,
                    dlp_allow_grants: None,
                    dangerously_dlp_pass_unscannable: None,
                    port: None,
                    auth_scheme: None,
                    token_env: None,
                    auth_header: None,
                    connect_to: None,
                    matches: None,
                },
                "p".into(),
            )],
            millicpus: Some(1500),
            memory_bytes: Some(1 << 30),
            pids: Some(100),
            allow_unenforced: Some(true),
            run_as_host_root: Some(true),
            kubernetes: ResolvedKubernetes {
                namespace: Some("agents".into()),
                runtime_class: Some("gvisor".into()),
                registry: None,
                home_size: Some("10Gi".into()),
                storage_class: None,
                sandbox: Some(false),
            },
        };
        let before = acc.clone();
        let mut conflicts = Vec::new();
        overlay(&mut acc, Layer::default(), &mut conflicts);
        assert_eq!(acc, before);
        assert_eq!(conflicts, vec![]);
    }

    #[test]
    fn identical_route_twice_is_kept_once_different_is_a_conflict() {
        let r = |host: &str, port: Option<u16>| Route {
            host: host.into(),
            websocket: None,
            dangerously_raw_paths: None,
            expires: None,
            uses: None,
            grant: None,
            after_grant: None,
            dlp: None,
            dlp_allow: None,
            dlp_allow_grants: None,
            dangerously_dlp_pass_unscannable: None,
            port,
            auth_scheme: None,
            token_env: None,
            auth_header: None,
            connect_to: None,
            matches: None,
        };
        let mut routes = Vec::new();
        let mut conflicts = Vec::new();
        push_route(&mut routes, r("a", None), "p1".into(), &mut conflicts);
        push_route(&mut routes, r("b", None), "p1".into(), &mut conflicts);
        push_route(&mut routes, r("a", None), "p2".into(), &mut conflicts);
        push_route(&mut routes, r("A", Some(1)), "p3".into(), &mut conflicts);
        assert_eq!(
            routes,
            vec![(r("a", None), "p1".into()), (r("b", None), "p1".into())]
        );
        assert_eq!(
            conflicts,
            vec![RouteConflict {
                host: "A".into(),
                first: "p1".into(),
                second: "p3".into()
            }]
        );
    }

    #[test]
    fn deep_chains_are_bounded() {
        let mut yaml = String::from("bottles:\n  b0: {}\n");
        for i in 1..=MAX_DEPTH + 5 {
            yaml.push_str(&format!("  b{i}: {{extends: b{}}}\n", i - 1));
        }
        let parsed = parse(&yaml);
        let broken = BTreeMap::new();
        let out = Resolver::new(&parsed.bottles, &broken, Path::new("/"), None).resolve_all();
        let deepest = &out.last().unwrap().1;
        let errors = deepest.as_ref().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .contains("extends chain is deeper than 64 bottles"),
            "{}",
            errors[0]
        );
        // Shallow enough bottles still resolve.
        assert!(out[10].1.is_ok());
    }
}
