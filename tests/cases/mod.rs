//! Shared by the property tests (`tests/prop_*.rs`): the case count and the run settings that `scripts/fuzz`
//! changes through the environment.
#![allow(dead_code)]

use proptest::test_runner::{Config, FileFailurePersistence};

/// The proptest configuration of one property: `default_cases` cases unless `PROPTEST_CASES` is set (what
/// `scripts/fuzz` does to run the same properties longer), and every other setting from proptest's own
/// environment variables (`PROPTEST_RNG_SEED` replays a run).
///
/// The default counts keep each `tests/prop_*.rs` file under about 20 s in a debug build on two cores (the CI
/// budget); they are chosen per property from measured times.
pub fn config(default_cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = default_cases;
    }
    // A failing case's seed is saved next to the test file (`tests/prop_*.proptest-regressions`) and replayed
    // first on later runs; commit that file with the fix. Proptest's default location needs a `lib.rs` or
    // `main.rs` above the test file, which integration tests do not have.
    if c.failure_persistence.is_some() {
        c.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        )));
    }
    c
}
