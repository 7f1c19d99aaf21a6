//! A permission the NATS server denies, noticed at once.
//!
//! The server answers a request the credentials may not make with an asynchronous
//! `Permissions Violation` error, not a reply: the request itself only times out, seconds
//! later, as "request timed out". The SDK logs the server's error (a `tracing` event); this
//! layer catches that event so that the command ends at once, refused (exit code 4), with
//! the server's words.

use std::sync::{LazyLock, OnceLock};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

static DENIED: OnceLock<String> = OnceLock::new();
static NOTIFY: LazyLock<tokio::sync::Notify> = LazyLock::new(tokio::sync::Notify::new);

/// Installs the layer as the global `tracing` subscriber (nothing else is logged).
pub(crate) fn watch() {
    let subscriber = tracing_subscriber::registry().with(Watch);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Resolves with the server's message when it denied a permission.
pub(crate) async fn denied() -> String {
    loop {
        let notified = NOTIFY.notified();
        if let Some(text) = DENIED.get() {
            return text.clone();
        }
        notified.await;
    }
}

struct Watch;

impl<S: Subscriber> Layer<S> for Watch {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Only the SDK's own events: the connection events it logs.
        if metadata.is_event() && metadata.target().starts_with("herald") {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let mut find = Find(None);
        event.record(&mut find);
        if let Some(text) = find.0
            && DENIED.set(text).is_ok()
        {
            NOTIFY.notify_waiters();
        }
    }
}

/// The first field whose text tells of a permissions violation.
struct Find(Option<String>);

impl Visit for Find {
    fn record_debug(&mut self, _field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if let (None, Some(at)) = (&self.0, text.find("Permissions Violation")) {
            self.0 = Some(text[at..].trim_end_matches(['\'', '"']).to_owned() + "\"");
        }
    }
}
