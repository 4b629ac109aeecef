//! Where on a cluster bottles run: the manifest's `kubernetes:` block (namespace, runtime
//! class, registry) plus the kubeconfig context, validated before anything is sent.

/// The cluster settings of a bottle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The kubeconfig context; the current one when `None`.
    pub context: Option<String>,
    /// The namespace; the context's (else `default`) when `None`.
    pub namespace: Option<String>,
    /// The pod's `runtimeClassName` (`gvisor`, `kata`, ...); the cluster's default when `None`.
    pub runtime_class: Option<String>,
    /// The registry the agent and sidecar images are pushed to and pulled from
    /// (`registry.example.com/team`); `None`: images are referenced by their local names,
    /// which only a cluster that shares the local image store (kind, minikube) can pull.
    pub registry: Option<String>,
    /// The size of the PersistentVolumeClaim that keeps the agent's home for `resume`
    /// (`10Gi`); the home is an `emptyDir` that goes with the pod when `None`.
    pub home_size: Option<String>,
    /// The StorageClass of that claim; the cluster's default when `None`.
    pub storage_class: Option<String>,
    /// `kubernetes.sandbox`: `Some(true)` runs the bottle as an agent-sandbox `Sandbox` and
    /// fails where the cluster does not serve that API; `Some(false)` runs a plain pod;
    /// `None` runs a `Sandbox` where the API is served, a pod otherwise.
    pub sandbox: Option<bool>,
}

impl ClusterSettings {
    /// Checks every value; the error names the field and what a valid value looks like.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(ns) = &self.namespace {
            dns_label(ns).map_err(|why| {
                format!("kubernetes.namespace `{ns}` {why}; use a namespace name like `agents`")
            })?;
        }
        if let Some(rc) = &self.runtime_class {
            dns_subdomain(rc).map_err(|why| {
                format!(
                    "kubernetes.runtime_class `{rc}` {why}; use a RuntimeClass name like `gvisor` (`kubectl get runtimeclass` lists them)"
                )
            })?;
        }
        if let Some(registry) = &self.registry {
            registry_ref(registry).map_err(|why| {
                format!(
                    "kubernetes.registry `{registry}` {why}; write it as an image name prefix like `registry.example.com/team` (no scheme, no tag)"
                )
            })?;
        }
        if let Some(size) = &self.home_size {
            quantity(size).map_err(|why| {
                format!(
                    "kubernetes.home_size `{size}` {why}; write a storage size like `10Gi` or `500Mi`"
                )
            })?;
        }
        if let Some(class) = &self.storage_class {
            dns_subdomain(class).map_err(|why| {
                format!(
                    "kubernetes.storage_class `{class}` {why}; use a StorageClass name like `standard` (`kubectl get storageclass` lists them)"
                )
            })?;
            if self.home_size.is_none() {
                return Err(format!(
                    "kubernetes.storage_class `{class}` is set but kubernetes.home_size is not; the class is for the home's claim: set `home_size` (like `10Gi`) or remove `storage_class`"
                ));
            }
        }
        Ok(())
    }

    /// The name the cluster pulls a locally built image under.
    pub fn image_ref(&self, local: &str) -> String {
        match &self.registry {
            Some(registry) => format!("{}/{local}", registry.trim_end_matches('/')),
            None => local.to_owned(),
        }
    }
}

/// RFC 1123 label: 1–63 of `a-z0-9-`, alphanumeric at both ends.
pub fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters long");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may hold only lowercase letters, digits and `-`");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// RFC 1123 subdomain: labels joined by `.`, at most 253 characters.
pub fn dns_subdomain(s: &str) -> Result<(), &'static str> {
    if s.len() > 253 {
        return Err("is longer than 253 characters");
    }
    s.split('.').try_for_each(dns_label)
}

/// A storage quantity as a claim asks for one: digits, then a binary or decimal suffix.
pub fn quantity(s: &str) -> Result<(), &'static str> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 18 {
        return Err("does not start with a whole number");
    }
    if s[..digits].bytes().all(|b| b == b'0') {
        return Err("is zero");
    }
    match &s[digits..] {
        "" | "k" | "M" | "G" | "T" | "P" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" => Ok(()),
        _ => Err("has a unit other than Ki, Mi, Gi, Ti, Pi (or k, M, G, T, P)"),
    }
}

fn registry_ref(s: &str) -> Result<(), &'static str> {
    if s.contains("://") {
        return Err("has a scheme");
    }
    if s.is_empty() || s.starts_with('/') || s.contains("//") {
        return Err("is not an image name prefix");
    }
    if s.contains('@')
        || s.rsplit('/').next().is_some_and(|last| last.contains(':')) && s.contains('/')
    {
        return Err("has a tag or digest");
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"-._/:".contains(&b);
    if !s.bytes().all(ok) {
        return Err("has characters an image name cannot hold");
    }
    // Path components (after the host) are lowercase in image names.
    if let Some((_, path)) = s.split_once('/')
        && path.bytes().any(|b| b.is_ascii_uppercase())
    {
        return Err("has uppercase letters in its path");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(namespace: &str, runtime_class: &str, registry: &str) -> ClusterSettings {
        ClusterSettings {
            context: None,
            namespace: Some(namespace.into()),
            runtime_class: Some(runtime_class.into()),
            registry: Some(registry.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_home_claims_size_and_class_are_checked_with_the_fix() {
        let mut s = with("agents", "gvisor", "r.example");
        s.home_size = Some("10Gi".into());
        s.storage_class = Some("fast-ssd".into());
        assert_eq!(s.validate(), Ok(()));
        for (bad, why) in [
            ("10GB", "has a unit other than"),
            ("Gi", "does not start with a whole number"),
            ("0Gi", "is zero"),
            ("1.5Gi", "has a unit other than"),
        ] {
            s.home_size = Some(bad.into());
            let e = s.validate().unwrap_err();
            assert!(
                e.starts_with(&format!("kubernetes.home_size `{bad}` {why}")),
                "{e}"
            );
            assert!(e.ends_with("like `10Gi` or `500Mi`"), "{e}");
        }
        s.home_size = None;
        let e = s.validate().unwrap_err();
        assert!(
            e.contains(
                "kubernetes.storage_class `fast-ssd` is set but kubernetes.home_size is not"
            ),
            "{e}"
        );
        s.storage_class = Some("Fast".into());
        s.home_size = Some("1Gi".into());
        assert!(
            s.validate()
                .unwrap_err()
                .starts_with("kubernetes.storage_class `Fast` may hold only lowercase")
        );
    }

    #[test]
    fn good_settings_pass_and_images_get_the_registry_prefix() {
        let s = with("agents", "gvisor", "registry.example.com:5000/team");
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(
            s.image_ref("bot-bottle/sidecar:0123"),
            "registry.example.com:5000/team/bot-bottle/sidecar:0123"
        );
        assert_eq!(
            ClusterSettings::default().image_ref("bot-bottle/sidecar:0123"),
            "bot-bottle/sidecar:0123"
        );
    }

    #[test]
    fn bad_settings_name_the_field_and_the_fix() {
        let e = with("Agents", "gvisor", "r.example")
            .validate()
            .unwrap_err();
        assert!(
            e.starts_with("kubernetes.namespace `Agents` may hold only lowercase"),
            "{e}"
        );
        let e = with("agents", "-kata", "r.example").validate().unwrap_err();
        assert!(
            e.starts_with("kubernetes.runtime_class `-kata` must start"),
            "{e}"
        );
        for bad in [
            "https://r.example/team",
            "r.example/team:v1",
            "r.example/Team",
            "r example",
        ] {
            let e = with("agents", "kata", bad).validate().unwrap_err();
            assert!(
                e.starts_with(&format!("kubernetes.registry `{bad}`")),
                "{e}"
            );
        }
        let long = "a".repeat(64);
        assert!(with(&long, "kata", "r.example").validate().is_err());
    }
}
