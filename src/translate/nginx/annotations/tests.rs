//! Table-driven tests: for each annotation, values ingress-nginx takes, values it refuses (the Ingress keeps its
//! last good version), values that deny the location (503), and values it corrects (with the value used).

use super::*;
use crate::model::policy::TemplatePart as T;

const PREFIX: &str = "nginx.ingress.kubernetes.io";

fn parse_in(settings: &Settings, pairs: &[(&str, &str)]) -> IngressAnnotations {
    let anns: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (format!("{PREFIX}/{k}"), v.to_string()))
        .collect();
    let cx = Context {
        prefix: PREFIX,
        namespace: "shop",
        name: "web",
        settings,
    };
    parse(&anns, &cx)
}

fn parse_v1(pairs: &[(&str, &str)]) -> IngressAnnotations {
    parse_in(&Settings::ingress_v1(), pairs)
}

/// What happened to one annotation.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Outcome {
    /// No finding for it.
    Ok,
    Reject,
    Deny,
    Warn,
}
use Outcome::*;

fn outcome(a: &IngressAnnotations, short: &str) -> Outcome {
    let key = format!("{PREFIX}/{short}");
    let mut out = Ok;
    for f in a.findings.iter().filter(|f| f.key() == key) {
        out = match (out, f) {
            (_, Finding::Reject { .. }) => Reject,
            (Reject, _) => Reject,
            (_, Finding::Deny { .. }) => Deny,
            (Deny, _) => Deny,
            _ => Warn,
        };
    }
    out
}

/// Runs a table of single-annotation cases (`extra` annotations are set alongside, e.g. the one it depends on).
fn table(extra: &[(&str, &str)], rows: &[(&str, &str, Outcome)]) {
    for (key, value, want) in rows {
        let mut pairs = extra.to_vec();
        pairs.push((key, value));
        let a = parse_v1(&pairs);
        assert_eq!(
            outcome(&a, key),
            *want,
            "{key}: {value:?} -> {:?}",
            a.findings
        );
        assert_eq!(
            a.rejected(),
            *want == Reject,
            "{key}: {value:?} rejected? {:?}",
            a.findings
        );
    }
}

#[test]
fn rewrite_group_is_corrected_never_refused() {
    table(
        &[],
        &[
            ("rewrite-target", "/$1", Ok),
            ("rewrite-target", "/api/$2/x", Ok),
            ("rewrite-target", "/a?b", Warn),
            ("rewrite-target", "/a b", Warn),
            ("rewrite-target", "/$host", Reject),
            ("use-regex", "true", Ok),
            ("use-regex", "yes", Warn),
            ("ssl-redirect", "false", Ok),
            ("ssl-redirect", "off", Warn),
            ("force-ssl-redirect", "True", Ok),
            ("force-ssl-redirect", "1x", Warn),
            ("preserve-trailing-slash", "t", Ok),
            ("preserve-trailing-slash", "sure", Warn),
            ("app-root", "/app1", Ok),
            ("app-root", "app1", Warn),
            ("app-root", "https://x/app1", Warn),
        ],
    );
    let a = parse_v1(&[("rewrite-target", "/x/$1$2"), ("use-regex", "true")]);
    assert_eq!(
        a.rewrite_template,
        Some(vec![T::Text("/x/".into()), T::Capture(1), T::Capture(2)])
    );
    assert!(a.use_regex);
    // A bad boolean keeps the profile's default.
    assert!(!parse_v1(&[("ssl-redirect", "on")]).ssl_redirect);
    assert!(parse_in(&Settings::ingress_nginx(), &[("ssl-redirect", "on")]).ssl_redirect);
    assert!(!parse_in(&Settings::ingress_nginx(), &[("ssl-redirect", "false")]).ssl_redirect);
}

#[test]
fn redirect_group_refuses_bad_values_and_corrects_codes() {
    table(
        &[],
        &[
            ("permanent-redirect", "https://example.com/new", Ok),
            ("permanent-redirect", "https://example.com/$1", Reject),
            ("permanent-redirect", "https://example.com/a b", Reject),
            ("permanent-redirect-code", "308", Ok),
            ("permanent-redirect-code", "abc", Reject),
            ("temporal-redirect", "https://example.com/t", Ok),
            ("temporal-redirect", "ftp://example.com/t", Warn),
            ("from-to-www-redirect", "true", Ok),
            ("from-to-www-redirect", "yes", Reject),
        ],
    );
    let code = |pairs: &[(&str, &str)]| parse_v1(pairs).redirect.map(|r| r.code);
    assert_eq!(code(&[("permanent-redirect", "https://a/")]), Some(301));
    assert_eq!(
        code(&[
            ("permanent-redirect", "https://a/"),
            ("permanent-redirect-code", "308")
        ]),
        Some(308)
    );
    // Out of range: 301, with a warning.
    let a = parse_v1(&[
        ("permanent-redirect", "https://a/"),
        ("permanent-redirect-code", "200"),
    ]);
    assert_eq!(a.redirect.as_ref().map(|r| r.code), Some(301));
    assert_eq!(outcome(&a, "permanent-redirect-code"), Warn);
    assert_eq!(
        code(&[
            ("temporal-redirect", "https://a/"),
            ("temporal-redirect-code", "308")
        ]),
        Some(302)
    );
    assert_eq!(
        code(&[
            ("temporal-redirect", "https://a/"),
            ("temporal-redirect-code", "307")
        ]),
        Some(307)
    );
    // temporal wins over permanent.
    let a = parse_v1(&[
        ("temporal-redirect", "https://t/"),
        ("permanent-redirect", "https://p/"),
    ]);
    assert_eq!(
        a.redirect.and_then(|r| r.url).as_deref(),
        Some("https://t/")
    );
}

#[test]
fn server_alias_and_vhost_and_prefix() {
    table(
        &[],
        &[
            ("server-alias", "a.example.com, b.example.com", Ok),
            ("server-alias", "*.example.com", Ok),
            ("server-alias", "a.example.com;b", Reject),
            ("upstream-vhost", "internal.example.com", Ok),
            ("upstream-vhost", "bad host;", Reject),
            ("x-forwarded-prefix", "/api", Ok),
            ("x-forwarded-prefix", "/api/$1", Ok),
            ("x-forwarded-prefix", "/api?x", Reject),
        ],
    );
    let a = parse_v1(&[(
        "server-alias",
        "b.example.com,a.example.com, a.example.com,",
    )]);
    assert_eq!(a.aliases, vec!["a.example.com", "b.example.com"]);
}

#[test]
fn proxy_group_falls_back_to_defaults() {
    table(
        &[],
        &[
            ("proxy-body-size", "8m", Ok),
            ("proxy-body-size", "0", Ok),
            ("proxy-body-size", "8mb", Warn),
            ("proxy-body-size", "10b", Warn),
            ("proxy-read-timeout", "120", Ok),
            ("proxy-read-timeout", "2m", Warn),
            ("proxy-read-timeout", "-1", Warn),
            ("proxy-send-timeout", "30", Ok),
            ("proxy-send-timeout", "x", Warn),
            ("proxy-buffering", "on", Ok),
            ("proxy-buffering", "maybe", Warn),
        ],
    );
    let nginx = Settings::ingress_nginx();
    assert_eq!(parse_in(&nginx, &[]).body_size, Some(1 << 20));
    assert_eq!(
        parse_in(&nginx, &[("proxy-body-size", "8m")]).body_size,
        Some(8 << 20)
    );
    assert_eq!(
        parse_in(&nginx, &[("proxy-body-size", "0")]).body_size,
        Some(0)
    );
    assert_eq!(
        parse_in(&nginx, &[("proxy-body-size", "8mb")]).body_size,
        Some(1 << 20)
    );
    assert_eq!(parse_v1(&[]).body_size, None);
    assert_eq!(parse_in(&nginx, &[]).read_timeout, Some(60));
    assert_eq!(
        parse_in(&nginx, &[("proxy-read-timeout", "x")]).read_timeout,
        Some(60)
    );
    assert_eq!(
        parse_in(&nginx, &[("proxy-read-timeout", "5")]).read_timeout,
        Some(5)
    );
}

#[test]
fn source_ranges_deny_the_location_when_bad() {
    table(
        &[],
        &[
            ("allowlist-source-range", "10.0.0.0/8, 192.168.0.1", Ok),
            ("whitelist-source-range", "10.0.0.0/8", Ok),
            ("allowlist-source-range", "10.0.0.0/33", Deny),
            ("denylist-source-range", "2001:db8::/32", Ok),
            ("denylist-source-range", "not-an-ip", Deny),
        ],
    );
    let a = parse_v1(&[("allowlist-source-range", "10.0.0.0/99")]);
    assert!(a.denied.is_some());
    // allowlist wins over its older alias.
    let a = parse_v1(&[
        ("allowlist-source-range", "10.0.0.0/8"),
        ("whitelist-source-range", "192.168.0.0/16"),
    ]);
    assert_eq!(a.allowlist.len(), 1);
    assert_eq!(a.allowlist[0].to_string(), "10.0.0.0/8");
}

#[test]
fn cors_group_is_corrected() {
    table(
        &[("enable-cors", "true")],
        &[
            (
                "cors-allow-origin",
                "https://a.com, https://*.b.org:8443",
                Ok,
            ),
            ("cors-allow-origin", "*", Ok),
            ("cors-allow-origin", "https://a.com/path", Warn),
            ("cors-allow-methods", "GET, PUT", Ok),
            ("cors-allow-methods", "GET;PUT", Warn),
            ("cors-allow-headers", "X-Token, Content-Type", Ok),
            ("cors-allow-headers", "X-Token:", Warn),
            ("cors-expose-headers", "X-Trace, *", Ok),
            ("cors-expose-headers", "X/Trace", Warn),
            ("cors-allow-credentials", "false", Ok),
            ("cors-allow-credentials", "nope", Warn),
            ("cors-max-age", "600", Ok),
            ("cors-max-age", "10m", Warn),
        ],
    );
    table(
        &[],
        &[("enable-cors", "true", Ok), ("enable-cors", "yes", Warn)],
    );
    let c = parse_v1(&[("enable-cors", "true")]).cors.unwrap();
    assert!(c.any && c.allow_credentials);
    assert_eq!(c.max_age, 1_728_000);
    assert_eq!(c.allow_methods, "GET, PUT, POST, DELETE, PATCH, OPTIONS");
    let c = parse_v1(&[
        ("enable-cors", "true"),
        ("cors-allow-origin", "https://a.com, https://*.b.org"),
    ])
    .cors
    .unwrap();
    assert!(!c.any);
    assert_eq!(c.origins.len(), 2);
    assert_eq!(c.origins[1].suffix.as_deref(), Some(".b.org"));
    assert!(parse_v1(&[("cors-allow-origin", "https://a.com")])
        .cors
        .is_none());
}

#[test]
fn basic_auth_refuses_denies_and_reads() {
    table(
        &[("auth-secret", "users")],
        &[
            ("auth-type", "basic", Ok),
            ("auth-type", "token", Reject),
            ("auth-type", "digest", Deny),
        ],
    );
    table(
        &[("auth-type", "basic")],
        &[
            ("auth-secret", "users", Ok),
            ("auth-secret", "shop/users", Ok),
            ("auth-secret", "other/users", Deny),
            ("auth-secret", "a/b/c", Deny),
            ("auth-secret", "users;x", Deny),
        ],
    );
    table(
        &[("auth-type", "basic"), ("auth-secret", "users")],
        &[
            ("auth-realm", "Shop staff", Ok),
            ("auth-realm", "Shop \"staff\"", Reject),
            ("auth-secret-type", "auth-map", Ok),
            ("auth-secret-type", "auth-file", Ok),
            ("auth-secret-type", "file", Reject),
        ],
    );
    let a = parse_v1(&[("auth-type", "basic")]);
    assert_eq!(outcome(&a, "auth-secret"), Deny);
    let r = parse_v1(&[
        ("auth-type", "basic"),
        ("auth-secret", "users"),
        ("auth-realm", "Staff"),
    ])
    .basic_auth
    .unwrap();
    assert_eq!(
        (r.namespace.as_str(), r.name.as_str(), r.realm.as_str()),
        ("shop", "users", "Staff")
    );
    assert!(!r.map);
}

#[test]
fn htpasswd_formats() {
    let text = "# comment\n\
                alice:$apr1$xyz$HXgo9gtz4gpj4JWTLYmjB0\n\
                bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n\
                carol:$2y$05$abcdefghijklmnopqrstuuVq8VZpeV0bjRSDnVYgN7rlbB4DZUmK2\n\
                dave:$6$salt$hash\n\
                erin\n\
                frank:{PLAIN}pw:comment\n";
    let (users, problems) = htpasswd(text);
    let names: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "carol", "frank"]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(matches!(users[1].1, PasswordHash::Sha1(_)));
    assert!(matches!(&users[3].1, PasswordHash::Plain(p) if p == "pw"));
}

#[test]
fn external_auth_values() {
    table(
        &[],
        &[
            ("auth-url", "http://auth.shop.svc:8080/verify?x=1", Ok),
            ("auth-url", "https://auth.example.com/oauth2/auth", Ok),
            ("auth-url", "http://auth/$host", Reject),
            ("auth-url", "ftp://auth/x", Reject),
            ("auth-url", "http:///x", Deny),
            ("auth-url", "http://a;b/x", Reject),
        ],
    );
    table(
        &[("auth-url", "http://auth/verify")],
        &[
            ("auth-method", "POST", Ok),
            ("auth-method", "FETCH", Deny),
            (
                "auth-signin",
                "https://auth.example.com/start?rd=$escaped_request_uri",
                Ok,
            ),
            ("auth-signin", "https://$host/oauth2/start", Ok),
            ("auth-signin", "https://$upstream_addr/x", Reject),
            ("auth-signin", "https://a.com/\"x", Warn),
            ("auth-response-headers", "X-User, X-Email", Ok),
            ("auth-response-headers", "X-User: 1", Deny),
            ("auth-signin-redirect-param", "next", Ok),
            ("auth-cache-key", "$remote_user", Warn),
        ],
    );
    let e = parse_v1(&[
        ("auth-url", "http://10.0.0.9:9000/verify"),
        ("auth-signin", "https://login.example.com/start"),
        ("auth-response-headers", "X-User"),
    ])
    .external_auth
    .unwrap();
    assert_eq!(
        (e.host.as_str(), e.port, e.path_and_query.as_str()),
        ("10.0.0.9", 9000, "/verify")
    );
    assert_eq!(e.response_headers, vec!["x-user"]);
    let signin = e.signin.unwrap();
    assert_eq!(
        signin[0],
        UrlPart::Text("https://login.example.com/start?rd=".into())
    );
    assert_eq!(signin[1], UrlPart::Scheme);
    // An `rd` already present is kept as is.
    let e = parse_v1(&[
        ("auth-url", "http://a/v"),
        ("auth-signin", "https://l/s?rd=$escaped_request_uri"),
    ])
    .external_auth
    .unwrap();
    assert_eq!(e.signin.unwrap().len(), 2);
}

#[test]
fn rate_limits() {
    table(
        &[],
        &[
            ("limit-rps", "10", Ok),
            ("limit-rps", "ten", Reject),
            ("limit-rpm", "600", Ok),
            ("limit-rpm", "1.5", Reject),
            ("limit-connections", "3", Ok),
            ("limit-connections", "x", Reject),
            ("limit-burst-multiplier", "2", Ok),
            ("limit-burst-multiplier", "x", Warn),
            ("limit-allowlist", "10.0.0.0/8", Ok),
            ("limit-allowlist", "10.0.0.0/77", Reject),
        ],
    );
    let r = parse_v1(&[("limit-rps", "5")]).rate_limit.unwrap();
    assert_eq!(
        (r.rps, r.rpm, r.burst_multiplier, r.req_status),
        (5, 0, 5, 503)
    );
    assert_eq!(r.zone, "shop/web");
    assert!(parse_v1(&[("limit-rps", "0")]).rate_limit.is_none());
    assert!(parse_v1(&[("limit-rps", "-4")]).rate_limit.is_none());
}

#[test]
fn canary_group_is_corrected() {
    table(
        &[("canary", "true")],
        &[
            ("canary-weight", "20", Ok),
            ("canary-weight", "20%", Warn),
            ("canary-weight-total", "1000", Ok),
            ("canary-by-header", "X-Canary", Ok),
            ("canary-by-header", "X:Canary;", Warn),
            ("canary-by-header-value", "v2", Ok),
            ("canary-by-header-pattern", "^v[0-9]+$", Ok),
            ("canary-by-header-pattern", "(v", Warn),
            ("canary-by-cookie", "canary", Ok),
        ],
    );
    table(&[], &[("canary", "true", Ok), ("canary", "on", Warn)]);
    let a = parse_v1(&[("canary-weight", "50")]);
    assert!(a.canary.is_none());
    assert_eq!(outcome(&a, "canary"), Warn);
    let c = parse_v1(&[("canary", "true"), ("canary-by-header", "X-Canary")])
        .canary
        .unwrap();
    assert_eq!(c.header.as_deref(), Some("x-canary"));
    assert_eq!(c.weight_total, 100);
}

#[test]
fn backend_settings_are_parsed_and_applied_or_reported() {
    table(
        &[],
        &[
            ("backend-protocol", "HTTPS", Ok),
            ("backend-protocol", "GRPCS", Ok),
            ("backend-protocol", "AUTO_HTTP", Warn),
            ("backend-protocol", "FCGI", Warn),
            ("backend-protocol", "GRPC", Ok),
            ("backend-protocol", "HTTP", Ok),
            ("backend-protocol", "QUIC", Warn),
            ("load-balance", "ewma", Ok),
            ("load-balance", "round_robin", Ok),
            ("load-balance", "sticky_balanced", Warn),
            ("load-balance", "chash", Warn),
            ("load-balance", "random", Reject),
            ("upstream-hash-by", "$request_uri", Ok),
            ("upstream-hash-by", "${cookie_session}", Ok),
            ("upstream-hash-by", "$remote_addr$request_uri", Ok),
            ("upstream-hash-by", "$remote_addr$request_id", Warn),
            ("upstream-hash-by", "$request_uri;", Reject),
            ("affinity", "cookie", Ok),
            ("affinity", "ip", Warn),
            ("service-upstream", "true", Ok),
            ("proxy-next-upstream", "error timeout http_502", Ok),
            ("proxy-next-upstream", "error  timeout", Warn),
            ("proxy-next-upstream", "retry", Warn),
            ("proxy-next-upstream-tries", "5", Ok),
            ("proxy-next-upstream-tries", "five", Warn),
            ("proxy-next-upstream-timeout", "10", Ok),
            ("proxy-connect-timeout", "10", Ok),
            ("custom-http-errors", "404,503", Ok),
            ("custom-http-errors", "200", Reject),
            ("default-backend", "errors", Ok),
            ("default-backend", "Errors", Reject),
            ("proxy-ssl-secret", "shop/ca", Ok),
            ("proxy-ssl-secret", "other/ca", Deny),
            ("proxy-ssl-secret", "ca;x", Reject),
        ],
    );
    let b = parse_v1(&[
        ("backend-protocol", "grpc"),
        ("load-balance", "ewma"),
        ("upstream-hash-by", "$request_uri"),
        ("affinity", "cookie"),
        ("session-cookie-name", "route"),
        ("affinity-mode", "persistent"),
        ("proxy-next-upstream", "error http_503"),
        ("custom-http-errors", "404, 503"),
        ("proxy-ssl-secret", "shop/ca"),
        ("proxy-ssl-verify", "on"),
    ])
    .backend;
    assert_eq!(b.protocol, BackendProtocolAnnotation::Grpc);
    assert_eq!(b.load_balance, Some(LoadBalance::Ewma));
    assert_eq!(b.upstream_hash_by.unwrap().subset_size, 3);
    let aff = b.affinity.unwrap();
    assert!(aff.persistent);
    assert_eq!(aff.name, "route");
    assert_eq!(
        b.next_upstream,
        vec![NextUpstream::Error, NextUpstream::Status(503)]
    );
    assert_eq!(b.custom_http_errors, vec![404, 503]);
    assert!(b.proxy_ssl.unwrap().verify);
}

#[test]
fn proxy_ssl_settings_are_corrected_or_denied() {
    table(
        &[("proxy-ssl-secret", "shop/ca")],
        &[
            ("proxy-ssl-verify", "on", Ok),
            ("proxy-ssl-verify", "off", Ok),
            ("proxy-ssl-verify", "ON", Warn),
            ("proxy-ssl-verify", "true", Warn),
            ("proxy-ssl-server-name", "on", Ok),
            ("proxy-ssl-server-name", "yes", Warn),
            ("proxy-ssl-verify-depth", "3", Ok),
            ("proxy-ssl-verify-depth", "0", Ok),
            ("proxy-ssl-verify-depth", "two", Warn),
            ("proxy-ssl-verify-depth", "-2", Warn),
            ("proxy-ssl-name", "backend.example.com", Ok),
            ("proxy-ssl-name", "10.0.0.1", Ok),
            ("proxy-ssl-name", "bad;name", Warn),
            ("proxy-ssl-name", "$host", Deny),
            ("proxy-ssl-protocols", "TLSv1.3 TLSv1.2", Ok),
            ("proxy-ssl-protocols", "TLSv1.3", Ok),
            ("proxy-ssl-protocols", "TLSv1.1 TLSv1.2", Warn),
            ("proxy-ssl-protocols", "SSLv3", Warn),
            ("proxy-ssl-ciphers", "DEFAULT", Ok),
            (
                "proxy-ssl-ciphers",
                "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
                Ok,
            ),
            ("proxy-ssl-ciphers", "HIGH:!aNULL:!MD5", Warn),
            ("proxy-ssl-ciphers", "AES128-SHA", Warn),
            ("proxy-ssl-ciphers", "ECDHE;rm", Warn),
        ],
    );
    // Without proxy-ssl-secret ingress-nginx reads none of them: each is reported as having no effect.
    table(
        &[],
        &[
            ("proxy-ssl-verify", "on", Warn),
            ("proxy-ssl-server-name", "on", Warn),
            ("proxy-ssl-name", "backend.example.com", Warn),
        ],
    );
    assert!(parse_v1(&[("proxy-ssl-verify", "on")])
        .backend
        .proxy_ssl
        .is_none());

    let ssl = |pairs: &[(&str, &str)]| {
        let mut all = vec![("proxy-ssl-secret", "shop/ca")];
        all.extend_from_slice(pairs);
        parse_v1(&all).backend.proxy_ssl.unwrap()
    };
    let d = ssl(&[]);
    assert_eq!(
        (d.verify, d.server_name, d.verify_depth, d.name.as_deref()),
        (false, false, 1, None)
    );
    assert_eq!(d.protocols, ["TLSv1.2"]);
    assert_eq!(
        (d.ciphers.as_str(), d.tls12_cipher_suites.len()),
        ("DEFAULT", 0)
    );
    let p = ssl(&[
        ("proxy-ssl-verify", "on"),
        ("proxy-ssl-server-name", "on"),
        ("proxy-ssl-verify-depth", "0"),
        ("proxy-ssl-name", " backend.example.com "),
        ("proxy-ssl-protocols", "TLSv1.3  TLSv1.2"),
        ("proxy-ssl-ciphers", "ECDHE-RSA-AES256-GCM-SHA384:HIGH"),
    ]);
    assert!(p.verify && p.server_name);
    assert_eq!(p.verify_depth, 1);
    assert_eq!(p.name.as_deref(), Some("backend.example.com"));
    assert_eq!(p.protocols, ["TLSv1.2", "TLSv1.3"]);
    assert_eq!(
        p.tls12_cipher_suites,
        ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]
    );
    assert_eq!(ssl(&[("proxy-ssl-verify-depth", "-2")]).verify_depth, 1);
    assert_eq!(
        ssl(&[("proxy-ssl-protocols", "TLSv1.1")]).protocols,
        ["TLSv1.2"]
    );
    assert_eq!(ssl(&[("proxy-ssl-name", "a;b")]).name, None);
    assert_eq!(ssl(&[("proxy-ssl-ciphers", "x;y")]).ciphers, "DEFAULT");
}

#[test]
fn openssl_cipher_lists() {
    let (s, bad) = openssl_ciphers("DEFAULT");
    assert!(s.is_empty() && bad.is_empty());
    let (s, bad) =
        openssl_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA");
    assert_eq!(
        s,
        [
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        ]
    );
    assert_eq!(bad, ["AES128-SHA"]);
    let (s, bad) = openssl_ciphers("DEFAULT:!RC4");
    assert!(s.is_empty());
    assert_eq!(bad, ["DEFAULT", "!RC4"]);
}

/// A CA and a leaf certificate it signed, as PEM: (CA, leaf, leaf key).
fn ca_and_leaf() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["backend.example.com".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[test]
fn proxy_ssl_secrets_are_read_as_ingress_nginx_reads_them() {
    let (ca, cert, key) = ca_and_leaf();
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // Missing, empty, or unusable: denied.
    assert!(proxy_ssl_secret("shop/ca", None)
        .unwrap_err()
        .contains("not found"));
    assert!(proxy_ssl_secret("shop/ca", Some(&data(&[("auth", "x")]))).is_err());
    assert!(proxy_ssl_secret("shop/ca", Some(&data(&[("ca.crt", "junk")]))).is_err());
    assert!(proxy_ssl_secret(
        "shop/ca",
        Some(&data(&[
            ("ca.crt", &ca),
            ("tls.crt", &cert),
            ("tls.key", &ca)
        ]))
    )
    .is_err());
    // ca.crt alone: checked, no client certificate.
    let s = proxy_ssl_secret("shop/ca", Some(&data(&[("ca.crt", &ca)]))).unwrap();
    assert!(s.ca.is_some() && s.client.is_none());
    // With tls.crt/tls.key too: they are presented.
    let s = proxy_ssl_secret(
        "shop/ca",
        Some(&data(&[
            ("ca.crt", &ca),
            ("tls.crt", &cert),
            ("tls.key", &key),
        ])),
    )
    .unwrap();
    assert_eq!(
        s.client.as_ref().map(|c| c.source.as_str()),
        Some("Secret shop/ca")
    );
    // A key pair without ca.crt is accepted, and not presented (ingress-nginx writes it out only with a CA).
    let s = proxy_ssl_secret(
        "shop/ca",
        Some(&data(&[("tls.crt", &cert), ("tls.key", &key)])),
    )
    .unwrap();
    assert!(s.ca.is_none() && s.client.is_none());
}

#[test]
fn backend_tls_follows_ingress_nginx() {
    use crate::model::TlsVersion;
    let (ca, cert, key) = ca_and_leaf();
    let with_ca = ProxySslSecret {
        name: "shop/ca".into(),
        ca: Some(ca.clone()),
        client: Some(crate::model::ClientCertificate {
            source: "Secret shop/ca".into(),
            cert_pem: cert,
            key_pem: crate::model::Redacted::new(key),
        }),
    };
    let without_ca = ProxySslSecret {
        name: "shop/ca".into(),
        ca: None,
        client: None,
    };
    let b = |pairs: &[(&str, &str)]| parse_v1(pairs).backend;

    // HTTPS alone: TLS, nothing checked, no SNI.
    let (t, w) = backend_tls(&b(&[("backend-protocol", "HTTPS")]), None);
    let t = t.unwrap();
    assert!(t.skip_verify && t.no_sni && w.is_empty());
    assert_eq!(t.hostname, NGINX_UPSTREAM_NAME);
    assert!(t.ca_bundles.is_empty() && t.versions.is_empty());

    // HTTPS with a CA, verify and SNI on: checked against the CA and proxy-ssl-name, sent as SNI, TLS 1.2 only
    // (proxy-ssl-protocols' default), depth 1, the client certificate presented.
    let on = b(&[
        ("backend-protocol", "HTTPS"),
        ("proxy-ssl-secret", "shop/ca"),
        ("proxy-ssl-verify", "on"),
        ("proxy-ssl-server-name", "on"),
        ("proxy-ssl-name", "backend.example.com"),
    ]);
    let (t, w) = backend_tls(&on, Some(&with_ca));
    let t = t.unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert!(!t.skip_verify && !t.no_sni);
    assert_eq!(t.hostname, "backend.example.com");
    assert_eq!(t.ca_bundles, std::slice::from_ref(&ca));
    assert_eq!(t.versions, [TlsVersion::Tls12]);
    assert_eq!(t.verify_depth, Some(1));
    assert!(t.client_certificate.is_some());
    // And rustls takes it, with every cipher suite name the OpenSSL names map to, and not with others. Settings
    // that differ in anything keep their pooled connections apart.
    let checked = crate::tls::upstream(&t, false).unwrap();
    let mut unchecked = t.clone();
    unchecked.skip_verify = true;
    let unchecked = crate::tls::upstream(&unchecked, false).unwrap();
    assert_ne!(checked.group_key, unchecked.group_key);
    let (all, bad) = openssl_ciphers(
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:\
         ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305",
    );
    assert!(bad.is_empty());
    assert_eq!(all.len(), 6);
    let mut c = t.clone();
    c.tls12_cipher_suites = all;
    assert!(crate::tls::upstream(&c, true).is_ok());
    c.tls12_cipher_suites = vec!["TLS_RSA_WITH_RC4_128_MD5".into()];
    assert!(crate::tls::upstream(&c, true).is_err());

    // The Secret has no CA: verify has no effect (warned), SNI still follows proxy-ssl-server-name.
    let (t, w) = backend_tls(&on, Some(&without_ca));
    let t = t.unwrap();
    assert!(t.skip_verify && !t.no_sni && t.client_certificate.is_none());
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].0, "proxy-ssl-verify");

    // A CA, verify off: not checked, but the other settings apply.
    let (t, _) = backend_tls(
        &b(&[
            ("backend-protocol", "HTTPS"),
            ("proxy-ssl-secret", "shop/ca"),
            ("proxy-ssl-protocols", "TLSv1.3"),
        ]),
        Some(&with_ca),
    );
    let t = t.unwrap();
    assert!(t.skip_verify && t.no_sni && t.verify_depth.is_none());
    assert_eq!(t.versions, [TlsVersion::Tls13]);

    // GRPCS: TLS, nothing checked, no SNI, whatever proxy-ssl says (nginx's grpc_pass ignores proxy_ssl_*).
    let (t, w) = backend_tls(
        &b(&[
            ("backend-protocol", "GRPCS"),
            ("proxy-ssl-secret", "shop/ca"),
            ("proxy-ssl-verify", "on"),
        ]),
        Some(&with_ca),
    );
    let t = t.unwrap();
    assert!(t.skip_verify && t.no_sni && t.client_certificate.is_none());
    assert_eq!(w.len(), 1);

    // Cleartext protocols: no TLS; proxy-ssl is reported as having no effect.
    let (t, w) = backend_tls(
        &b(&[
            ("backend-protocol", "GRPC"),
            ("proxy-ssl-secret", "shop/ca"),
        ]),
        Some(&with_ca),
    );
    assert!(t.is_none());
    assert_eq!(w.len(), 1);
    let (t, w) = backend_tls(&b(&[]), None);
    assert!(t.is_none() && w.is_empty());
}

#[test]
fn hash_variables() {
    use crate::model::HashOn;
    assert_eq!(hash_on("$request_uri"), Some(HashOn::Uri));
    assert_eq!(hash_on("${remote_addr}"), Some(HashOn::SourceIp));
    assert_eq!(hash_on("$binary_remote_addr"), Some(HashOn::SourceIp));
    assert_eq!(
        hash_on("$http_X_User"),
        Some(HashOn::Header("x-user".into()))
    );
    assert_eq!(hash_on("$cookie_sid"), Some(HashOn::Cookie("sid".into())));
    assert_eq!(hash_on("$arg_id"), Some(HashOn::QueryParam("id".into())));
    assert_eq!(hash_on("$host"), Some(HashOn::Host));
    assert_eq!(hash_on("${uri}"), Some(HashOn::Path));
    assert_eq!(hash_on("$query_string"), Some(HashOn::Query));
    assert_eq!(hash_on("$request_method"), Some(HashOn::Method));
    // Variables Portcullis cannot evaluate leave the whole key unapplied.
    assert_eq!(hash_on("$http_"), None);
    assert_eq!(hash_on("$request_id"), None);
    assert_eq!(hash_on("$host$server_port"), None);
    assert_eq!(hash_on("$1"), None);
    assert_eq!(hash_on(""), None);
}

#[test]
fn hash_keys_of_text_and_variables() {
    use crate::model::{HashOn, HashPart};
    let var = HashPart::Var;
    let text = |t: &str| HashPart::Text(t.into());
    assert_eq!(
        hash_on("$remote_addr$request_uri"),
        Some(HashOn::Parts(vec![var(HashOn::SourceIp), var(HashOn::Uri)]))
    );
    assert_eq!(
        hash_on("user-${cookie_sid}-$arg_id"),
        Some(HashOn::Parts(vec![
            text("user-"),
            var(HashOn::Cookie("sid".into())),
            text("-"),
            var(HashOn::QueryParam("id".into())),
        ]))
    );
    // A `$` that starts no variable name is text, as in ingress-nginx's parse_complex_value; adjacent text merges.
    assert_eq!(
        hash_on("a$-${}$host"),
        Some(HashOn::Parts(vec![text("a$-${}"), var(HashOn::Host)]))
    );
    assert_eq!(hash_on("fixed"), Some(HashOn::Parts(vec![text("fixed")])));
    // A name runs as far as letters, digits and underscores go.
    assert_eq!(
        hash_on("$http_x_user-$host"),
        Some(HashOn::Parts(vec![
            var(HashOn::Header("x-user".into())),
            text("-"),
            var(HashOn::Host),
        ]))
    );
}

#[test]
fn snippets_are_refused_unless_allowed() {
    for key in [
        "configuration-snippet",
        "server-snippet",
        "auth-snippet",
        "stream-snippet",
    ] {
        let a = parse_v1(&[(key, "more_set_headers \"X: y\";")]);
        assert_eq!(outcome(&a, key), Reject, "{key}");
    }
    let mut allowed = Settings::ingress_nginx();
    allowed.allow_snippets = true;
    let a = parse_in(&allowed, &[("configuration-snippet", "return 200;")]);
    assert_eq!(outcome(&a, "configuration-snippet"), Warn);
    assert!(!a.rejected());
}

#[test]
fn unknown_keys_name_the_closest_known_one() {
    let a = parse_v1(&[("rewrite-targt", "/")]);
    assert_eq!(outcome(&a, "rewrite-targt"), Warn);
    let msg = format!("{:?}", a.findings);
    assert!(
        msg.contains("did you mean nginx.ingress.kubernetes.io/rewrite-target"),
        "{msg}"
    );
    assert_eq!(closest_known("ssl-redirects"), "ssl-redirect");
    assert_eq!(closest_known("enable-corss"), "enable-cors");
    // Known but not supported at all: a warning, not "unknown".
    let a = parse_v1(&[("enable-modsecurity", "true")]);
    assert!(format!("{:?}", a.findings).contains("does not support"));
}

#[test]
fn empty_values_are_ignored_with_a_warning() {
    let a = parse_v1(&[("rewrite-target", "")]);
    assert_eq!(outcome(&a, "rewrite-target"), Warn);
    assert!(a.rewrite_target.is_none());
}

#[test]
fn custom_prefix_refuses_the_default_one() {
    let anns: BTreeMap<String, String> = [
        (
            "nginx.ingress.kubernetes.io/rewrite-target".to_string(),
            "/".to_string(),
        ),
        ("example.com/rewrite-target".to_string(), "/".to_string()),
    ]
    .into_iter()
    .collect();
    let settings = Settings::ingress_v1();
    let cx = Context {
        prefix: "example.com",
        namespace: "shop",
        name: "web",
        settings: &settings,
    };
    let a = parse(&anns, &cx);
    assert!(a.rejected());
    assert_eq!(a.rewrite_target.as_deref(), Some("/"));
}

#[test]
fn capture_templates() {
    assert_eq!(
        capture_template("/a/$1/$10$").unwrap(),
        vec![
            T::Text("/a/".into()),
            T::Capture(1),
            T::Text("/".into()),
            T::Capture(1),
            T::Text("0$".into())
        ]
    );
    assert!(capture_template("/${x}").is_err());
    assert_eq!(
        url_template("https://$host/s?rd=${escaped_request_uri}").unwrap(),
        vec![
            UrlPart::Text("https://".into()),
            UrlPart::Host,
            UrlPart::Text("/s?rd=".into()),
            UrlPart::EscapedRequestUri
        ]
    );
    assert!(url_template("https://$remote_addr/").is_err());
}
