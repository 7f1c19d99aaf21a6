//! The options every command takes, given before or after the command name
//! (`herald --server URL dlq list` = `herald dlq list --server URL`).

use anyhow::Context as _;
use clap::Args;

/// Options shared by every command: how to reach NATS, and the output format.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    #[command(flatten)]
    pub(crate) connection: Connection,
    /// Print JSON: one document for a listing or a result; JSON lines (one document per
    /// line) for live output (`events tail`, `functions --watch`).
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// How to reach NATS.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection (before or after the command)")]
pub(crate) struct Connection {
    /// NATS server URL(s), comma-separated.
    #[arg(long, short, env = "NATS_URL", global = true)]
    pub(crate) server: Option<String>,
    /// Herald namespace.
    #[arg(
        long,
        short,
        env = "HERALD_NAMESPACE",
        default_value = "herald",
        global = true
    )]
    pub(crate) namespace: String,
    /// User name (with --password).
    #[arg(long, env = "NATS_USER", global = true, requires = "password")]
    user: Option<String>,
    /// Password (with --user).
    #[arg(long, env = "NATS_PASSWORD", global = true, requires = "user")]
    password: Option<String>,
    /// Token.
    #[arg(long, env = "NATS_TOKEN", global = true)]
    token: Option<String>,
    /// Credentials file (JWT and nkey seed).
    #[arg(long, env = "NATS_CREDS", global = true)]
    creds: Option<std::path::PathBuf>,
}

impl Connection {
    /// Client options for this connection.
    pub(crate) fn options(&self) -> herald::ConnectOptions {
        let mut options = herald::Client::builder()
            .namespace(&self.namespace)
            .connection_name("herald-cli");
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user, password);
        }
        if let Some(token) = &self.token {
            options = options.token(token);
        }
        if let Some(creds) = &self.creds {
            options = options.credentials_file(creds);
        }
        options
    }

    /// The server URL, or an error that says how to give one.
    pub(crate) fn url(&self) -> anyhow::Result<&str> {
        self.server
            .as_deref()
            .context("no NATS server given: pass --server nats://HOST:4222 or set NATS_URL")
    }

    /// Connects with `options` (from [`options`](Self::options)), without checking that the
    /// namespace is provisioned: for `provision` and the commands that provision.
    pub(crate) async fn connect_with(
        &self,
        options: herald::ConnectOptions,
    ) -> anyhow::Result<herald::Client> {
        let url = self.url()?;
        crate::exit::remember_target(url, &self.namespace);
        Ok(options.connect(url).await?)
    }

    /// Connects, then checks that the namespace is provisioned (its events stream exists):
    /// when it is not, the error says so in one line with the command that fixes it.
    pub(crate) async fn connect(&self) -> anyhow::Result<herald::Client> {
        self.connect_checked(self.options()).await
    }

    /// [`connect`](Self::connect) with options of the caller's.
    pub(crate) async fn connect_checked(
        &self,
        options: herald::ConnectOptions,
    ) -> anyhow::Result<herald::Client> {
        let client = self.connect_with(options).await?;
        client
            .jetstream()
            .get_stream(client.namespace().events_stream())
            .await?;
        Ok(client)
    }
}
