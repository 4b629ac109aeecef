//! `extends` graphs: generated bottles that extend each other (cycles, self-loops, unknown
//! parents, diamonds, long chains) with folded fields. Never panics, and a bottle whose
//! `extends` reaches a cycle or an unknown parent never resolves.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::fmt::Write;
use std::path::Path;

const NAMES: [&str; 8] = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"];
const HOSTS: [&str; 4] = [
    "api.example.com",
    "*.example.org",
    "EXAMPLE.net.",
    "bad host",
];

#[derive(Arbitrary, Debug)]
struct Bottle {
    extends: Vec<u8>,
    /// extends as a plain string rather than a list (first parent only)
    scalar: bool,
    hosts: Vec<u8>,
    env: Vec<(u8, u8)>,
    supervise: Option<bool>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    bottles: Vec<Bottle>,
    agents: Vec<u8>,
}

fn name(i: u8) -> &'static str {
    NAMES[usize::from(i) % NAMES.len()]
}

fuzz_target!(|input: Input| {
    let bottles: Vec<&Bottle> = input.bottles.iter().take(NAMES.len()).collect();
    let mut y = String::from("bottles:\n");
    for (i, b) in bottles.iter().enumerate() {
        let _ = writeln!(y, "  {}:", NAMES[i]);
        if !b.extends.is_empty() {
            if b.scalar {
                let _ = writeln!(y, "    extends: {}", name(b.extends[0]));
            } else {
                let list: Vec<&str> = b.extends.iter().take(6).map(|&e| name(e)).collect();
                let _ = writeln!(y, "    extends: [{}]", list.join(", "));
            }
        }
        if let Some(s) = b.supervise {
            let _ = writeln!(y, "    supervise: {s}");
        }
        if !b.env.is_empty() {
            y.push_str("    env:\n");
            for (k, v) in b.env.iter().take(4) {
                let _ = writeln!(y, "      K{}: \"v{}\"", k % 4, v);
            }
        }
        if !b.hosts.is_empty() {
            y.push_str("    egress:\n      routes:\n");
            for h in b.hosts.iter().take(4) {
                let _ = writeln!(
                    y,
                    "        - host: \"{}\"",
                    HOSTS[usize::from(*h) % HOSTS.len()]
                );
            }
        }
    }
    if !input.agents.is_empty() {
        y.push_str("agents:\n");
        for (i, a) in input.agents.iter().take(4).enumerate() {
            let _ = writeln!(y, "  a{i}:\n    bottle: {}", name(*a));
        }
    }
    let m = manifest::Manifest::from_yaml(Path::new("/fuzz/bot-bottle.yaml"), &y, None);
    let _ = m.check();

    // Oracle: walk the graph; a bottle that reaches a cycle or an undefined bottle must fail.
    let defined = bottles.len();
    let parents = |i: usize| -> Vec<usize> {
        let b = bottles[i];
        let list: Vec<u8> = if b.scalar {
            b.extends.iter().take(1).copied().collect()
        } else {
            b.extends.iter().take(6).copied().collect()
        };
        list.iter().map(|&e| usize::from(e) % NAMES.len()).collect()
    };
    fn broken(
        i: usize,
        defined: usize,
        stack: &mut Vec<usize>,
        parents: &dyn Fn(usize) -> Vec<usize>,
    ) -> bool {
        if i >= defined || stack.contains(&i) {
            return true;
        }
        stack.push(i);
        let bad = parents(i)
            .into_iter()
            .any(|p| broken(p, defined, stack, parents));
        stack.pop();
        bad
    }
    for i in 0..defined {
        if broken(i, defined, &mut Vec::new(), &parents) {
            assert!(
                m.bottle(NAMES[i]).is_err(),
                "bottle {} resolves despite a broken extends graph:\n{y}",
                NAMES[i]
            );
        }
    }
});
