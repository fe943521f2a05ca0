//! End-to-end: ingress-nginx `upstream-hash-by` on an Ingress of our own class, with a key of text and several
//! variables (`$host`, `$http_NAME`, `$arg_NAME`). Requests with the same key values always reach the same one of
//! three echo endpoints; different values spread over them; a value outside the key (another query parameter)
//! does not move a request.

mod common;

use anyhow::Result;
use common::{echo, free_port, ingress_yaml, service_yaml, Proxy, CLASSES};
use proto_conformance::echo::EchoServer;
use std::collections::{BTreeMap, BTreeSet};

fn manifests(svc: &str) -> String {
    let key = [(
        "nginx.ingress.kubernetes.io/upstream-hash-by",
        "$host-${http_x_user}-$arg_id",
    )];
    format!(
        "{CLASSES}{svc}{}{}",
        ingress_yaml("default", "hashed-a", "a.example.com", "/", "web", &key),
        ingress_yaml("default", "hashed-b", "b.example.com", "/", "web", &key)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_several_variables_pins_requests_to_an_endpoint() -> Result<()> {
    let mut servers: Vec<EchoServer> = Vec::new();
    for p in ["web-a-1", "web-b-1", "web-c-1"] {
        servers.push(echo(p, "default").await?);
    }
    let refs: Vec<&EchoServer> = servers.iter().collect();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    std::fs::write(
        dir.path().join("all.yaml"),
        manifests(&service_yaml("default", "web", 80, &refs)),
    )?;
    let proxy = Proxy::start(dir.path(), port, &[])?;
    assert!(
        !proxy.log_text().contains("upstream-hash-by"),
        "the key is applied without a warning:\n{}",
        proxy.log_text()
    );

    // Each (host, user, id) goes to one endpoint, however often it is asked and whatever else the query says.
    let mut pod_of: BTreeMap<(&str, String, u32), String> = BTreeMap::new();
    for round in 0..4 {
        for host in ["a.example.com", "b.example.com"] {
            for user in 0..6 {
                let user = format!("u{user}");
                for id in 0..2 {
                    let path = format!("/item?id={id}&round={round}");
                    let r = common::get(port, host, &path, &[("x-user", &user)])?;
                    assert_eq!(r.status, 200, "{}", r.text());
                    let pod = r.pod();
                    let first = pod_of
                        .entry((host, user.clone(), id))
                        .or_insert(pod.clone());
                    assert_eq!(*first, pod, "{host} {user} id={id} moved in round {round}");
                }
            }
        }
    }
    let used: BTreeSet<&String> = pod_of.values().collect();
    assert_eq!(
        used.len(),
        3,
        "24 keys spread over the three endpoints: {pod_of:?}"
    );
    // The host is part of the key: some (user, id) lands elsewhere on the other host.
    assert!(
        pod_of.iter().any(|((h, u, i), p)| *h == "a.example.com"
            && pod_of.get(&("b.example.com", u.clone(), *i)) != Some(p)),
        "{pod_of:?}"
    );
    Ok(())
}
