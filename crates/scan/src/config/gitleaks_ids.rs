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
//!
//! Nine ids map to nothing, on purpose: the client / access *ids* (`adobe-client-id`,
//! `asana-client-id`, `bitbucket-client-id`, `discord-client-id`, `linkedin-client-id`,
//! `looker-client-id`, `messagebird-client-id`, `plaid-client-id`, `sendbird-access-id`) name
//! an application, not a credential: anyone who sees an OAuth client id in a login URL has it,
//! and it grants nothing without the client secret, which the `*-client-secret` ids map to. An
//! override of one of them is a warning; a redefinition with its own `regex` is a rule of the
//! file's author and works as written. `hashicorp-tf-password` (a password assigned in a
//! Terraform file) is `generic-password`, which finds a password assigned in any file;
//! `pkcs12-file` is our path rule of the same name.

/// gitleaks 8.30 default rule id → our built-in rule ids (empty: no rule of ours covers it).
pub const GITLEAKS_DEFAULT_IDS: &[(&str, &[&str])] = &[
    ("1password-secret-key", &["onepassword-secret-key"]),
    (
        "1password-service-account-token",
        &["onepassword-service-account-token"],
    ),
    ("adafruit-api-key", &["adafruit-io-key"]),
    ("adobe-client-id", &[]),
    ("adobe-client-secret", &["adobe-client-secret"]),
    ("age-secret-key", &["age-secret-key"]),
    ("airtable-api-key", &["airtable-token"]),
    ("airtable-personnal-access-token", &["airtable-token"]),
    ("algolia-api-key", &["algolia-api-key"]),
    ("alibaba-access-key-id", &["alibaba-access-key-id"]),
    ("alibaba-secret-key", &["alibaba-secret-key"]),
    ("anthropic-admin-api-key", &["anthropic-api-key"]),
    ("anthropic-api-key", &["anthropic-api-key"]),
    ("artifactory-api-key", &["artifactory-api-key"]),
    ("artifactory-reference-token", &["artifactory-api-key"]),
    ("asana-client-id", &[]),
    ("asana-client-secret", &["asana-token"]),
    ("atlassian-api-token", &["atlassian-api-token"]),
    (
        "authress-service-client-access-key",
        &["authress-service-key"],
    ),
    ("aws-access-token", &["aws-access-key-id"]),
    (
        "aws-amazon-bedrock-api-key-long-lived",
        &["aws-bedrock-api-key"],
    ),
    (
        "aws-amazon-bedrock-api-key-short-lived",
        &["aws-bedrock-api-key"],
    ),
    ("azure-ad-client-secret", &["azure-ad-client-secret"]),
    ("beamer-api-token", &["beamer-api-key"]),
    ("bitbucket-client-id", &[]),
    ("bitbucket-client-secret", &["bitbucket-app-password"]),
    ("bittrex-access-key", &["bittrex-key"]),
    ("bittrex-secret-key", &["bittrex-key"]),
    ("cisco-meraki-api-key", &["cisco-meraki-api-key"]),
    (
        "clickhouse-cloud-api-secret-key",
        &["clickhouse-cloud-api-secret"],
    ),
    ("clojars-api-token", &["clojars-deploy-token"]),
    ("cloudflare-api-key", &["cloudflare-api-key"]),
    ("cloudflare-global-api-key", &["cloudflare-api-key"]),
    ("cloudflare-origin-ca-key", &["cloudflare-origin-ca-key"]),
    ("codecov-access-token", &["codecov-token"]),
    ("cohere-api-token", &["cohere-api-key"]),
    ("coinbase-access-token", &["coinbase-key"]),
    ("confluent-access-token", &["confluent-key"]),
    ("confluent-secret-key", &["confluent-key"]),
    ("contentful-delivery-api-token", &["contentful-token"]),
    (
        "curl-auth-header",
        &[
            "generic-curl-header-credential",
            "generic-bearer-token",
            "generic-basic-auth",
        ],
    ),
    ("curl-auth-user", &["generic-cli-credentials"]),
    ("databricks-api-token", &["databricks-token"]),
    ("datadog-access-token", &["datadog-key"]),
    (
        "defined-networking-api-token",
        &["defined-networking-api-token"],
    ),
    ("digitalocean-access-token", &["digitalocean-token"]),
    ("digitalocean-pat", &["digitalocean-token"]),
    ("digitalocean-refresh-token", &["digitalocean-token"]),
    ("discord-api-token", &["discord-token"]),
    ("discord-client-id", &[]),
    ("discord-client-secret", &["discord-token"]),
    ("doppler-api-token", &["doppler-token"]),
    ("droneci-access-token", &["droneci-token"]),
    ("dropbox-api-token", &["dropbox-app-secret"]),
    (
        "dropbox-long-lived-api-token",
        &["dropbox-long-lived-token"],
    ),
    (
        "dropbox-short-lived-api-token",
        &["dropbox-short-lived-token"],
    ),
    ("duffel-api-token", &["duffel-api-token"]),
    ("dynatrace-api-token", &["dynatrace-api-token"]),
    ("easypost-api-token", &["easypost-api-key"]),
    ("easypost-test-api-token", &["easypost-api-key"]),
    ("etsy-access-token", &["etsy-key"]),
    ("facebook-access-token", &["facebook-access-token"]),
    ("facebook-page-access-token", &["facebook-access-token"]),
    ("facebook-secret", &["facebook-app-secret"]),
    ("fastly-api-token", &["fastly-api-token"]),
    ("finicity-api-token", &["finicity-key"]),
    ("finicity-client-secret", &["finicity-key"]),
    ("finnhub-access-token", &["finnhub-key"]),
    ("flickr-access-token", &["flickr-key"]),
    ("flutterwave-encryption-key", &["flutterwave-key"]),
    ("flutterwave-public-key", &["flutterwave-key"]),
    ("flutterwave-secret-key", &["flutterwave-key"]),
    ("flyio-access-token", &["flyio-token"]),
    ("frameio-api-token", &["frameio-api-token"]),
    ("freemius-secret-key", &["freemius-secret-key"]),
    ("freshbooks-access-token", &["freshbooks-token"]),
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
            "generic-keyed-secret",
            "generic-token-uuid",
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
    ("gitter-access-token", &["gitter-token"]),
    ("gocardless-api-token", &["gocardless-token"]),
    ("grafana-api-key", &["grafana-token"]),
    ("grafana-cloud-api-token", &["grafana-token"]),
    ("grafana-service-account-token", &["grafana-token"]),
    ("harness-api-key", &["harness-token"]),
    ("hashicorp-tf-api-token", &["terraform-cloud-token"]),
    ("hashicorp-tf-password", &["generic-password"]),
    ("heroku-api-key", &["heroku-api-key"]),
    ("heroku-api-key-v2", &["heroku-api-key"]),
    ("hubspot-api-key", &["hubspot-token"]),
    ("huggingface-access-token", &["huggingface-token"]),
    ("huggingface-organization-api-token", &["huggingface-token"]),
    ("infracost-api-token", &["infracost-api-key"]),
    ("intercom-api-key", &["intercom-token"]),
    ("intra42-client-secret", &["intra42-client-secret"]),
    ("jfrog-api-key", &["artifactory-api-key"]),
    ("jfrog-identity-token", &["jfrog-identity-token"]),
    ("jwt", &["jwt"]),
    ("jwt-base64", &["jwt"]),
    ("kraken-access-token", &["kraken-key"]),
    (
        "kubernetes-secret-yaml",
        &["kubernetes-bootstrap-token-secret"],
    ),
    ("kucoin-access-token", &["kucoin-key"]),
    ("kucoin-secret-key", &["kucoin-key"]),
    ("launchdarkly-access-token", &["launchdarkly-token"]),
    ("linear-api-key", &["linear-api-key"]),
    ("linear-client-secret", &["linear-client-secret"]),
    ("linkedin-client-id", &[]),
    ("linkedin-client-secret", &["linkedin-client-secret"]),
    ("lob-api-key", &["lob-api-key"]),
    ("lob-pub-api-key", &["lob-api-key"]),
    ("looker-client-id", &[]),
    ("looker-client-secret", &["looker-client-secret"]),
    ("mailchimp-api-key", &["mailchimp-api-key"]),
    ("mailgun-private-api-token", &["mailgun-api-key"]),
    ("mailgun-pub-key", &["mailgun-api-key"]),
    ("mailgun-signing-key", &["mailgun-api-key"]),
    ("mapbox-api-token", &["mapbox-secret-token"]),
    ("mattermost-access-token", &["mattermost-token"]),
    ("maxmind-license-key", &["maxmind-license-key"]),
    ("messagebird-api-token", &["messagebird-token"]),
    ("messagebird-client-id", &[]),
    ("microsoft-teams-webhook", &["microsoft-teams-webhook"]),
    ("netlify-access-token", &["netlify-token"]),
    ("new-relic-browser-api-token", &["new-relic-key"]),
    ("new-relic-insert-key", &["new-relic-key"]),
    ("new-relic-user-api-id", &["new-relic-key"]),
    ("new-relic-user-api-key", &["new-relic-key"]),
    ("notion-api-token", &["notion-token"]),
    ("npm-access-token", &["npm-access-token"]),
    ("nuget-config-password", &["nuget-api-key"]),
    ("nytimes-access-token", &["nytimes-key"]),
    ("octopus-deploy-api-key", &["octopus-deploy-api-key"]),
    ("okta-access-token", &["okta-api-token"]),
    ("openai-api-key", &["openai-api-key"]),
    ("openshift-user-token", &["openshift-user-token"]),
    ("perplexity-api-key", &["perplexity-api-key"]),
    ("pkcs12-file", &["pkcs12-file"]),
    ("plaid-api-token", &["plaid-key"]),
    ("plaid-client-id", &[]),
    ("plaid-secret-key", &["plaid-key"]),
    ("planetscale-api-token", &["planetscale-token"]),
    ("planetscale-oauth-token", &["planetscale-token"]),
    ("planetscale-password", &["planetscale-token"]),
    ("postman-api-token", &["postman-api-key"]),
    ("prefect-api-token", &["prefect-api-key"]),
    ("private-key", &["private-key"]),
    ("privateai-api-token", &["privateai-key"]),
    ("pulumi-api-token", &["pulumi-access-token"]),
    ("pypi-upload-token", &["pypi-token"]),
    ("rapidapi-access-token", &["rapidapi-key"]),
    ("readme-api-token", &["readme-api-key"]),
    ("rubygems-api-token", &["rubygems-api-key"]),
    ("scalingo-api-token", &["scalingo-api-token"]),
    ("sendbird-access-id", &[]),
    ("sendbird-access-token", &["sendbird-token"]),
    ("sendgrid-api-token", &["sendgrid-api-key"]),
    ("sendinblue-api-token", &["brevo-api-key"]),
    ("sentry-access-token", &["sentry-token"]),
    ("sentry-org-token", &["sentry-token"]),
    ("sentry-user-token", &["sentry-token"]),
    ("settlemint-application-access-token", &["settlemint-token"]),
    ("settlemint-personal-access-token", &["settlemint-token"]),
    ("settlemint-service-access-token", &["settlemint-token"]),
    ("shippo-api-token", &["shippo-api-token"]),
    ("shopify-access-token", &["shopify-token"]),
    ("shopify-custom-access-token", &["shopify-token"]),
    ("shopify-private-app-access-token", &["shopify-token"]),
    ("shopify-shared-secret", &["shopify-token"]),
    ("sidekiq-secret", &["sidekiq-credentials"]),
    ("sidekiq-sensitive-url", &["sidekiq-credentials"]),
    ("slack-app-token", &["slack-app-token"]),
    ("slack-bot-token", &["slack-bot-token"]),
    ("slack-config-access-token", &["slack-legacy-token"]),
    ("slack-config-refresh-token", &["slack-legacy-token"]),
    (
        "slack-legacy-bot-token",
        &["slack-bot-token", "slack-legacy-token"],
    ),
    ("slack-legacy-token", &["slack-legacy-token"]),
    ("slack-legacy-workspace-token", &["slack-legacy-token"]),
    ("slack-user-token", &["slack-user-token"]),
    ("slack-webhook-url", &["slack-webhook-url"]),
    ("snyk-api-token", &["snyk-token"]),
    ("sonar-api-token", &["sonarqube-token"]),
    ("sourcegraph-access-token", &["sourcegraph-token"]),
    ("square-access-token", &["square-token"]),
    ("squarespace-access-token", &["squarespace-token"]),
    ("stripe-access-token", &["stripe-secret-key"]),
    ("sumologic-access-id", &["sumologic-key"]),
    ("sumologic-access-token", &["sumologic-key"]),
    ("telegram-bot-api-token", &["telegram-bot-token"]),
    ("travisci-access-token", &["travisci-token"]),
    ("twilio-api-key", &["twilio-api-key"]),
    ("twitch-api-token", &["twitch-api-token"]),
    ("twitter-access-secret", &["twitter-credentials"]),
    ("twitter-access-token", &["twitter-credentials"]),
    ("twitter-api-key", &["twitter-credentials"]),
    ("twitter-api-secret", &["twitter-credentials"]),
    ("twitter-bearer-token", &["twitter-bearer-token"]),
    ("typeform-api-token", &["typeform-api-token"]),
    ("vault-batch-token", &["hashicorp-vault-token"]),
    (
        "vault-service-token",
        &[
            "hashicorp-vault-token",
            "vault-token-legacy",
            "vault-service-token-legacy",
        ],
    ),
    ("yandex-access-token", &["yandex-key"]),
    ("yandex-api-key", &["yandex-key"]),
    ("yandex-aws-access-token", &["yandex-aws-access-key"]),
    ("zendesk-secret-key", &["zendesk-api-token"]),
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
        let unmapped: Vec<&str> = GITLEAKS_DEFAULT_IDS
            .iter()
            .filter(|(_, o)| o.is_empty())
            .map(|(g, _)| *g)
            .collect();
        assert_eq!(unmapped.len(), 9, "{unmapped:?}");
        assert!(
            unmapped
                .iter()
                .all(|g| g.ends_with("-client-id") || *g == "sendbird-access-id")
        );
        assert_eq!(gitleaks_default("generic-api-key").map(<[_]>::len), Some(8));
        assert_eq!(gitleaks_default("pkcs12-file"), Some(&["pkcs12-file"][..]));
        assert_eq!(gitleaks_default("adobe-client-id"), Some(&[][..]));
        assert_eq!(gitleaks_default("no-such-rule"), None);
        assert!(gitleaks_ids_of("gitlab-token").any(|g| g == "gitlab-ptt"));
    }
}
