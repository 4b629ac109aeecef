//! Every `extends` error case: each names the file, line, column and the bottle.

use manifest::ManifestError;
use pretty_assertions::assert_eq;

use super::{errors, manifest};

#[test]
fn extends_not_a_string_or_list() {
    let yaml = "bottles:\n  a: {extends: 3}\n  b:\n    extends: {x: 1}\n  c: {extends: true}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:2:16: bottle `a`: extends must be a bottle name or a list of bottle names, found a number",
            "m.yaml:4:14: bottle `b`: extends must be a bottle name or a list of bottle names, found a mapping",
            "m.yaml:5:16: bottle `c`: extends must be a bottle name or a list of bottle names, found a boolean",
        ]
    );
}

#[test]
fn extends_entry_not_a_string_names_its_index() {
    let yaml = "bottles:\n  base: {}\n  a:\n    extends: [base, 7, [x], {y: 1}]\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:4:21: bottle `a`: extends[1] must be a bottle name (a string), found a number",
            "m.yaml:4:24: bottle `a`: extends[2] must be a bottle name (a string), found a list",
            "m.yaml:4:29: bottle `a`: extends[3] must be a bottle name (a string), found a mapping",
        ]
    );
}

#[test]
fn undefined_parent_lists_available_bottles() {
    let yaml = "bottles:\n  net: {}\n  base: {}\n  dev:\n    extends: [base, ghost]\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:5:21: bottle `dev`: extends `ghost`, which is not defined; available bottles: base, dev, net",
        ]
    );
}

#[test]
fn self_reference_string_and_list() {
    let yaml = "bottles:\n  a: {extends: a}\n  b: {extends: [a, b]}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:2:16: bottle `a`: extends itself; remove the self-reference",
            "m.yaml:3:20: bottle `b`: extends itself; remove the self-reference",
        ]
    );
}

#[test]
fn two_bottle_cycle_prints_the_chain_once() {
    let yaml = "bottles:\n  a: {extends: b}\n  b: {extends: a}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:3:16: bottle `b`: extends cycle: a -> b -> a; remove one of these `extends` entries"
        ]
    );
}

#[test]
fn cycle_through_a_later_list_edge() {
    let yaml = "bottles:\n  base: {}\n  a: {extends: [base, c]}\n  b: {extends: [base]}\n  c: {extends: [b, a]}\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:5:20: bottle `c`: extends cycle: a -> c -> a; remove one of these `extends` entries"
        ]
    );
}

#[test]
fn three_bottle_cycle_and_bottles_beside_it() {
    let yaml = "bottles:\n  ok: {}\n  x: {extends: y}\n  y: {extends: z}\n  z: {extends: x}\n  w: {extends: [ok, z]}\n";
    let m = manifest(yaml);
    let rendered: Vec<String> = m.errors().iter().map(|d| d.to_string()).collect();
    assert_eq!(
        rendered,
        vec![
            "m.yaml:5:16: bottle `z`: extends cycle: x -> y -> z -> x; remove one of these `extends` entries"
        ]
    );
    assert!(m.bottle("ok").is_ok());
    // A bottle on top of a cycle fails with the cycle's error.
    assert_eq!(
        m.bottle("w"),
        Err(ManifestError::Invalid {
            path: "m.yaml".into(),
            errors: m.errors().to_vec(),
        })
    );
}

#[test]
fn different_routes_for_one_host_from_two_parents() {
    let yaml = r#"
bottles:
  p1: {egress: {routes: [{host: api.example.com, auth_scheme: Bearer, token_env: A}]}}
  p2: {egress: {routes: [{host: API.example.com, auth_scheme: Bearer, token_env: B}]}}
  child:
    extends: [p1, p2]
"#;
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:6:19: bottle `child`: two different routes for host `API.example.com`, from \
             bottle `p1` and bottle `p2`; keep one route per host (put alternatives under its \
             `matches`) or make them identical"
        ]
    );
}

#[test]
fn child_route_differing_from_parent_route() {
    let yaml = r#"
bottles:
  base: {egress: {routes: [{host: crates.io}]}}
  child:
    extends: base
    egress:
      routes: [{host: crates.io, port: 8443}]
"#;
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:7:7: bottle `child`: two different routes for host `crates.io`, from \
             bottle `base` and bottle `child`; keep one route per host (put alternatives under \
             its `matches`) or make them identical"
        ]
    );
}

#[test]
fn diamond_with_differing_routes_names_both_sides() {
    let yaml = r#"
bottles:
  base: {egress: {routes: [{host: a.example.com}]}}
  left: {extends: base, egress: {routes: [{host: x.example.com, port: 1}]}}
  right: {extends: base, egress: {routes: [{host: x.example.com, port: 2}]}}
  child: {extends: [left, right]}
"#;
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:6:27: bottle `child`: two different routes for host `x.example.com`, from \
             bottle `left` and bottle `right`; keep one route per host (put alternatives under \
             its `matches`) or make them identical"
        ]
    );
}

#[test]
fn one_bottle_with_two_different_routes_for_a_host() {
    let yaml = "bottles:\n  a:\n    egress:\n      routes: [{host: h.example.com}, {host: h.example.com, port: 80}]\n";
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:4:7: bottle `a`: two different routes for host `h.example.com`, both from \
             bottle `a`; keep one route per host (put alternatives under its `matches`) or make \
             them identical"
        ]
    );
}

#[test]
fn every_error_is_listed_not_just_the_first() {
    let yaml = "bottles:\n  a: {extends: 1}\n  b: {extends: b}\n  c: {extends: nope}\n  d: {extends: [2]}\n";
    assert_eq!(errors(yaml).len(), 4);
}

#[test]
fn routes_are_checked_as_the_egress_proxy_checks_them() {
    let yaml = r#"
bottles:
  b:
    egress:
      routes:
        - host: "bad host"
        - host: ok.example.com
          matches: [{methods: [get], paths: [{type: prefix, value: nope}]}]
"#;
    assert_eq!(
        errors(yaml),
        vec![
            "m.yaml:5:7: bottle `b`: egress.routes[0] (bad host): host \"bad host\" is invalid: not a valid host name (letters, digits, `-` and `.` only)",
            "m.yaml:5:7: bottle `b`: egress.routes[1] (ok.example.com): path \"nope\" is invalid; paths start with / and contain no spaces",
            "m.yaml:5:7: bottle `b`: egress.routes[1] (ok.example.com): method \"get\" is invalid; write methods in upper case, e.g. GET",
        ]
    );
}
