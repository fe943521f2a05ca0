//! `portcullis migrate` on the annotated ingress-nginx example: golden output (objects and report), the proof,
//! `--only`, and the checker catching a broken migration.

use anyhow::Result;
use portcullis::migrate::{self, Options, Selector};
use portcullis::source::file::{input_from_str, FileLoader};
use portcullis::translate;
use std::path::Path;

fn options(only: &[&str]) -> Options {
    let mut t = translate::Options::default();
    t.nginx.classes = vec!["nginx".into()];
    Options {
        gateway: ("default".into(), "portcullis".into()),
        only: only.iter().map(|s| Selector::parse(s).unwrap()).collect(),
        translate: t,
    }
}

fn example() -> portcullis::source::Input {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ingress-nginx");
    let loaded = FileLoader::new(vec![dir]).load();
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    loaded.input
}

/// Compares with the golden file, or writes it with UPDATE_GOLDEN=1.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/migrate")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{} differs", path.display());
}

#[test]
fn whole_example_golden_and_proven() -> Result<()> {
    let input = example();
    let opts = options(&[]);
    let out = migrate::migrate(&input, &opts);
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    let text: String = files
        .iter()
        .filter(|(n, _)| *n != "other.yaml")
        .map(|(n, t)| format!("# {n}\n{t}"))
        .collect();
    golden("store.out.yaml", &text);
    golden("store.report.txt", &out.to_string());
    let proof = migrate::prove(&input, &files, &opts.translate);
    assert!(proof.errors.is_empty(), "{:?}", proof.errors);
    assert!(proof.report.is_equivalent(), "{}", proof.report);
    // The generated objects read back with the gateway-api crate's own types.
    let routes = &files
        .iter()
        .find(|(n, _)| *n == "httproutes.yaml")
        .unwrap()
        .1;
    for doc in routes.split("---\n").filter(|d| !d.trim().is_empty()) {
        let r: portcullis::k8s::gw::HTTPRoute = serde_saphyr::from_str(doc)?;
        assert!(r.spec.parent_refs.is_some());
    }
    Ok(())
}

#[test]
fn only_one_host_moves_and_the_rest_is_untouched() -> Result<()> {
    let input = example();
    let opts = options(&["www.shop.example.com/static"]);
    let out = migrate::migrate(&input, &opts);
    let moved: Vec<&str> = out
        .report
        .iter()
        .filter(|r| r.moved)
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(moved, ["/static (Prefix)"]);
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    let proof = migrate::prove(&input, &files, &opts.translate);
    assert!(proof.errors.is_empty(), "{:?}", proof.errors);
    assert!(proof.report.is_equivalent(), "{}", proof.report);
    Ok(())
}

#[test]
fn the_checker_catches_a_broken_migration() -> Result<()> {
    let input = example();
    let opts = options(&[]);
    let out = migrate::migrate(&input, &opts);
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    // A hand edit: the /static prefix becomes an exact path, and the admin route loses its annotations.
    let broken: Vec<(&'static str, String)> = files
        .iter()
        .map(|(n, t)| {
            let t = if *n == "httproutes.yaml" {
                t.replacen("type: PathPrefix\n        value: /static", "type: Exact\n        value: /static", 1)
                    .replace("portcullis.dev/ingress-nginx-profile: ingress-nginx\n    nginx.ingress.kubernetes.io/auth", "nginx.ingress.kubernetes.io/auth")
            } else {
                t.clone()
            };
            (*n, t)
        })
        .collect();
    assert_ne!(broken, files);
    let proof = migrate::prove(&input, &broken, &opts.translate);
    assert!(!proof.report.is_equivalent());
    let paths: Vec<&str> = proof
        .report
        .differences
        .iter()
        .map(|d| d.request.path.as_str())
        .collect();
    assert!(paths.contains(&"/static/"), "{}", proof.report);
    Ok(())
}

#[test]
fn generated_routes_translate_without_problems() -> Result<()> {
    let input = example();
    let out = migrate::migrate(&input, &options(&[]));
    let files = migrate::files(&out, &input).map_err(anyhow::Error::msg)?;
    let text: String = files.iter().map(|(_, t)| t.as_str()).collect();
    let (new_input, problems) = input_from_str(&text);
    assert!(problems.is_empty(), "{problems:?}");
    let t = translate::translate(&new_input, &options(&[]).translate);
    let generated: Vec<_> = t
        .diagnostics
        .iter()
        .filter(|d| d.object.kind != "Ingress")
        .collect();
    assert!(generated.is_empty(), "{generated:?}");
    // Every route is accepted by the Gateway.
    assert_eq!(new_input.http_routes.len(), out.routes.len());
    Ok(())
}
