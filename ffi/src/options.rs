//! `sy_channel_options`: a builder for what `sy_channel_new_with_options`
//! takes beyond the target and config (rustls-ffi's config-builder style:
//! allocate, set, pass, free; the channel copies what it needs).

use crate::error::Error;
use crate::macros::{boundary, boundary_or};
use crate::status::sy_status;
use crate::strings::{slice_arg, str_arg};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::ffi::{c_char, c_int, c_void};
use std::time::Duration;
use switchyard::backoff::BackoffConfig;
use switchyard::resolver::ResolverOptions;
use switchyard::transport::DEFAULT_MAX_HEADER_LIST_SIZE;
use switchyard::{Credentials, Keepalive, TlsSettings, TransportConfig};

/// The largest value `sy_channel_options_set_call_threads` (deprecated) accepts.
pub const SY_MAX_CALL_THREADS: u32 = 256;
/// Completion threads per channel when not set.
pub(crate) const DEFAULT_CALL_THREADS: usize = 8;

/// Options for `sy_channel_new_simple` and `sy_channel_new_with_options`.
/// Opaque; owned by the caller (`sy_channel_options_new`, or in one call
/// with the credentials named: `sy_channel_options_new_insecure`,
/// `sy_channel_options_new_tls`; freed with `sy_channel_options_free`).
///
/// Defaults (a fresh handle, or passing NULL instead of one): TLS with the
/// system's trusted roots, verifying each address's host name; no client
/// certificate; no keepalive; gRPC's size limits (4 MiB per received
/// message, 16 MiB per header list); gRPC's connection backoff (1 s, x1.6, +-20 %,
/// at most 120 s, at least 20 s per attempt); the target's authority; an idle
/// timeout of 30 minutes; for `dns:` targets, no service config from DNS and
/// at most one re-resolution per 30 s when asked (a resolution the channel
/// rejected is looked up again on the channel's backoff).
///
/// Setters validate their input and return SY_OK, SY_NULL_PARAMETER,
/// SY_INVALID_ARGUMENT or SY_INVALID_UTF8; a failed setter changes nothing.
/// Not thread-safe: set from one thread at a time (or with external locking).
/// A channel copies the options at creation, so one handle may be reused for
/// any number of channels and freed right after.
pub struct sy_channel_options {
    pub(crate) inner: Options,
}

#[derive(Clone, Debug)]
pub(crate) struct Options {
    insecure: bool,
    server_name: Option<String>,
    roots_pem: Option<Vec<u8>>,
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
    keepalive: Option<Keepalive>,
    max_recv_message_size: Option<usize>,
    /// `None`: the default (`DEFAULT_MAX_HEADER_LIST_SIZE`).
    max_header_list_size: Option<u32>,
    /// The application's part of every call's `user-agent`.
    user_agent: Option<String>,
    pub(crate) backoff: BackoffConfig,
    pub(crate) call_threads: usize,
    /// The host's re-resolution callback and its ctx (empty target).
    pub(crate) resolve_now: Option<(unsafe extern "C" fn(*mut c_void), *mut c_void)>,
    /// Every call's `:authority` (`None`: the target's).
    pub(crate) authority: Option<String>,
    /// `None`: the default (30 min); zero: never idle.
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) resolver: ResolverOptions,
    /// `sy_channel_options_set_pick_counts(.., false)`.
    pub(crate) skip_pick_counts: bool,
    /// `sy_channel_options_set_health_checking(.., false)`.
    pub(crate) disable_health_check: bool,
    /// `sy_channel_options_set_retries(.., false)`.
    pub(crate) disable_retry: bool,
}

/// Hears that the channel wants its addresses resolved again (a backend
/// was lost, or the policy found the addresses unusable), for a channel
/// whose host supplies them (target ""). Called on the loop thread with the
/// `ctx` given; must not block: resolve elsewhere, then
/// `sy_channel_update_addresses` (or `sy_channel_report_resolver_error`).
/// Channels with a resolver of their own never call it.
pub type sy_resolve_now_fn = Option<unsafe extern "C" fn(ctx: *mut c_void)>;

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: false,
            server_name: None,
            roots_pem: None,
            client_cert: None,
            keepalive: None,
            max_recv_message_size: None,
            max_header_list_size: None,
            user_agent: None,
            backoff: BackoffConfig::default(),
            call_threads: DEFAULT_CALL_THREADS,
            resolve_now: None,
            authority: None,
            idle_timeout: None,
            skip_pick_counts: false,
            disable_health_check: false,
            disable_retry: false,
            resolver: ResolverOptions::default(),
        }
    }
}

impl Options {
    /// The defaults with plaintext HTTP/2 (h2c) instead of TLS.
    pub(crate) fn insecure() -> Options {
        Options {
            insecure: true,
            ..Options::default()
        }
    }

    /// Whether anything only a library-managed channel can use was set.
    pub(crate) fn has_transport_settings(&self) -> bool {
        self.insecure
            || self.server_name.is_some()
            || self.roots_pem.is_some()
            || self.client_cert.is_some()
            || self.keepalive.is_some()
            || self.max_recv_message_size.is_some()
            || self.max_header_list_size.is_some()
            || self.user_agent.is_some()
    }

    /// The core's transport config: `None` (TLS, bundled roots) unless
    /// something was set.
    pub(crate) fn transport(&self) -> Result<Option<TransportConfig>, Error> {
        let tls_set =
            self.server_name.is_some() || self.roots_pem.is_some() || self.client_cert.is_some();
        if self.insecure && tls_set {
            return Err(Error::invalid(
                "options: insecure (plaintext) together with TLS settings",
            ));
        }
        if !self.has_transport_settings() {
            return Ok(None);
        }
        let credentials = if self.insecure {
            Credentials::Insecure
        } else {
            Credentials::Tls(TlsSettings {
                // Empty: each address's own host.
                server_name: self.server_name.clone().unwrap_or_default(),
                roots_pem: self.roots_pem.clone(),
                client_cert: self.client_cert.clone(),
            })
        };
        Ok(Some(TransportConfig {
            credentials,
            keepalive: self.keepalive,
            max_recv_message_size: self.max_recv_message_size,
            max_header_list_size: self
                .max_header_list_size
                .unwrap_or(DEFAULT_MAX_HEADER_LIST_SIZE),
            user_agent: self.user_agent.clone(),
        }))
    }
}

fn options_mut<'a>(opts: *mut sy_channel_options) -> Result<&'a mut Options, Error> {
    Ok(&mut try_mut!(opts, "options").inner)
}

/// Bytes from C: NULL only with length 0; impossible lengths refused.
fn bytes<'a>(p: *const u8, len: usize, name: &'static str) -> Result<&'a [u8], Error> {
    // SAFETY: `len` readable bytes at `p` per the caller's contract.
    unsafe { slice_arg(p, len, name) }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Allocates options holding the defaults. On success `*out` belongs to the
/// caller (`sy_channel_options_free`). Any thread.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_channel_options_new(out: *mut *mut sy_channel_options) -> sy_status {
    boundary(|| {
        let out = try_out!(out, "out");
        let o = Box::into_raw(Box::new(sy_channel_options {
            inner: Options::default(),
        }));
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(o) };
        Ok(())
    })
}

/// The common case in one call: options for plaintext HTTP/2 (h2c), as
/// `sy_channel_options_new` followed by `sy_channel_options_set_insecure(o,
/// true)`. For backends without TLS (on loopback, in a trusted network).
/// On success `*out` belongs to the caller (`sy_channel_options_free`).
/// Any thread.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_channel_options_new_insecure(out: *mut *mut sy_channel_options) -> sy_status {
    boundary(|| {
        let out = try_out!(out, "out");
        let o = Box::into_raw(Box::new(sy_channel_options {
            inner: Options::insecure(),
        }));
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(o) };
        Ok(())
    })
}

/// The common case in one call: options for TLS, verifying each address's
/// host name. `roots_pem`, `len`: the roots to trust, as
/// `sy_channel_options_set_tls_roots_pem`; NULL and 0 for the system's
/// trusted roots (what `sy_channel_options_new` gives). Errors as that setter's
/// (SY_INVALID_ARGUMENT: no parsable certificate; SY_NULL_PARAMETER: NULL
/// with a length). On success `*out` belongs to the caller
/// (`sy_channel_options_free`). Any thread.
#[no_mangle]
#[must_use]
pub extern "C" fn sy_channel_options_new_tls(
    roots_pem: *const u8,
    len: usize,
    out: *mut *mut sy_channel_options,
) -> sy_status {
    boundary(|| {
        let out = try_out!(out, "out");
        let mut inner = Options::default();
        if !(roots_pem.is_null() && len == 0) {
            inner.roots_pem = Some(roots_from_pem(bytes(roots_pem, len, "roots_pem")?)?);
        }
        let o = Box::into_raw(Box::new(sy_channel_options { inner }));
        // SAFETY: non-NULL out-parameter, written on success only.
        unsafe { out.write(o) };
        Ok(())
    })
}

/// Checks that `pem` holds at least one certificate and copies it.
fn roots_from_pem(pem: &[u8]) -> Result<Vec<u8>, Error> {
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| Error::invalid(format!("roots PEM: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(Error::invalid("roots PEM holds no certificate"));
    }
    // PEM blocks that decode are not yet certificates: each must parse as
    // a trust anchor, or every connection would fail on it later.
    let pem = pem.to_vec();
    switchyard::TlsSettings {
        roots_pem: Some(pem.clone()),
        ..Default::default()
    }
    .check()
    .map_err(|e| Error::invalid(format!("roots PEM: {e}")))?;
    Ok(pem)
}

/// Frees options. Channels created with them are unaffected. NULL is a
/// no-op; a second free is undefined, like free(3).
#[no_mangle]
pub extern "C" fn sy_channel_options_free(opts: *mut sy_channel_options) {
    boundary_or((), || {
        if !opts.is_null() {
            // SAFETY: from `sy_channel_options_new`, freed once per the contract.
            drop(unsafe { Box::from_raw(opts) });
        }
    })
}

/// `insecure` true: plaintext HTTP/2 (h2c, prior knowledge) instead of TLS.
/// Cannot be combined with the TLS setters (the channel creation fails with
/// SY_INVALID_ARGUMENT).
#[no_mangle]
pub extern "C" fn sy_channel_options_set_insecure(
    opts: *mut sy_channel_options,
    insecure: bool,
) -> sy_status {
    boundary(|| {
        options_mut(opts)?.insecure = insecure;
        Ok(())
    })
}

/// Trust only these roots: `pem`, `len` bytes of PEM with at least one
/// CERTIFICATE (copied; it need not be NUL-terminated). Replaces the system's
/// trusted roots. SY_INVALID_ARGUMENT if it holds no parsable certificate.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_tls_roots_pem(
    opts: *mut sy_channel_options,
    pem: *const u8,
    len: usize,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.roots_pem = Some(roots_from_pem(bytes(pem, len, "pem")?)?);
        Ok(())
    })
}

/// The name to send as SNI and to verify the server's certificate against,
/// for every address (NUL-terminated UTF-8, copied); also the calls'
/// `:authority` unless `sy_channel_options_set_authority` sets one (gRPC's
/// order: the authority given, the TLS name given, the target's). By
/// default the authority's host is used. "" restores that default.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_tls_server_name(
    opts: *mut sy_channel_options,
    server_name: *const c_char,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        // SAFETY: NUL-terminated per the contract.
        let name = unsafe { str_arg(server_name, "server_name") }?;
        if !name.is_empty() {
            rustls_pki_types::ServerName::try_from(name)
                .map_err(|e| Error::invalid(format!("TLS server name {name:?}: {e}")))?;
        }
        o.server_name = (!name.is_empty()).then(|| name.to_string());
        Ok(())
    })
}

/// Mutual TLS: present this certificate chain (`cert_pem`, PEM, leaf first)
/// and private key (`key_pem`, PEM: PKCS#8, PKCS#1 or SEC1). Both copied;
/// neither need be NUL-terminated. SY_INVALID_ARGUMENT if either does not
/// parse (whether the key matches the certificate is checked when
/// connecting).
#[no_mangle]
pub extern "C" fn sy_channel_options_set_client_cert(
    opts: *mut sy_channel_options,
    cert_pem: *const u8,
    cert_len: usize,
    key_pem: *const u8,
    key_len: usize,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        let cert = bytes(cert_pem, cert_len, "cert_pem")?;
        let key = bytes(key_pem, key_len, "key_pem")?;
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid(format!("client certificate PEM: {e}")))?;
        if chain.is_empty() {
            return Err(Error::invalid(
                "client certificate PEM holds no certificate",
            ));
        }
        PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| Error::invalid(format!("client key PEM: {e}")))?;
        o.client_cert = Some((cert.to_vec(), key.to_vec()));
        Ok(())
    })
}

/// HTTP/2 keepalive: after `time_ms` without reading anything, send a PING
/// and drop the connection if no ack comes within `timeout_ms` (0: 20000,
/// gRPC's default). `permit_without_calls`: also when no call is in flight.
/// `time_ms` 0 turns keepalive off (the default); under 10000 it is raised
/// to 10000 (gRFC A8's client minimum). A server may answer too
/// frequent pings with GOAWAY ENHANCE_YOUR_CALM; the time is then doubled.
/// Without `permit_without_calls` no PING goes out while no call is in
/// flight, and a call starting after `time_ms` of quiet pings at once. On
/// Linux, TCP connections also get TCP_USER_TIMEOUT = the timeout (gRFC A18).
#[no_mangle]
pub extern "C" fn sy_channel_options_set_keepalive(
    opts: *mut sy_channel_options,
    time_ms: u64,
    timeout_ms: u64,
    permit_without_calls: bool,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.keepalive = (time_ms != 0).then(|| Keepalive {
            time: ms(time_ms),
            timeout: ms(if timeout_ms == 0 { 20_000 } else { timeout_ms }),
            permit_without_calls,
        });
        Ok(())
    })
}

/// The largest response message a call accepts, in bytes: a larger one
/// fails that call with gRPC status RESOURCE_EXHAUSTED (8) before it is
/// buffered. 0 restores the default: 4 MiB (gRPC's), or the method config's
/// `maxResponseMessageBytes` where it sets one (a set limit and the
/// method's: the smaller applies). SY_INVALID_ARGUMENT
/// above 4294967295 (gRPC's length prefix is 32 bits). For library-managed
/// channels: with a host transport the channel creation fails with
/// SY_INVALID_ARGUMENT.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_max_recv_message_size(
    opts: *mut sy_channel_options,
    bytes: usize,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        if u32::try_from(bytes).is_err() {
            return Err(Error::invalid(format!(
                "max receive message size {bytes} exceeds {}",
                u32::MAX
            )));
        }
        o.max_recv_message_size = (bytes != 0).then_some(bytes);
        Ok(())
    })
}

/// The largest response header list (headers, or trailers) a call accepts,
/// counted as HTTP/2 does (name + value + 32 bytes per field), announced to
/// servers as SETTINGS_MAX_HEADER_LIST_SIZE. A larger list fails its call
/// with gRPC status INTERNAL (13); one over four times the limit ends the
/// connection. 0 restores the default, 16 MiB (gRPC-Go's). For
/// library-managed channels, as the receive message limit.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_max_header_list_size(
    opts: *mut sy_channel_options,
    bytes: u32,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        // Set (even to the default's value) is set: a host channel refuses it.
        o.max_header_list_size = (bytes != 0).then_some(bytes);
        Ok(())
    })
}

/// The application's name and version (NUL-terminated printable ASCII,
/// copied, e.g. "myapp/1.2"), sent in every call's `user-agent` before the
/// library's own ("myapp/1.2 grpc-rust-switchyard/0.1.0"), as gRPC-Go's
/// `WithUserAgent` and C-core's `grpc.primary_user_agent`. "" restores the
/// default: the library's alone. SY_INVALID_ARGUMENT if it is not printable
/// ASCII. For library-managed channels, as the receive message limit.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_user_agent(
    opts: *mut sy_channel_options,
    user_agent: *const c_char,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        // SAFETY: NUL-terminated per the contract.
        let ua = unsafe { str_arg(user_agent, "user_agent") }?;
        let ua = (!ua.is_empty()).then(|| ua.to_string());
        TransportConfig {
            user_agent: ua.clone(),
            ..TransportConfig::default()
        }
        .user_agent_header()
        .map_err(Error::invalid)?;
        o.user_agent = ua;
        Ok(())
    })
}

/// Connection backoff (gRPC's connection-backoff spec): the first retry after
/// `initial_ms`, growing x1.6 (+-20 % jitter; see
/// `sy_channel_options_set_backoff_growth`) up to `max_ms`; every attempt
/// gets at least `min_connect_timeout_ms` to connect. 0 keeps that value's
/// default (1000, 120000, 20000). SY_INVALID_ARGUMENT if the initial backoff
/// exceeds the maximum. With a host transport the spacing of attempts is
/// the library's, but the host bounds each attempt itself (it owns the
/// connection): the library waits for its report however long it takes.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_backoff(
    opts: *mut sy_channel_options,
    initial_ms: u64,
    max_ms: u64,
    min_connect_timeout_ms: u64,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        let d = BackoffConfig::default();
        let pick = |v: u64, default: Duration| if v == 0 { default } else { ms(v) };
        let b = BackoffConfig {
            initial: pick(initial_ms, d.initial),
            max: pick(max_ms, d.max),
            min_connect_timeout: pick(min_connect_timeout_ms, d.min_connect_timeout),
            // The growth is `sy_channel_options_set_backoff_growth`'s.
            ..o.backoff
        };
        if b.initial > b.max {
            return Err(Error::invalid(format!(
                "backoff: initial {:?} exceeds max {:?}",
                b.initial, b.max
            )));
        }
        o.backoff = b;
        Ok(())
    })
}

/// How connection backoff grows (gRPC's connection-backoff spec, gRPC-Go's
/// `backoff.Config`): each backoff is the last times `multiplier`, spread
/// by +-`jitter` (a fraction). Defaults 1.6 and 0.2; (1.0, 0.0) spaces
/// attempts exactly `initial_ms` apart (see
/// `sy_channel_options_set_backoff`). SY_INVALID_ARGUMENT unless
/// `multiplier` is finite and at least 1 and `jitter` within 0..=1.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_backoff_growth(
    opts: *mut sy_channel_options,
    multiplier: f64,
    jitter: f64,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(Error::invalid(format!(
                "backoff multiplier {multiplier} is not a finite number of at least 1"
            )));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(Error::invalid(format!(
                "backoff jitter {jitter} is not within 0..=1"
            )));
        }
        o.backoff.multiplier = multiplier;
        o.backoff.jitter = jitter;
        Ok(())
    })
}

/// Deprecated, and without effect: `sy_call_unary_start` calls no longer
/// run on threads of their own (the event loop drives any number of them,
/// and one completion thread per channel runs their callbacks), so there is
/// nothing to size. Kept so that existing programs build and run; the
/// argument is still checked (1..=`SY_MAX_CALL_THREADS`, else
/// SY_INVALID_ARGUMENT).
#[no_mangle]
pub extern "C" fn sy_channel_options_set_call_threads(
    opts: *mut sy_channel_options,
    threads: u32,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        if threads == 0 || threads > SY_MAX_CALL_THREADS {
            return Err(Error::invalid(format!(
                "call threads must be 1..={SY_MAX_CALL_THREADS}, not {threads}"
            )));
        }
        o.call_threads = threads as usize;
        Ok(())
    })
}

/// Sets (or, with `callback` NULL, clears) the callback that hears
/// re-resolution requests of channels whose host supplies the addresses
/// (target ""); see `sy_resolve_now_fn`. `ctx` must stay valid until every
/// channel created with these options is freed.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_resolve_now(
    opts: *mut sy_channel_options,
    callback: sy_resolve_now_fn,
    ctx: *mut c_void,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.resolve_now = callback.map(|f| (f, ctx));
        Ok(())
    })
}

/// The `:authority` of every call (NUL-terminated UTF-8, `host[:port]`,
/// copied), and the TLS server name unless one is set with
/// `sy_channel_options_set_tls_server_name` (gRPC's `WithAuthority`). By
/// default that TLS server name, else the target's: `host:port` of
/// `dns:///host:port` (`localhost:port` for `:port`), "localhost" for
/// unix sockets, the address of a one-address `ipv4:`/`ipv6:` target (each
/// connection's address for lists and the host's addresses). "" restores
/// that default. SY_INVALID_ARGUMENT if it is no valid authority.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_authority(
    opts: *mut sy_channel_options,
    authority: *const c_char,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        // SAFETY: NUL-terminated per the contract.
        let a = unsafe { str_arg(authority, "authority") }?;
        if !a.is_empty() && !switchyard::resolver::valid_authority(a) {
            return Err(Error::invalid(format!(
                "\"{a}\" is not a valid :authority (host[:port])"
            )));
        }
        o.authority = (!a.is_empty()).then(|| a.to_string());
        Ok(())
    })
}

/// A channel starts IDLE (resolving nothing, connecting nowhere) and leaves
/// IDLE on its first pick or call (or `sy_channel_connect`); with no pick and
/// no call in flight for `timeout_ms` it goes back to IDLE, closing its
/// resolver, policy and connections, and the next pick brings them back.
/// Default 1800000 (30 minutes, gRPC's); 0: never goes back to IDLE.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_idle_timeout(
    opts: *mut sy_channel_options,
    timeout_ms: u64,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.idle_timeout = Some(ms(timeout_ms));
        Ok(())
    })
}

/// For a channel whose host owns the transports: whether each pick and the
/// outcome its done reports are counted for `sy_channel_snapshot_json`
/// (`enabled` nonzero, the default). Counting costs no shared write (each
/// reader counts its own picks) but about 1 ns a kept pick over a few
/// endpoints, and over many endpoints picked at random a cache miss per
/// pick; off, the snapshot's call counts stay zero, and only picks keep
/// the channel out of IDLE (an RPC outliving the idle timeout with no pick
/// meanwhile may lose its connection: set the idle timeout to 0 then).
/// Channels with the library's connections count their calls either way.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_pick_counts(
    opts: *mut sy_channel_options,
    enabled: c_int,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.skip_pick_counts = enabled == 0;
        Ok(())
    })
}

/// Whether the channel health-checks its backends when its service config
/// asks for it (`healthCheckConfig`, gRFC A17): `enabled` nonzero (the
/// default) does; zero turns client-side health checking off whatever the
/// config says, so subchannels are READY once connected (gRPC-Go's
/// `WithDisableHealthCheck`, C-core's `grpc.inhibit_health_checking`).
#[no_mangle]
pub extern "C" fn sy_channel_options_set_health_checking(
    opts: *mut sy_channel_options,
    enabled: c_int,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.disable_health_check = enabled == 0;
        Ok(())
    })
}

/// For `dns:` targets: `enabled` nonzero looks the name's service config up
/// in DNS too (gRFC A2: TXT records `grpc_config=...` of
/// `_grpc_config.<host>`, with their choice rules; this client's
/// `clientLanguage` is "rust"). Off by default.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_dns_service_config(
    opts: *mut sy_channel_options,
    enabled: c_int,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.resolver.dns_service_config = enabled != 0;
        Ok(())
    })
}

/// Whether the library's calls on this channel follow the service config's
/// `retryPolicy` and `hedgingPolicy` (gRFC A6): `enabled` nonzero (the
/// default) does; zero never retries or hedges a call by them (gRPC-Go's
/// `WithDisableRetry`). Attempts that never reached the server's
/// application are still retried transparently.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_retries(
    opts: *mut sy_channel_options,
    enabled: c_int,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.disable_retry = enabled == 0;
        Ok(())
    })
}

/// Whether the channel applies the service configs its resolver gives:
/// `enabled` nonzero (the default) does; zero ignores every one of them and
/// keeps the channel's own (the `service_config_json` it was made with),
/// as gRPC's `disableServiceConfig` does. DNS then looks none up either.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_resolver_service_config(
    opts: *mut sy_channel_options,
    enabled: c_int,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        o.resolver.disable_service_config = enabled == 0;
        Ok(())
    })
}

/// For `dns:` targets: the least time between two lookups the channel asks
/// for (re-resolution after a lost connection), in milliseconds. Default
/// 30000 (gRPC's); shorter only for tests. SY_INVALID_ARGUMENT for 0.
#[no_mangle]
pub extern "C" fn sy_channel_options_set_min_resolution_interval(
    opts: *mut sy_channel_options,
    interval_ms: u64,
) -> sy_status {
    boundary(|| {
        let o = options_mut(opts)?;
        if interval_ms == 0 {
            return Err(Error::invalid(
                "min resolution interval must be at least 1 ms",
            ));
        }
        o.resolver.min_resolution_interval = ms(interval_ms);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_growth_is_checked_and_kept_by_set_backoff() {
        let mut o = std::ptr::null_mut();
        assert_eq!(sy_channel_options_new(&mut o), sy_status::SY_OK);
        for (m, j) in [
            (f64::NAN, 0.2),
            (0.5, 0.2),
            (f64::INFINITY, 0.2),
            (1.6, -0.1),
            (1.6, 1.5),
            (1.6, f64::NAN),
        ] {
            assert_eq!(
                sy_channel_options_set_backoff_growth(o, m, j),
                sy_status::SY_INVALID_ARGUMENT,
                "{m} {j}"
            );
        }
        assert_eq!(
            sy_channel_options_set_backoff_growth(std::ptr::null_mut(), 1.0, 0.0),
            sy_status::SY_NULL_PARAMETER
        );
        assert_eq!(
            sy_channel_options_set_backoff_growth(o, 1.0, 0.0),
            sy_status::SY_OK
        );
        // Setting the durations afterwards keeps the growth.
        assert_eq!(
            sy_channel_options_set_backoff(o, 100, 1000, 0),
            sy_status::SY_OK
        );
        // SAFETY: `o` is live, from `sy_channel_options_new`.
        let b = unsafe { &(*o).inner.backoff };
        assert_eq!(
            (b.multiplier, b.jitter, b.initial),
            (1.0, 0.0, Duration::from_millis(100))
        );
        sy_channel_options_free(o);
    }

    #[test]
    fn a_user_agent_reaches_the_transport_config_and_empty_clears_it() {
        let mut o = std::ptr::null_mut();
        assert_eq!(sy_channel_options_new(&mut o), sy_status::SY_OK);
        assert_eq!(
            sy_channel_options_set_user_agent(o, c"myapp/1.2".as_ptr()),
            sy_status::SY_OK
        );
        // SAFETY: `o` is live, from `sy_channel_options_new`.
        let t = unsafe { &(*o).inner }.transport().unwrap().unwrap();
        assert_eq!(t.user_agent.as_deref(), Some("myapp/1.2"));
        let ua = t.user_agent_header().unwrap();
        assert!(ua
            .to_str()
            .unwrap()
            .starts_with("myapp/1.2 grpc-rust-switchyard/"));
        assert_eq!(
            sy_channel_options_set_user_agent(o, c"".as_ptr()),
            sy_status::SY_OK
        );
        // SAFETY: as above.
        assert!(unsafe { &(*o).inner }.transport().unwrap().is_none());
        sy_channel_options_free(o);
    }
}
