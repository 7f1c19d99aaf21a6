//! One push call: the event as a CloudEvents binary-mode POST, signed per Standard Webhooks,
//! and the answer mapped to the worker's outcome (see the table in `docs/gateway.md`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_worker::{Ctx, Envelope, HandlerError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::push::sign;

/// The header by which a receiver says "do not retry": `herald-no-retry: true`.
pub const NO_RETRY_HEADER: &str = "herald-no-retry";

/// The most of an error body kept in the dead letter's error.
const ERROR_BODY_BYTES: usize = 1024;

/// Whether an address is private, loopback, link-local or otherwise not public.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) // CGNAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// A resolver that drops private addresses (SSRF guard), unless they are allowed.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| allow_private || !is_private(addr.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves only to private or loopback addresses, which push targets \
                     may not use (herald serve --allow-private-targets allows them)"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client of push calls: no redirects, the SSRF guard.
pub fn client(allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .user_agent(concat!("herald-push/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What one call needs besides the event.
pub(crate) struct Target {
    pub(crate) function: String,
    pub(crate) url: reqwest::Url,
    pub(crate) key: Vec<u8>,
    pub(crate) allow_private: bool,
    pub(crate) max_retry_after: Duration,
}

/// Calls the target with one event and maps the answer.
pub(crate) async fn call(
    http: &reqwest::Client,
    target: &Target,
    event: &Envelope,
    ctx: &Ctx,
) -> Result<(), HandlerError> {
    if let Some(host) = target.url.host_str()
        && let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>()
        && !target.allow_private
        && is_private(ip)
    {
        return Err(HandlerError::terminal(format!(
            "push target {} is a private or loopback address; herald serve \
             --allow-private-targets allows it",
            target.url
        )));
    }
    let webhook_id = format!(
        "{}.{}",
        target.function,
        herald_worker::event_key(event.id())
    );
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let body = event.data().clone();
    let mut headers = HeaderMap::new();
    for (name, values) in event.headers().iter() {
        let text: &str = name.as_ref();
        let lower = text.to_ascii_lowercase();
        let keep = (lower.starts_with("ce-") && lower != "ce-datacontenttype")
            || lower == "traceparent"
            || lower == "tracestate";
        if let (true, Some(value)) = (keep, values.first())
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(lower.as_bytes()),
                HeaderValue::from_str(value.as_str()),
            )
        {
            headers.insert(name, value);
        }
    }
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    put("content-type", "application/json".to_owned());
    put("herald-function", target.function.clone());
    put("herald-attempt", ctx.attempt().to_string());
    put("webhook-id", webhook_id.clone());
    put("webhook-timestamp", timestamp.to_string());
    put(
        "webhook-signature",
        sign::signature(&target.key, &webhook_id, timestamp, &body),
    );
    let response = http
        .post(target.url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|error| {
            let mut message = format!("push call to {} failed: {error}", target.url);
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            if message.contains("private or loopback") {
                HandlerError::terminal(message)
            } else {
                HandlerError::retry(message)
            }
        })?;
    outcome(response, target.max_retry_after).await
}

/// The worker outcome of an answer.
async fn outcome(
    response: reqwest::Response,
    max_retry_after: Duration,
) -> Result<(), HandlerError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let no_retry = response
        .headers()
        .get(NO_RETRY_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds).min(max_retry_after));
    let mut text = response.text().await.unwrap_or_default();
    if text.len() > ERROR_BODY_BYTES {
        let mut cut = ERROR_BODY_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let message = format!("the push target answered {status}: {}", text.trim());
    let code = status.as_u16();
    if no_retry {
        return Err(HandlerError::terminal(message));
    }
    match (code, retry_after) {
        (429 | 503, Some(delay)) => Err(HandlerError::retry_after(delay, message)),
        (408 | 429, None) => Err(HandlerError::retry(message)),
        (500..=599, _) => Err(HandlerError::retry(message)),
        _ => Err(HandlerError::terminal(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "100.64.0.1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
    }
}
