//! The WASI policy: every interface a language runtime imports is linked, and the context
//! behind them grants nothing.
//!
//! A sandbox that refuses every plugin whose standard library imports an interface is a
//! language filter, not a policy: CPython (componentize-py) imports `wasi:filesystem` and
//! `wasi:sockets` whether or not a strategy uses them, and SpiderMonkey (componentize-js)
//! imports `wasi:http` by default. So the host links all of WASI 0.2 and decides what each
//! interface *does*, the way wasmtime's own CLI and Spin do:
//! - no preopened directories: `wasi:filesystem/preopens` returns an empty list, so there is
//!   no descriptor to open any file through;
//! - no network: TCP, UDP and name lookups are disallowed and every socket address is
//!   refused, so every socket operation fails with `access-denied`/`not-supported`;
//!   `wasi:http/outgoing-handler` refuses every request with `HTTP-request-denied` (the host
//!   has no HTTP client built in at all);
//! - no environment variables, no arguments, an empty stdin, no terminal;
//! - stdout and stderr captured per invocation into the host's log, capped
//!   ([`GuestLog`](super::guest_log::GuestLog));
//! - clocks and randomness granted but deterministic: the wall clock reads the Unix epoch, the
//!   monotonic clock never advances, randomness is a fixed seeded sequence. Runtimes need them
//!   to start (a default `HashMap` seeds itself), while real time and entropy would make
//!   snapshots irreproducible and leak facts about the host.
//!
//! A denied attempt fails inside the guest with the WASI error, where the strategy can handle
//! it; nothing on the host is touched. Interfaces outside WASI 0.2's proposals (say
//! `wasi:keyvalue`) are not linked and such a plugin is refused at load, naming every one.

use wasmtime::component::Linker;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpHooks};

use super::guest_log::GuestLog;
use super::store::InvocationState;

/// What one WASI interface gives a strategy, for `plugin info` and the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The interface name without package version, e.g. `wasi:filesystem/preopens`.
    pub interface: &'static str,
    /// What a call through it can achieve here.
    pub grants: &'static str,
}

/// Every WASI interface the host links, and what it grants. An import of a `wasi:` interface
/// not listed here is refused at load.
pub const WASI_POLICY: &[Grant] = &[
    Grant { interface: "wasi:io/error", grants: "granted: errors of the streams below" },
    Grant { interface: "wasi:io/poll", grants: "granted: polling of the streams below" },
    Grant { interface: "wasi:io/streams", grants: "granted: only the streams listed here" },
    Grant { interface: "wasi:cli/environment", grants: "empty: no variables, no arguments, no working directory" },
    Grant { interface: "wasi:cli/exit", grants: "granted: ends the invocation, which then fails" },
    Grant { interface: "wasi:cli/stdin", grants: "empty: end of stream" },
    Grant { interface: "wasi:cli/stdout", grants: "captured into the host's log (capped per invocation)" },
    Grant { interface: "wasi:cli/stderr", grants: "captured into the host's log (capped per invocation)" },
    Grant { interface: "wasi:cli/terminal-input", grants: "none: there is no terminal" },
    Grant { interface: "wasi:cli/terminal-output", grants: "none: there is no terminal" },
    Grant { interface: "wasi:cli/terminal-stdin", grants: "none: there is no terminal" },
    Grant { interface: "wasi:cli/terminal-stdout", grants: "none: there is no terminal" },
    Grant { interface: "wasi:cli/terminal-stderr", grants: "none: there is no terminal" },
    Grant { interface: "wasi:clocks/wall-clock", grants: "deterministic: always the Unix epoch" },
    Grant { interface: "wasi:clocks/monotonic-clock", grants: "deterministic: never advances" },
    Grant { interface: "wasi:random/random", grants: "deterministic: a fixed seeded sequence" },
    Grant { interface: "wasi:random/insecure", grants: "deterministic: a fixed seeded sequence" },
    Grant { interface: "wasi:random/insecure-seed", grants: "deterministic: a fixed seed" },
    Grant { interface: "wasi:filesystem/preopens", grants: "none: no directory is preopened" },
    Grant { interface: "wasi:filesystem/types", grants: "none: there is no descriptor to use it on" },
    Grant { interface: "wasi:sockets/instance-network", grants: "denied: every socket operation fails" },
    Grant { interface: "wasi:sockets/network", grants: "denied: every socket operation fails" },
    Grant { interface: "wasi:sockets/tcp", grants: "denied: every socket operation fails" },
    Grant { interface: "wasi:sockets/tcp-create-socket", grants: "denied: every socket operation fails" },
    Grant { interface: "wasi:sockets/udp", grants: "denied: every socket operation fails" },
    Grant { interface: "wasi:sockets/udp-create-socket", grants: "denied: every socket operation fails" },
    Grant { interface: "wasi:sockets/ip-name-lookup", grants: "denied: every lookup fails" },
    Grant { interface: "wasi:http/types", grants: "types only: no request can be sent" },
    Grant { interface: "wasi:http/outgoing-handler", grants: "denied: every request fails (HTTP-request-denied)" },
];

/// The grant of an import such as `wasi:filesystem/types@0.2.9`, or `None` if the host does not
/// link that interface. Only WASI 0.2 is linked; another major line is not the same interface.
pub fn grant_of(import: &str) -> Option<&'static Grant> {
    let (interface, version) = import.split_once('@').unwrap_or((import, ""));
    if !(version.is_empty() || version.starts_with("0.2.")) {
        return None;
    }
    WASI_POLICY.iter().find(|g| g.interface == interface)
}

pub(crate) fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)?;
    Ok(())
}

/// The WASI context of one invocation: nothing granted but captured output and
/// deterministic clocks and randomness.
pub(crate) fn context(stdout: GuestLog, stderr: GuestLog) -> WasiCtx {
    const SEED: &[u8] = b"snapshot-host deterministic randomness";
    WasiCtxBuilder::new()
        .stdout(stdout)
        .stderr(stderr)
        .wall_clock(FixedClock)
        .monotonic_clock(FixedClock)
        .secure_random(wasmtime_wasi::Deterministic::new(SEED.to_vec()))
        .insecure_random(wasmtime_wasi::Deterministic::new(SEED.to_vec()))
        .insecure_random_seed(0)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_: std::net::SocketAddr, _: SocketAddrUse| Box::pin(async { false }))
        .build()
}

/// The `wasi:http` context: default field limits; requests never leave the host.
pub(crate) fn http_context() -> WasiHttpCtx {
    WasiHttpCtx::new()
}

/// Refuses every outgoing HTTP request; the guest sees `HTTP-request-denied`.
#[derive(Debug, Default)]
pub(crate) struct DenyHttp;

impl WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// A clock that always reads zero (the Unix epoch; a monotonic clock that never advances).
struct FixedClock;

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_by_interface_within_wasi_0_2() {
        assert!(grant_of("wasi:filesystem/types@0.2.9").unwrap().grants.starts_with("none"));
        assert!(grant_of("wasi:http/outgoing-handler@0.2.10").unwrap().grants.starts_with("denied"));
        assert!(grant_of("wasi:io/streams").is_some());
        assert!(grant_of("wasi:io/streams@0.3.0").is_none(), "WASI 0.3 is another interface");
        assert!(grant_of("wasi:keyvalue/store@0.2.0").is_none());
    }
}
