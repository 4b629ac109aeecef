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
        }
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
