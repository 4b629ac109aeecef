//! gitleaks' default rule ids, each mapped to the built-in rules of ours that find the same
//! kind of secret.
//!
//! Why: a `.gitleaks.toml` with `[extend] useDefault = true` names gitleaks' default rules by id
//! (to allowlist a false positive, disable a rule, target a global allowlist). Our built-in set
//! is written for this project and its ids differ, so such a file would otherwise name rules
//! that do not exist. An id maps to every rule of ours that covers its kind; an id whose kind
//! we have no rule for maps to nothing (an override of it is a warning, not an error). The
//! table is ours: it lists ids only, never gitleaks' patterns.
//!
//! The README's "coming from gitleaks" section points here; this table is the documentation
//! of the mapping.

/// gitleaks 8.30 default rule id → our built-in rule ids (empty: no rule of ours covers it).
pub const GITLEAKS_DEFAULT_IDS: &[(&str, &[&str])] = &[
    ("1password-secret-key", &[]),
    ("1password-service-account-token", &[]),
    ("adafruit-api-key", &["adafruit-io-key"]),
    ("adobe-client-id", &[]),
    ("adobe-client-secret", &[]),
    ("age-secret-key", &["age-secret-key"]),
    ("airtable-api-key", &[]),
    ("airtable-personnal-access-token", &[]),
    ("algolia-api-key", &[]),
    ("alibaba-access-key-id", &[]),
    ("alibaba-secret-key", &[]),
    ("anthropic-admin-api-key", &["anthropic-api-key"]),
    ("anthropic-api-key", &["anthropic-api-key"]),
    ("artifactory-api-key", &["artifactory-api-key"]),
    ("artifactory-reference-token", &["artifactory-api-key"]),
    ("asana-client-id", &[]),
    ("asana-client-secret", &[]),
    ("atlassian-api-token", &["atlassian-api-token"]),
    ("authress-service-client-access-key", &[]),
    ("aws-access-token", &["aws-access-key-id"]),
    ("aws-amazon-bedrock-api-key-long-lived", &[]),
    ("aws-amazon-bedrock-api-key-short-lived", &[]),
    ("azure-ad-client-secret", &[]),
    ("beamer-api-token", &[]),
    ("bitbucket-client-id", &[]),
    ("bitbucket-client-secret", &["bitbucket-app-password"]),
    ("bittrex-access-key", &[]),
    ("bittrex-secret-key", &[]),
    ("cisco-meraki-api-key", &[]),
    ("clickhouse-cloud-api-secret-key", &[]),
    ("clojars-api-token", &[]),
    ("cloudflare-api-key", &[]),
    ("cloudflare-global-api-key", &[]),
    ("cloudflare-origin-ca-key", &[]),
    ("codecov-access-token", &[]),
    ("cohere-api-token", &[]),
    ("coinbase-access-token", &[]),
    ("confluent-access-token", &[]),
    ("confluent-secret-key", &[]),
    ("contentful-delivery-api-token", &[]),
    (
        "curl-auth-header",
        &["generic-bearer-token", "generic-basic-auth"],
    ),
    ("curl-auth-user", &["generic-cli-credentials"]),
    ("databricks-api-token", &["databricks-token"]),
    ("datadog-access-token", &[]),
    ("defined-networking-api-token", &[]),
    ("digitalocean-access-token", &["digitalocean-token"]),
    ("digitalocean-pat", &["digitalocean-token"]),
    ("digitalocean-refresh-token", &["digitalocean-token"]),
    ("discord-api-token", &[]),
    ("discord-client-id", &[]),
    ("discord-client-secret", &[]),
    ("doppler-api-token", &["doppler-token"]),
    ("droneci-access-token", &[]),
    ("dropbox-api-token", &[]),
    ("dropbox-long-lived-api-token", &[]),
    (
        "dropbox-short-lived-api-token",
        &["dropbox-short-lived-token"],
    ),
    ("duffel-api-token", &[]),
    ("dynatrace-api-token", &[]),
    ("easypost-api-token", &[]),
    ("easypost-test-api-token", &[]),
    ("etsy-access-token", &[]),
    ("facebook-access-token", &["facebook-access-token"]),
    ("facebook-page-access-token", &["facebook-access-token"]),
    ("facebook-secret", &["facebook-app-secret"]),
    ("fastly-api-token", &[]),
    ("finicity-api-token", &[]),
    ("finicity-client-secret", &[]),
    ("finnhub-access-token", &[]),
    ("flickr-access-token", &[]),
    ("flutterwave-encryption-key", &[]),
    ("flutterwave-public-key", &[]),
    ("flutterwave-secret-key", &[]),
    ("flyio-access-token", &[]),
    ("frameio-api-token", &[]),
    ("freemius-secret-key", &[]),
    ("freshbooks-access-token", &[]),
    ("gcp-api-key", &["gcp-api-key"]),
    (
        "generic-api-key",
        &[
            "generic-secret",
            "generic-password",
            "generic-password-in-prose",
            "generic-config-password",
            "generic-url-query-token",
            "generic-connection-string-password",
        ],
    ),
    ("github-app-token", &["github-app-token"]),
    ("github-fine-grained-pat", &["github-fine-grained-pat"]),
    ("github-oauth", &["github-oauth-token"]),
    ("github-pat", &["github-pat"]),
    ("github-refresh-token", &["github-app-token"]),
    ("gitlab-cicd-job-token", &["gitlab-token"]),
    ("gitlab-deploy-token", &["gitlab-token"]),
    ("gitlab-feature-flag-client-token", &["gitlab-token"]),
    ("gitlab-feed-token", &["gitlab-token"]),
    ("gitlab-incoming-mail-token", &["gitlab-token"]),
    ("gitlab-kubernetes-agent-token", &["gitlab-token"]),
    ("gitlab-oauth-app-secret", &["gitlab-token"]),
    ("gitlab-pat", &["gitlab-pat"]),
    ("gitlab-pat-routable", &["gitlab-pat"]),
    ("gitlab-ptt", &["gitlab-token"]),
    ("gitlab-rrt", &["gitlab-token"]),
    ("gitlab-runner-authentication-token", &["gitlab-token"]),
    (
        "gitlab-runner-authentication-token-routable",
        &["gitlab-token"],
    ),
    ("gitlab-scim-token", &["gitlab-token"]),
    ("gitlab-session-cookie", &["gitlab-token"]),
    ("gitter-access-token", &[]),
    ("gocardless-api-token", &[]),
    ("grafana-api-key", &["grafana-token"]),
    ("grafana-cloud-api-token", &["grafana-token"]),
    ("grafana-service-account-token", &["grafana-token"]),
    ("harness-api-key", &[]),
    ("hashicorp-tf-api-token", &["terraform-cloud-token"]),
    ("hashicorp-tf-password", &[]),
    ("heroku-api-key", &[]),
    ("heroku-api-key-v2", &[]),
    ("hubspot-api-key", &[]),
    ("huggingface-access-token", &["huggingface-token"]),
    ("huggingface-organization-api-token", &["huggingface-token"]),
    ("infracost-api-token", &[]),
    ("intercom-api-key", &[]),
    ("intra42-client-secret", &[]),
    ("jfrog-api-key", &["artifactory-api-key"]),
    ("jfrog-identity-token", &[]),
    ("jwt", &["jwt"]),
    ("jwt-base64", &["jwt"]),
    ("kraken-access-token", &[]),
    (
        "kubernetes-secret-yaml",
        &["kubernetes-bootstrap-token-secret"],
    ),
    ("kucoin-access-token", &[]),
    ("kucoin-secret-key", &[]),
    ("launchdarkly-access-token", &[]),
    ("linear-api-key", &["linear-api-key"]),
    ("linear-client-secret", &[]),
    ("linkedin-client-id", &[]),
    ("linkedin-client-secret", &[]),
    ("lob-api-key", &[]),
    ("lob-pub-api-key", &[]),
    ("looker-client-id", &[]),
    ("looker-client-secret", &[]),
    ("mailchimp-api-key", &["mailchimp-api-key"]),
    ("mailgun-private-api-token", &["mailgun-api-key"]),
    ("mailgun-pub-key", &["mailgun-api-key"]),
    ("mailgun-signing-key", &["mailgun-api-key"]),
    ("mapbox-api-token", &[]),
    ("mattermost-access-token", &[]),
    ("maxmind-license-key", &[]),
    ("messagebird-api-token", &[]),
    ("messagebird-client-id", &[]),
    ("microsoft-teams-webhook", &["microsoft-teams-webhook"]),
    ("netlify-access-token", &[]),
    ("new-relic-browser-api-token", &["new-relic-key"]),
    ("new-relic-insert-key", &["new-relic-key"]),
    ("new-relic-user-api-id", &["new-relic-key"]),
    ("new-relic-user-api-key", &["new-relic-key"]),
    ("notion-api-token", &[]),
    ("npm-access-token", &["npm-access-token"]),
    ("nuget-config-password", &["nuget-api-key"]),
    ("nytimes-access-token", &[]),
    ("octopus-deploy-api-key", &[]),
    ("okta-access-token", &["okta-api-token"]),
    ("openai-api-key", &["openai-api-key"]),
    ("openshift-user-token", &[]),
    ("perplexity-api-key", &[]),
    ("pkcs12-file", &[]),
    ("plaid-api-token", &[]),
    ("plaid-client-id", &[]),
    ("plaid-secret-key", &[]),
    ("planetscale-api-token", &[]),
    ("planetscale-oauth-token", &[]),
    ("planetscale-password", &[]),
    ("postman-api-token", &["postman-api-key"]),
    ("prefect-api-token", &[]),
    ("private-key", &["private-key"]),
    ("privateai-api-token", &[]),
    ("pulumi-api-token", &[]),
    ("pypi-upload-token", &["pypi-token"]),
    ("rapidapi-access-token", &[]),
    ("readme-api-token", &[]),
    ("rubygems-api-token", &["rubygems-api-key"]),
    ("scalingo-api-token", &[]),
    ("sendbird-access-id", &[]),
    ("sendbird-access-token", &[]),
    ("sendgrid-api-token", &["sendgrid-api-key"]),
    ("sendinblue-api-token", &[]),
    ("sentry-access-token", &[]),
    ("sentry-org-token", &[]),
    ("sentry-user-token", &[]),
    ("settlemint-application-access-token", &[]),
    ("settlemint-personal-access-token", &[]),
    ("settlemint-service-access-token", &[]),
    ("shippo-api-token", &[]),
    ("shopify-access-token", &["shopify-token"]),
    ("shopify-custom-access-token", &["shopify-token"]),
    ("shopify-private-app-access-token", &["shopify-token"]),
    ("shopify-shared-secret", &["shopify-token"]),
    ("sidekiq-secret", &[]),
    ("sidekiq-sensitive-url", &[]),
    ("slack-app-token", &["slack-app-token"]),
    ("slack-bot-token", &["slack-bot-token"]),
    ("slack-config-access-token", &["slack-legacy-token"]),
    ("slack-config-refresh-token", &["slack-legacy-token"]),
    ("slack-legacy-bot-token", &["slack-legacy-token"]),
    ("slack-legacy-token", &["slack-legacy-token"]),
    ("slack-legacy-workspace-token", &["slack-legacy-token"]),
    ("slack-user-token", &["slack-user-token"]),
    ("slack-webhook-url", &["slack-webhook-url"]),
    ("snyk-api-token", &[]),
    ("sonar-api-token", &["sonarqube-token"]),
    ("sourcegraph-access-token", &["sourcegraph-token"]),
    ("square-access-token", &["square-token"]),
    ("squarespace-access-token", &[]),
    ("stripe-access-token", &["stripe-secret-key"]),
    ("sumologic-access-id", &[]),
    ("sumologic-access-token", &[]),
    ("telegram-bot-api-token", &["telegram-bot-token"]),
    ("travisci-access-token", &[]),
    ("twilio-api-key", &["twilio-api-key"]),
    ("twitch-api-token", &[]),
    ("twitter-access-secret", &[]),
    ("twitter-access-token", &[]),
    ("twitter-api-key", &[]),
    ("twitter-api-secret", &[]),
    ("twitter-bearer-token", &[]),
    ("typeform-api-token", &[]),
    ("vault-batch-token", &["hashicorp-vault-token"]),
    (
        "vault-service-token",
        &["hashicorp-vault-token", "vault-token-legacy"],
    ),
    ("yandex-access-token", &[]),
    ("yandex-api-key", &[]),
    ("yandex-aws-access-token", &[]),
    ("zendesk-secret-key", &[]),
];

/// The rules of ours a gitleaks default rule id maps to: `None` when the id is not one of
/// gitleaks' defaults, `Some(&[])` when it is but no rule of ours covers its kind.
pub fn gitleaks_default(id: &str) -> Option<&'static [&'static str]> {
    GITLEAKS_DEFAULT_IDS
        .iter()
        .find(|(g, _)| *g == id)
        .map(|(_, ours)| *ours)
}

/// The gitleaks default rule ids that map to one of our rules (for fingerprints written with
/// gitleaks' ids: `.gitleaksignore`, baselines).
pub fn gitleaks_ids_of(ours: &str) -> impl Iterator<Item = &'static str> + '_ {
    GITLEAKS_DEFAULT_IDS
        .iter()
        .filter(move |(_, o)| o.contains(&ours))
        .map(|(g, _)| *g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapped_id_is_a_builtin_rule_and_ids_are_unique() {
        let set = crate::config::RuleSet::builtin().unwrap();
        let mut seen = std::collections::HashSet::new();
        for (g, ours) in GITLEAKS_DEFAULT_IDS {
            assert!(seen.insert(*g), "{g} listed twice");
            for o in *ours {
                assert!(
                    set.rules.iter().any(|r| r.id == *o),
                    "{g} maps to {o}, which is not a built-in rule"
                );
            }
        }
        assert_eq!(GITLEAKS_DEFAULT_IDS.len(), 222);
        assert_eq!(gitleaks_default("generic-api-key").map(<[_]>::len), Some(6));
        assert_eq!(gitleaks_default("heroku-api-key"), Some(&[][..]));
        assert_eq!(gitleaks_default("no-such-rule"), None);
        assert!(gitleaks_ids_of("gitlab-token").any(|g| g == "gitlab-ptt"));
    }
}
