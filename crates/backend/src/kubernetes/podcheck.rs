//! The pod a bottle runs in, checked against the pod built for it.
//!
//! A launch does not always get the pod it asked for: agent-sandbox's controller adopts an
//! unowned pod of the Sandbox's name that carries `agents.x-k8s.io/adoptable: "true"` (or
//! the Sandbox's tracking label) instead of making one from the template
//! (`controllers/sandbox_controller.go:1328` at 2fd412d5), and never changes the spec of a
//! pod it adopts (`:1393`); so anyone allowed to create pods in the namespace could make
//! the bottle's pod beforehand, with another command, no packet filter or a host path. A
//! pod's image can also be patched after it was created. So `launch` compares the pod it
//! finds with the one it built, field by field, before it sends the bottle's Secret and
//! again once the agent runs, and refuses a pod that differs in anything that bounds the
//! agent: [`check`].
//!
//! Every field of the spec is compared, except those the API server, its admission
//! plugins or the scheduler fill in on every pod ([`SERVER_SET`]: scheduling, the service
//! account's name and pull secrets — its token is compared through
//! `automountServiceAccountToken` and the volumes —, priority, the runtime class's
//! overhead) and the defaults the API server writes into containers (image pull policy,
//! resize policy, termination message, probe thresholds). Quantities are compared by value
//! (`2000m` is `2`); a `false` that the API server's types leave out (`tty`, `readOnly`,
//! `hostNetwork`) is the field left out; a container's resources are compared only where
//! the built pod sets them, and without the `ephemeral-storage` a LimitRange adds. A field
//! set on the found pod that the built one leaves unset is a difference: fail closed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde_json::{Map, Value};

/// Pod spec fields that the API server, its admission plugins or the scheduler set on any
/// pod, none of which bounds the agent: not compared.
pub const SERVER_SET: &[&str] = &[
    "affinity",
    "dnsPolicy",
    // The service account admission copies the account's pull secrets.
    "imagePullSecrets",
    "nodeName",
    "nodeSelector",
    "overhead",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "schedulerName",
    "serviceAccount",
    "serviceAccountName",
    "tolerations",
];

/// Container fields the API server defaults on every container: not compared.
const CONTAINER_DEFAULTED: &[&str] = &[
    "imagePullPolicy",
    // Whether an in-place resize restarts the container (a resize needs `pods/resize`).
    "resizePolicy",
    "terminationMessagePath",
    "terminationMessagePolicy",
];

/// Fields that are a plain `bool` in the API server's types, written only when true: a
/// `false` is the field left out (never so for the optional ones such as
/// `automountServiceAccountToken`, whose absence means true).
const PLAIN_BOOLS: &[&str] = &[
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "readOnly",
    "stdin",
    "stdinOnce",
    "tty",
];

/// Resources a LimitRange adds to a container that sets others: ignored on the found pod
/// where the built one does not set them (they only bound the agent more).
const LIMIT_RANGE_ADDED: &[&str] = &["ephemeral-storage"];

/// The first field (a path such as `containers[agent].command`) in which `found` differs
/// from `built`, `None` when it is the pod built for the bottle.
pub fn difference(built: &PodSpec, found: &PodSpec) -> Option<String> {
    let built = fields(built);
    let mut found = fields(found);
    // Resources the built pod leaves to the namespace's LimitRange.
    found.retain(|k, _| !k.ends_with(".resources") || built.contains_key(k));
    let keys: std::collections::BTreeSet<&String> = built.keys().chain(found.keys()).collect();
    keys.into_iter()
        .find(|k| built.get(*k) != found.get(*k))
        .cloned()
}

/// Checks the pod found under the bottle's name against the pod built for it.
pub fn check(built: &Pod, found: &Pod, namespace: &str) -> Result<(), super::ClusterError> {
    let empty = PodSpec::default();
    let field = difference(
        built.spec.as_ref().unwrap_or(&empty),
        found.spec.as_ref().unwrap_or(&empty),
    );
    match field {
        None => Ok(()),
        Some(field) => Err(super::ClusterError::NotBuilt {
            pod: found.metadata.name.clone().unwrap_or_default(),
            namespace: namespace.to_owned(),
            field,
        }),
    }
}

/// The spec as (field path, normalized value): pod fields by name, each container's and
/// volume's by its name, and the lists of names themselves (so an added container is a
/// difference of `containers`).
fn fields(spec: &PodSpec) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Ok(Value::Object(mut spec)) = serde_json::to_value(spec) else {
        return out;
    };
    for key in SERVER_SET {
        spec.remove(*key);
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(Value::Array(items)) = spec.remove(list) else {
            continue;
        };
        let mut names = Vec::new();
        for item in items {
            let Value::Object(mut container) = item else {
                continue;
            };
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            for key in CONTAINER_DEFAULTED {
                container.remove(*key);
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(Value::Object(p)) = container.get_mut(probe) {
                    probe_defaults(p);
                }
            }
            if let Some(Value::Object(resources)) = container.get_mut("resources") {
                for kind in ["limits", "requests"] {
                    if let Some(Value::Object(q)) = resources.get_mut(kind) {
                        for name in LIMIT_RANGE_ADDED {
                            q.remove(*name);
                        }
                    }
                }
            }
            if let Some(Value::Object(sc)) = container.get_mut("securityContext")
                && sc.get("procMount").and_then(Value::as_str) == Some("Default")
            {
                sc.remove("procMount");
            }
            for (key, value) in container {
                if key == "name"
                    || (value == Value::Bool(false) && PLAIN_BOOLS.contains(&key.as_str()))
                {
                    continue;
                }
                let value = normalize(value);
                if !is_empty(&value) {
                    out.insert(format!("{list}[{name}].{key}"), value);
                }
            }
            names.push(Value::String(name));
        }
        if !names.is_empty() {
            out.insert(list.to_owned(), Value::Array(names));
        }
    }
    if let Some(Value::Array(volumes)) = spec.remove("volumes") {
        let mut names = Vec::new();
        for volume in volumes {
            let name = volume
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            out.insert(format!("volumes[{name}]"), normalize(volume));
            names.push(Value::String(name));
        }
        out.insert("volumes".to_owned(), Value::Array(names));
    }
    for (key, value) in spec {
        if value == Value::Bool(false) && PLAIN_BOOLS.contains(&key.as_str()) {
            continue;
        }
        let value = normalize(value);
        if !is_empty(&value) {
            out.insert(key, value);
        }
    }
    out
}

/// What the API server writes into a probe that leaves them unset.
fn probe_defaults(probe: &mut Map<String, Value>) {
    for (key, default) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        probe.entry(key).or_insert(Value::from(default));
    }
}

/// Drops empty values (the API server omits them) and writes quantities by value.
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let value = match (key.as_str(), value) {
                    ("limits" | "requests", Value::Object(q)) => {
                        Value::Object(q.into_iter().map(|(k, v)| (k, quantity_value(v))).collect())
                    }
                    ("sizeLimit", v) => quantity_value(v),
                    (k, Value::Bool(false)) if PLAIN_BOOLS.contains(&k) => Value::Null,
                    (_, v) => normalize(v),
                };
                if !is_empty(&value) {
                    out.insert(key, value);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A quantity as its value in units of 10⁻⁹ (its text when it is not one).
fn quantity_value(value: Value) -> Value {
    match value.as_str().and_then(quantity_nanos) {
        Some(n) => Value::String(format!("{n}n")),
        None => value,
    }
}

/// The value of a Kubernetes quantity (`2`, `1500m`, `512Mi`, `1e3`, `0.5`) in units of
/// 10⁻⁹, exactly; `None` for what is not one.
pub fn quantity_nanos(text: &str) -> Option<i128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 9
    {
        return None;
    }
    // The number in units of 10⁻⁹.
    let mut nanos: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse::<i128>().ok()?.checked_mul(1_000_000_000)?
    };
    if !fraction.is_empty() {
        let digits: i128 = fraction.parse().ok()?;
        nanos = nanos.checked_add(digits * 10i128.pow(9 - fraction.len() as u32))?;
    }
    let scale = |n: i128, by: i128| n.checked_mul(by);
    let divide = |n: i128, by: i128| (n % by == 0).then(|| n / by);
    let value = match suffix {
        "" => Some(nanos),
        "n" => divide(nanos, 1_000_000_000),
        "u" => divide(nanos, 1_000_000),
        "m" => divide(nanos, 1_000),
        "k" => scale(nanos, 1_000),
        "M" => scale(nanos, 1_000_000),
        "G" => scale(nanos, 1_000_000_000),
        "T" => scale(nanos, 1_000_000_000_000),
        "P" => scale(nanos, 1_000_000_000_000_000),
        "E" => scale(nanos, 1_000_000_000_000_000_000),
        "Ki" => scale(nanos, 1 << 10),
        "Mi" => scale(nanos, 1 << 20),
        "Gi" => scale(nanos, 1 << 30),
        "Ti" => scale(nanos, 1 << 40),
        "Pi" => scale(nanos, 1 << 50),
        "Ei" => scale(nanos, 1 << 60),
        s => {
            let exponent: i32 = s.strip_prefix(['e', 'E'])?.parse().ok()?;
            if exponent >= 0 {
                scale(nanos, 10i128.checked_pow(u32::try_from(exponent).ok()?)?)
            } else {
                divide(nanos, 10i128.checked_pow(exponent.unsigned_abs())?)
            }
        }
    }?;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kubernetes::objects::{bottle_objects, tests::plan};
    use pretty_assertions::assert_eq;

    fn built() -> Pod {
        bottle_objects(&plan()).unwrap().pod
    }

    #[test]
    fn quantities_are_compared_by_value() {
        assert_eq!(quantity_nanos("2"), quantity_nanos("2000m"));
        assert_eq!(quantity_nanos("512Mi"), quantity_nanos("536870912"));
        assert_eq!(quantity_nanos("1e3"), quantity_nanos("1k"));
        assert_eq!(quantity_nanos("0.5"), quantity_nanos("500m"));
        assert_eq!(quantity_nanos("1.5Gi"), quantity_nanos("1536Mi"));
        assert_ne!(quantity_nanos("1"), quantity_nanos("1Ki"));
        assert_eq!(quantity_nanos("12x"), None);
        assert_eq!(quantity_nanos(""), None);
        assert_eq!(quantity_nanos("1m"), Some(1_000_000));
    }

    /// `pod` as an API server stores and serves it: its defaults written in, quantities in
    /// other spellings of their values, scheduled, a LimitRange's defaults where the pod
    /// sets no resources.
    pub(crate) fn as_the_api_server_stores_it(pod: &Pod) -> serde_json::Value {
        let mut stored = serde_json::to_value(pod).unwrap();
        stored["metadata"]["uid"] = "u-1".into();
        stored["metadata"]["resourceVersion"] = "7".into();
        let spec = &mut stored["spec"];
        spec["dnsPolicy"] = "ClusterFirst".into();
        spec["schedulerName"] = "default-scheduler".into();
        spec["serviceAccountName"] = "default".into();
        spec["serviceAccount"] = "default".into();
        spec["nodeName"] = "node-1".into();
        spec["priority"] = 0.into();
        spec["preemptionPolicy"] = "PreemptLowerPriority".into();
        spec["tolerations"] = serde_json::json!([{
            "key": "node.kubernetes.io/not-ready", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300,
        }]);
        spec["overhead"] = serde_json::json!({"cpu": "250m"});
        spec["nodeSelector"] = serde_json::json!({"runtime": "gvisor"});
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array_mut().unwrap() {
                c["imagePullPolicy"] = "IfNotPresent".into();
                c["terminationMessagePath"] = "/dev/termination-log".into();
                c["terminationMessagePolicy"] = "File".into();
                if c["resources"].is_null() {
                    c["resources"] = serde_json::json!({"limits": {"cpu": "500m"}});
                }
                for probe in ["startupProbe", "readinessProbe"] {
                    if c[probe].is_object() {
                        for (key, default) in [("timeoutSeconds", 1), ("successThreshold", 1)] {
                            c[probe][key] = default.into();
                        }
                        if c[probe]["failureThreshold"].is_null() {
                            c[probe]["failureThreshold"] = 3.into();
                        }
                    }
                }
            }
        }
        // Go's plain booleans left out when false; the service account's pull secrets.
        spec["imagePullSecrets"] = serde_json::json!([{"name": "registry"}]);
        omit_false(spec);
        for c in spec["containers"].as_array_mut().unwrap() {
            c["resizePolicy"] = serde_json::json!([
                {"resourceName": "cpu", "restartPolicy": "NotRequired"},
                {"resourceName": "memory", "restartPolicy": "NotRequired"},
            ]);
            // A LimitRange's default for what the container does not set.
            c["resources"]["limits"]["ephemeral-storage"] = "1Gi".into();
            c["resources"]["requests"]["ephemeral-storage"] = "1Gi".into();
        }
        let agent = &mut spec["containers"][0];
        // The built `1500m` and `2147483648` as other spellings of the same values.
        let nanos = |v: &serde_json::Value| quantity_nanos(v.as_str().unwrap()).unwrap();
        let millis = nanos(&agent["resources"]["limits"]["cpu"]) / 1_000_000;
        let mebibytes = (nanos(&agent["resources"]["limits"]["memory"]) / 1_000_000_000) >> 20;
        for kind in ["limits", "requests"] {
            agent["resources"][kind]["cpu"] =
                format!("{}.{:03}", millis / 1000, millis % 1000).into();
            agent["resources"][kind]["memory"] = format!("{mebibytes}Mi").into();
        }
        stored["status"] = serde_json::json!({"phase": "Running"});
        stored
    }

    /// Leaves out, as Go's `omitempty` does, the plain booleans that are false.
    fn omit_false(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.retain(|k, v| {
                    !(PLAIN_BOOLS.contains(&k.as_str()) && *v == serde_json::Value::Bool(false))
                });
                map.values_mut().for_each(omit_false);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(omit_false),
            _ => {}
        }
    }

    /// The pod as an API server stores it is the pod built.
    #[test]
    fn the_pod_as_the_api_server_stores_it_is_the_pod_built() {
        let built = built();
        let stored: Pod = serde_json::from_value(as_the_api_server_stores_it(&built)).unwrap();
        assert_eq!(
            difference(built.spec.as_ref().unwrap(), stored.spec.as_ref().unwrap()),
            None
        );
        check(&built, &stored, "agents").unwrap();
    }

    /// Each field that bounds the agent, changed on the found pod, is named.
    #[test]
    fn each_field_that_bounds_the_agent_is_named_when_it_differs() {
        let built = built();
        type Change = fn(&mut serde_json::Value);
        let cases: Vec<(&str, Change)> = vec![
            ("containers[agent].image", |s| {
                s["containers"][0]["image"] = "evil/agent:1".into()
            }),
            ("containers[agent].command", |s| {
                s["containers"][0]["command"] = serde_json::json!(["/bin/sh", "-c", "curl x"])
            }),
            ("containers[agent].env", |s| {
                s["containers"][0]["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"name": "LD_PRELOAD", "value": "/tmp/x.so"}))
            }),
            ("containers[agent].securityContext", |s| {
                s["containers"][0]["securityContext"]["privileged"] = true.into()
            }),
            ("containers[agent].resources", |s| {
                s["containers"][0]["resources"]["limits"]["memory"] = "64Gi".into()
            }),
            ("containers[agent].volumeMounts", |s| {
                s["containers"][0]["volumeMounts"][0]["readOnly"] = true.into()
            }),
            ("containers[agent].lifecycle", |s| {
                s["containers"][0]["lifecycle"] =
                    serde_json::json!({"postStart": {"exec": {"command": ["sh"]}}})
            }),
            (
                "containers[agent].ports",
                |s| {
                    s["containers"][0]["ports"] =
                        serde_json::json!([{"containerPort": 22, "hostPort": 2222}])
                },
            ),
            ("containers", |s| {
                s["containers"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"name": "miner", "image": "evil/miner"}))
            }),
            (
                "ephemeralContainers",
                |s| {
                    s["ephemeralContainers"] =
                        serde_json::json!([{"name": "debug", "image": "busybox"}])
                },
            ),
            ("initContainers", |s| {
                s["initContainers"].as_array_mut().unwrap().remove(0);
            }),
            ("initContainers[network].command", |s| {
                s["initContainers"][0]["command"] = serde_json::json!(["true"])
            }),
            ("initContainers[sidecar].image", |s| {
                s["initContainers"][1]["image"] = "evil/sidecar".into()
            }),
            ("runtimeClassName", |s| {
                s.as_object_mut().unwrap().remove("runtimeClassName");
            }),
            ("automountServiceAccountToken", |s| {
                s["automountServiceAccountToken"] = true.into()
            }),
            ("shareProcessNamespace", |s| {
                s["shareProcessNamespace"] = true.into()
            }),
            ("hostNetwork", |s| s["hostNetwork"] = true.into()),
            ("hostPID", |s| s["hostPID"] = true.into()),
            ("hostUsers", |s| s["hostUsers"] = true.into()),
            (
                "securityContext",
                |s| {
                    s["securityContext"]["sysctls"] =
                        serde_json::json!([{"name": "net.ipv4.ip_forward", "value": "1"}])
                },
            ),
            ("volumes", |s| {
                s["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({
                        "name": "host", "hostPath": {"path": "/"},
                    }))
            }),
            ("volumes[home]", |s| {
                let home = s["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|v| v["name"] == "home")
                    .unwrap();
                *home = serde_json::json!({"name": "home", "hostPath": {"path": "/root"}});
            }),
            ("volumes[sidecar]", |s| {
                s["volumes"][0]["secret"]["defaultMode"] = 0o666.into()
            }),
        ];
        for (field, change) in cases {
            let mut found = serde_json::to_value(built.spec.as_ref().unwrap()).unwrap();
            change(&mut found);
            let found: PodSpec = serde_json::from_value(found).unwrap();
            assert_eq!(
                difference(built.spec.as_ref().unwrap(), &found).as_deref(),
                Some(field),
                "changing {field}"
            );
        }
    }
}
