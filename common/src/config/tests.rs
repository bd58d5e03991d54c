//! Settings parsing and the start-up checks.

use super::*;
use std::collections::HashMap;

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn defaults_work_for_local_development() {
    let s = settings(&[]).expect("defaults are valid");
    assert_eq!(s.environment, Environment::Development);
    assert_eq!(s.http.port, 8000);
    assert_eq!(s.log.format, LogFormat::Pretty);
    assert_eq!(s.auth.access_token_ttl, Duration::from_secs(30 * 60));
}

#[test]
fn production_refuses_the_default_secret() {
    let err = settings(&[("ENVIRONMENT", "production")]).unwrap_err();
    assert!(matches!(err, ConfigError::WeakSecret));
}

#[test]
fn production_refuses_a_short_secret() {
    let err = settings(&[("ENVIRONMENT", "production"), ("SECRET_KEY", "short")]).unwrap_err();
    assert!(matches!(err, ConfigError::WeakSecret));
}

#[test]
fn production_accepts_a_long_secret_and_logs_json() {
    let key = "k".repeat(40);
    let s = settings(&[("ENVIRONMENT", "production"), ("SECRET_KEY", &key)]).expect("valid");
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn a_bad_number_names_the_variable() {
    let err = settings(&[("PORT", "eighty")]).unwrap_err();
    assert!(err.to_string().contains("PORT"), "{err}");
}

#[test]
fn cors_origins_are_split_and_trimmed() {
    let s = settings(&[("CORS_ORIGINS", "http://a.test, http://b.test,")]).expect("valid");
    assert_eq!(s.http.cors_origins, vec!["http://a.test", "http://b.test"]);
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let s = settings(&[("SECRET_KEY", "super-secret-value")]).expect("valid");
    assert!(!format!("{s:?}").contains("super-secret-value"));
}

#[test]
fn cors_refuses_a_wildcard_mixed_with_origins_and_malformed_origins() {
    for bad in [
        "*,http://a.test",
        "a.test",
        "http://a.test/path",
        "ftp://a.test",
        "http://a.test:99999",
    ] {
        let err = settings(&[("CORS_ORIGINS", bad)]).unwrap_err();
        assert!(err.to_string().contains("CORS_ORIGINS"), "{bad}: {err}");
    }
    let s =
        settings(&[("CORS_ORIGINS", "https://shop.example.com,http://[::1]:8080")]).expect("valid");
    assert_eq!(s.http.cors_origins.len(), 2);
}

#[test]
fn trusted_proxies_take_cidrs_and_addresses() {
    let s = settings(&[("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.10")]).expect("valid");
    assert_eq!(s.http.trusted_proxies.len(), 2);
    assert!(settings(&[("TRUSTED_PROXIES", "10.0.0.0/33")]).is_err());
}

#[test]
fn the_development_key_is_allowed_only_on_loopback_in_development() {
    let local = settings(&[]).expect("valid");
    assert!(
        local.check_signing_key().is_ok(),
        "defaults listen on 127.0.0.1"
    );
    let exposed = settings(&[("HOST", "0.0.0.0")]).expect("valid");
    assert!(matches!(
        exposed.check_signing_key(),
        Err(ConfigError::DevelopmentKeyExposed { .. })
    ));
    let own_key =
        settings(&[("HOST", "0.0.0.0"), ("SECRET_KEY", "a-key-of-our-own")]).expect("valid");
    assert!(own_key.check_signing_key().is_ok());
}

#[test]
fn amqp_url_takes_a_cluster_s_nodes_and_never_echoes_a_password() {
    let cluster = settings(&[(
        "AMQP_URL",
        "amqp://app:s3cret@rabbit-1:5672/%2f, amqp://app:s3cret@rabbit-2:5672/%2f,,",
    )])
    .expect("two nodes");
    let shown: Vec<String> = cluster
        .broker
        .urls
        .iter()
        .map(crate::broker::display_url)
        .collect();
    assert_eq!(
        shown,
        ["amqp://rabbit-1:5672/%2f", "amqp://rabbit-2:5672/%2f"]
    );
    let error = settings(&[("AMQP_URL", "amqp://a@h1/%2f,http://user:s3cret@h2/")])
        .expect_err("not amqp")
        .to_string();
    assert!(
        error.contains("AMQP_URL") && error.contains("h2/"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    assert!(settings(&[("AMQP_URL", " , ")]).is_err());
    let error = settings(&[("AMQP_URL", "amqp://app:s3cret@h3:notaport/%2f")])
        .expect_err("no port")
        .to_string();
    assert!(
        error.contains("AMQP_URL") && !error.contains("s3cret"),
        "{error}"
    );
}

#[test]
fn connections_propose_a_heartbeat_unless_told_otherwise() {
    assert_eq!(settings(&[]).expect("defaults").broker.heartbeat_secs, 10);
    let brokers = settings(&[("AMQP_HEARTBEAT_SECS", "0")]).expect("the broker's");
    assert_eq!(brokers.broker.heartbeat_secs, 0);
    assert!(settings(&[("AMQP_HEARTBEAT_SECS", "-1")]).is_err());
}
