//! SARIF output: the official schema cannot be fetched here, so this checks the properties
//! SARIF 2.1.0 requires and those GitHub code scanning relies on, plus redaction.

use pretty_assertions::assert_eq;
use scan::{Scanner, render_sarif};
use serde_json::Value;

use super::github_token;

fn check_sarif(doc: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut need = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_string());
        }
    };
    need(doc["version"] == "2.1.0", "version must be 2.1.0");
    need(doc["$schema"].is_string(), "$schema should name the schema");
    let runs = doc["runs"].as_array().cloned().unwrap_or_default();
    need(!runs.is_empty(), "runs must be a non-empty array");
    for run in &runs {
        let driver = &run["tool"]["driver"];
        need(driver["name"].is_string(), "tool.driver.name is required");
        let rules = driver["rules"].as_array().cloned().unwrap_or_default();
        for rule in &rules {
            need(rule["id"].is_string(), "every rule needs an id");
            need(
                rule["shortDescription"]["text"].is_string(),
                "rule shortDescription.text must be a string",
            );
            let level = rule["defaultConfiguration"]["level"].as_str().unwrap_or("");
            need(
                ["none", "note", "warning", "error"].contains(&level),
                "defaultConfiguration.level must be a SARIF level",
            );
        }
        let results = run["results"].as_array().cloned().unwrap_or_default();
        need(run["results"].is_array(), "results must be an array");
        for r in &results {
            need(
                r["message"]["text"].is_string(),
                "result.message.text is required",
            );
            let rule_id = r["ruleId"].as_str().unwrap_or("");
            need(!rule_id.is_empty(), "result.ruleId");
            if let Some(i) = r["ruleIndex"].as_u64() {
                need(
                    rules
                        .get(i as usize)
                        .is_some_and(|rule| rule["id"] == rule_id),
                    "ruleIndex must point at the rule with ruleId",
                );
            }
            need(
                ["none", "note", "warning", "error"].contains(&r["level"].as_str().unwrap_or("")),
                "result.level must be a SARIF level",
            );
            let locs = r["locations"].as_array().cloned().unwrap_or_default();
            need(!locs.is_empty(), "GitHub needs at least one location");
            for l in &locs {
                let pl = &l["physicalLocation"];
                let uri = pl["artifactLocation"]["uri"].as_str().unwrap_or("");
                need(
                    !uri.is_empty() && !uri.starts_with("./"),
                    "artifactLocation.uri",
                );
                need(!uri.contains(' '), "uri must be percent-encoded");
                need(
                    pl["region"]["startLine"].as_u64().is_some_and(|n| n >= 1),
                    "region.startLine >= 1",
                );
                need(
                    pl["region"]["startColumn"].as_u64().is_some_and(|n| n >= 1),
                    "region.startColumn >= 1",
                );
            }
            if let Some(pf) = r["partialFingerprints"].as_object() {
                need(
                    pf.values().all(Value::is_string),
                    "partialFingerprints are strings",
                );
            }
        }
    }
    problems
}

#[test]
fn sarif_has_the_required_structure_and_redacts() {
    let s = Scanner::builtin().unwrap();
    let gh = github_token();
    let findings = s.scan_bytes(
        "src/my file.py",
        format!("a = 1\ntoken = \"{gh}\"\n").as_bytes(),
    );
    assert_eq!(findings.len(), 1);
    let text = render_sarif(&findings, &s.rule_infos(), true, "0.1.0");
    assert!(!text.contains(&gh), "secret leaked into SARIF");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(check_sarif(&doc), Vec::<String>::new());
    let result = &doc["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "github-pat");
    assert_eq!(
        result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "src/my%20file.py"
    );
    assert_eq!(
        result["locations"][0]["physicalLocation"]["region"]["startLine"],
        2
    );
    assert_eq!(result["properties"]["secret"], "REDACTED");

    let shown = render_sarif(&findings, &s.rule_infos(), false, "0.1.0");
    assert!(shown.contains(&gh));
}

#[test]
fn empty_sarif_is_still_valid() {
    let s = Scanner::builtin().unwrap();
    let doc: Value =
        serde_json::from_str(&render_sarif(&[], &s.rule_infos(), true, "0.1.0")).unwrap();
    assert_eq!(check_sarif(&doc), Vec::<String>::new());
    assert_eq!(doc["runs"][0]["results"], Value::Array(vec![]));
}
