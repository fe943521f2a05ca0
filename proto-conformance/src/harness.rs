//! The cluster-less Gateway API conformance harness: replays the upstream conformance suite (the material in
//! `shared/conformance/gateway-api`, see its README) against the real `portcullis` binary.
//!
//! For every upstream test it builds a *world* ([`world`]): the base manifests and the test's manifests with the
//! placeholders filled and one loopback address per Gateway, the TLS Secrets and CA ConfigMaps the suite
//! generates ([`certs`]), one in-process echo server per pod ([`pods`]) and the EndpointSlices that select them.
//! It writes the world as YAML files, starts `portcullis run` on them ([`proxy`]), and then either replays the
//! test's cases of the selected suites with the upstream comparison and eventual-consistency rules (HTTP:
//! [`runner`], [`compare`], [`client`]; gRPC and L4: [`protocases`], [`grpc`], [`l4`]) or, for the status-only
//! tests, checks the conditions upstream asserts against `GET /status` ([`status`], expectations in
//! `proto-conformance/expected/status/`). [`report`] prints a table per SupportedFeature and the line
//! `conformance: P passed, F failed, S skipped` (every case of the selected suites and every status-only test
//! except the not-applicable ones),
//! and compares a run with the expected-results files CI uses.
//!
//! Where the harness has to decide something the derived data leaves open, it follows the upstream Go code:
//!
//! * the Host header of a case without `request.host` is Go's `CalculateHost` of the gateway address (the IP, with
//!   the port only when it is not the scheme's default); every request carries `X-Echo-Set-Header`, Go's
//!   `User-Agent` and `Accept-Encoding: gzip`, one request per connection, redirects are never followed;
//! * `{{uuid}}` is a fresh UUID per request (retry probes, mirror request ids);
//! * the harness plays the apiserver: every object gets `metadata.generation: 1`, a spec change bumps it, Namespaces
//!   get `kubernetes.io/metadata.name`; objects have no `creationTimestamp`, so ties between objects are decided by
//!   namespace/name (as for objects created in the same second);
//! * an expected request with an empty path means "the gateway answers itself" (CORS preflight): the method is not
//!   compared then, as upstream's own workaround in `httproute-cors.go` intends;
//! * GatewayTLSBackendClientCertificate: the backend must see the Gateway's client certificate (upstream's
//!   `ClientCert` expectation, lost in `cases.jsonl`);
//! * `expect_failure` cases need three consecutive failing round trips (upstream: one shot after the passing case);
//!   with a client certificate the server must also have asked for it (upstream's `GetClientCertificate` hook);
//! * certificates are ECDSA P-256 (rcgen with ring cannot make RSA keys); names, SANs and issuers are upstream's;
//! * a status step holds when all its assertions hold on two consecutive polls of `GET /status` (upstream polls
//!   each helper on its own; the conditions are the same);
//! * the gRPC and L4 cases (`--suites grpc,l4`, [`protocases`]) run against in-process gRPC, TCP and UDP echo pods;
//!   the CoreDNS pod of the UDPRoute test is a stand-in answering its Corefile's `whoami` zones ([`crate::echo::dns`]),
//!   not CoreDNS;
//! * a gRPC case without `:authority` sends the gateway address `ip:port` (the manifest port), as
//!   `grpc.NewClient(address)` does; a response that is not gRPC gets the code of its HTTP status, as in grpc-go;
//! * a case never passes when the gateway cannot be reached (connect refused, TLS handshake failure), not even an
//!   `expect_failure` gRPC case (grpc-go would report `UNAVAILABLE`, a non-OK code);
//! * TCP, UDP, DNS and TLS-rejection cases pass on the first matching exchange, as upstream's `Eventually`/poll
//!   helpers do; a mismatch is retried until the consistency time (upstream's non-fatal `assert`s inside the
//!   TCP helper fail the test at once);
//! * the newer TCPRoute/UDPRoute that the `*MultipleRoutesAttachment` tests create in Go are built by
//!   [`runtime_objects`] and written with a `creationTimestamp` one second after the routes already there;
//! * status-only tests run when the GatewayClass's `supportedFeatures` (read from `/status`) lists every feature
//!   they need, as upstream's feature inference decides; a test whose Go body returns before any check given
//!   those features (`requiresClaimed`/`requiresUnclaimed` in its expectation file) is reported "not applicable",
//!   where upstream reports it passed.

pub mod certs;
pub mod client;
pub mod compare;
pub mod data;
pub mod grpc;
pub mod l4;
pub mod pods;
pub mod protocases;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod runtime_objects;
pub mod status;
pub mod tlsverify;
pub mod util;
pub mod world;
pub mod yaml;
