//! A JSON-RPC request body as the agent sends it to supervise's `/mcp`, through the tool
//! dispatch of a real `SuperviseServer` (its own queue in a temporary home, a recording
//! applier, no wait for the operator): whatever the method, tool name and arguments (hostile
//! hosts, paths, sizes, wrong types, extra fields), nothing panics, and every proposal the
//! call left in the queue passes the validation the operator's side repeats (its file parses
//! for its tool, its justification is not empty). The JSON-RPC framing itself is rmcp's; this
//! target starts where our code takes over (`tools/call` name and arguments).
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use supervise::validate::{check_justification, parse_payload};
use supervise::{Engine, Home, Queue, RecordingApplier, SuperviseServer};

struct World {
    runtime: tokio::runtime::Runtime,
    queue: Queue,
    server: SuperviseServer,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        // A home of this process's own (the queue inside is emptied after every input).
        let dir =
            std::env::temp_dir().join(format!("bb-fuzz-supervise-call-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary home");
        let home = Home::new(&dir);
        let queue = Queue::new(home, "fuzz-0a1b2").expect("a queue");
        let applier = RecordingApplier::with_routes(
            "log: blocks\nroutes:\n  - host: api.example.com\n    token_env: API_TOKEN\n",
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let engine = Engine::new(queue.clone(), Arc::new(applier));
        World {
            runtime,
            queue,
            server: SuperviseServer::new(engine, Duration::ZERO),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if message.get("method").and_then(|m| m.as_str()) != Some("tools/call") {
        return;
    }
    let params = message.get("params");
    let Some(name) = params.and_then(|p| p.get("name")).and_then(|n| n.as_str()) else {
        return;
    };
    // rmcp hands over `arguments` only when it is an object.
    let args = match params.and_then(|p| p.get("arguments")) {
        Some(serde_json::Value::Object(map)) => Some(map.clone()),
        Some(serde_json::Value::Null) | None => None,
        Some(_) => return,
    };
    let w = world();
    let _ = w.runtime.block_on(w.server.dispatch(name, args));

    let (pending, _problems) = w.queue.pending().expect("the queue is readable");
    for entry in &pending {
        let p = &entry.proposal;
        assert!(
            parse_payload(p.tool, &p.proposed_file).is_ok(),
            "the queue holds a {:?} proposal its own validation refuses: {:?}",
            p.tool,
            p.proposed_file
        );
        assert!(
            check_justification(&p.justification).is_ok(),
            "the queue holds a proposal without a justification: {:?}",
            p.justification
        );
    }
    // Each input starts from an empty queue.
    let _ = std::fs::remove_dir_all(w.queue.dir());
});
