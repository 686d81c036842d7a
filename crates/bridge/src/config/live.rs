//! The routing table in force, and how it changes while traffic flows.
//!
//! Every request loads the current [`Registry`] once (an atomic load) and keeps it to the end,
//! so requests in flight finish on the routes they started with while new ones see the new
//! table. A new table comes from the config file (watched, or re-read on SIGHUP) or from the
//! admin API, which edits the file and installs the result: the file stays the one source of
//! truth. A text that does not validate is refused and the table in force stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::discovered::apply;
use super::file::Config;
use super::registry::Registry;
use super::replicas::Addresses;
use crate::error::ApiError;

/// How often the config file is looked at for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Why a new table was not installed; the table in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Bridge runs without a config file (the demo).
    #[error("Bridge runs without a config file (the demo): there is nothing to change")]
    NoFile,
    /// The file could not be read.
    #[error("{0}")]
    Read(String),
    /// The file is not TOML.
    #[error("{0}")]
    Parse(String),
    /// The file does not validate.
    #[error("{0}")]
    Invalid(String),
    /// The changed file could not be written.
    #[error("{0}")]
    Write(String),
    /// The requested edit itself was refused.
    #[error("{}", .0.message)]
    Edit(ApiError),
}

/// The routing table in force and where it comes from.
#[derive(Debug)]
pub struct Live {
    current: ArcSwap<Registry>,
    /// The config file, when Bridge runs from one (the demo does not).
    path: Option<PathBuf>,
    /// The text the table in force was built from.
    text: std::sync::Mutex<String>,
    /// Bumped on every change, so the health checks follow the new table.
    version: watch::Sender<u64>,
    /// One change at a time (file reloads, admin edits, discovered addresses).
    changing: tokio::sync::Mutex<()>,
    /// The addresses DNS discovery found, given to every table built.
    addresses: std::sync::Mutex<Arc<Addresses>>,
}

impl Live {
    /// A table that never changes (tests, the demo).
    pub fn fixed(registry: Registry) -> Arc<Live> {
        Self::new(registry, None, String::new())
    }

    /// A table built from `text`, the content of the config file at `path`.
    pub fn from_file(registry: Registry, path: PathBuf, text: String) -> Arc<Live> {
        Self::new(registry, Some(path), text)
    }

    fn new(mut registry: Registry, path: Option<PathBuf>, text: String) -> Arc<Live> {
        // Discovered deployments have no replicas until their names are resolved.
        apply(&mut registry, &Addresses::new(), None);
        Arc::new(Live {
            current: ArcSwap::from_pointee(registry),
            path,
            text: std::sync::Mutex::new(text),
            version: watch::Sender::new(0),
            changing: tokio::sync::Mutex::new(()),
            addresses: Default::default(),
        })
    }

    /// The addresses discovery found last.
    pub fn addresses(&self) -> Arc<Addresses> {
        self.addresses.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Installs a table with the discovered deployments' replicas at `addresses` (and the same
    /// configuration text). Replicas that stay keep their state; the others join or leave.
    pub async fn rediscover(&self, addresses: Addresses) -> Result<(), ReloadError> {
        let _one = self.changing.lock().await;
        if self.path.is_none() {
            return Err(ReloadError::NoFile);
        }
        let previous = self
            .addresses
            .lock()
            .map(|mut held| std::mem::replace(&mut *held, Arc::new(addresses)))
            .unwrap_or_default();
        let text = self.text();
        match self.prepare(&text) {
            Ok(registry) => {
                self.install(registry, text);
                Ok(())
            }
            Err(e) => {
                // Not in force: the next round tries again.
                if let Ok(mut held) = self.addresses.lock() {
                    *held = previous;
                }
                Err(e)
            }
        }
    }

    /// The table for one request; the request keeps it to the end.
    pub fn load(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// Changes with each new table.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The config file, when Bridge runs from one.
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Validates `text` against the table in force (keeping what did not change).
    fn prepare(&self, text: &str) -> Result<Registry, ReloadError> {
        let name = self
            .path
            .as_ref()
            .map_or_else(|| "config".to_string(), |p| p.display().to_string());
        let current = self.load();
        let mut config =
            Config::parse(text, &name).map_err(|e| ReloadError::Invalid(e.to_string()))?;
        // Listeners cannot move while serving: keep the addresses in force, so that rules that
        // depend on them (admin keys off loopback) are judged against what is really bound.
        config.server.listen = Some(current.listen.to_string());
        match (&current.admin, &mut config.admin) {
            (Some(bound), Some(admin)) => admin.listen = Some(bound.listen.to_string()),
            (None, admin @ Some(_)) => {
                tracing::warn!("[admin] added in {name}: restart Bridge to start the admin API");
                *admin = None;
            }
            (Some(_), None) => {
                // Its listener stays bound until a restart: keep it working meanwhile.
                return Err(ReloadError::Invalid(format!(
                    "{name}: [admin] was removed, but the admin listener stays open until a \
                     restart; restart Bridge to close it"
                )));
            }
            (None, None) => {}
        }
        // A file caught empty or half-written must never become the table in force.
        if config.models.is_empty() {
            return Err(ReloadError::Invalid(format!(
                "{name} defines no [[models]]: an empty or truncated file is never installed"
            )));
        }
        // Losing every key would open an authenticated Bridge to anyone: only on purpose.
        if !current.keys.is_empty() && config.auth.keys.is_empty() && config.auth.open != Some(true)
        {
            return Err(ReloadError::Invalid(format!(
                "{name} has no [[auth.keys]] left, which would accept requests from ANY caller; \
                 if that is meant, say so with `[auth] open = true`"
            )));
        }
        let mut next = config
            .validate_after(&name, Some(&current))
            .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        next.dns_status = current.dns_status.clone();
        apply(&mut next, &self.addresses(), Some(&current));
        let restart_needed = [
            ("server.workers", next.workers != current.workers),
            (
                "server.header_read_timeout_ms",
                next.header_read_timeout != current.header_read_timeout,
            ),
            (
                "server.drain_timeout_ms",
                next.drain_timeout != current.drain_timeout,
            ),
            (
                "server.drain_delay_ms",
                next.drain_delay != current.drain_delay,
            ),
            ("server.half_close", next.half_close != current.half_close),
            ("[limits]", next.limits != current.limits),
            ("server.resolvers", next.resolvers != current.resolvers),
            ("[tracing]", next.tracing != current.tracing),
        ];
        for (setting, changed) in restart_needed {
            if changed {
                tracing::warn!("{setting} changed in {name}: restart Bridge to apply it");
            }
        }
        Ok(next)
    }

    fn install(&self, registry: Registry, text: String) {
        self.current.store(Arc::new(registry));
        if let Ok(mut held) = self.text.lock() {
            *held = text;
        }
        self.version.send_modify(|v| *v += 1);
    }

    fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Re-reads the config file and installs it even if its text did not change, re-reading
    /// keys from their environment variables and files (SIGHUP after rotating a key).
    pub async fn reload_all(&self) -> Result<bool, ReloadError> {
        self.reload_from_file(true, None).await
    }

    /// `settled`: install only if the file still reads as this text (the watch reads it twice,
    /// a second apart, so that a file caught half-written is never installed).
    async fn reload_from_file(
        &self,
        force: bool,
        settled: Option<&str>,
    ) -> Result<bool, ReloadError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let _one = self.changing.lock().await;
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            ReloadError::Read(format!("{}: cannot read the file: {e}", path.display()))
        })?;
        if !force && text == self.text() {
            return Ok(false);
        }
        if settled.is_some_and(|s| s != text) {
            return Ok(false);
        }
        let registry = self.prepare(&text)?;
        self.install(registry, text);
        Ok(true)
    }

    /// Reloads whenever the file changes, until dropped. A file that does not validate is
    /// reported once per distinct content and the table in force stays.
    pub async fn watch_file(self: Arc<Self>) {
        let mut last_error = String::new();
        // A changed text is installed when two reads a second apart agree.
        let mut seen: Option<String> = None;
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            let Some(path) = &self.path else {
                return;
            };
            let text = match tokio::fs::read_to_string(path).await {
                Ok(text) => text,
                Err(e) => {
                    // Deleted, not UTF-8, a directory: said once, until it reads again.
                    let error = format!("{}: cannot read the file: {e}", path.display());
                    if error != last_error {
                        tracing::error!(
                            "configuration not reloaded, the one in force stays: {error}"
                        );
                        last_error = error;
                    }
                    seen = None;
                    continue;
                }
            };
            if text == self.text() {
                seen = None;
                continue;
            }
            if seen.as_deref() != Some(text.as_str()) {
                seen = Some(text);
                continue;
            }
            match self.reload_from_file(false, seen.as_deref()).await {
                Ok(true) => {
                    last_error.clear();
                    tracing::info!("configuration reloaded");
                }
                Ok(false) => {}
                Err(e) if e.to_string() != last_error => {
                    tracing::error!("configuration not reloaded, the one in force stays: {e}");
                    last_error = e.to_string();
                }
                Err(_) => {}
            }
        }
    }

    /// Applies an edit to the config file: `edit` changes the parsed document (comments and
    /// layout kept); the result must validate, is written atomically (a temporary file, then a
    /// rename) and installed. Nothing changes when any step fails.
    pub async fn edit(
        &self,
        edit: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), ApiError>,
    ) -> Result<(), ReloadError> {
        let Some(path) = &self.path else {
            return Err(ReloadError::NoFile);
        };
        let _one = self.changing.lock().await;
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ReloadError::Read(format!("cannot read {}: {e}", path.display())))?;
        let mut doc: toml_edit::DocumentMut = text
            .parse()
            .map_err(|e| ReloadError::Parse(format!("{} does not parse: {e}", path.display())))?;
        edit(&mut doc).map_err(ReloadError::Edit)?;
        let new_text = doc.to_string();
        let registry = self.prepare(&new_text)?;
        write_atomically(path, &new_text)
            .await
            .map_err(|e| ReloadError::Write(format!("cannot write {}: {e}", path.display())))?;
        self.install(registry, new_text);
        Ok(())
    }
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`: readers see
/// the old file or the new one, never half of one.
async fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp-{}", std::process::id()));
    let temp = PathBuf::from(temp);
    // Readable by the owner only while it is written (it may hold keys), then given the
    // operator's permissions; synced before the rename so a crash leaves the old or new file.
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&temp).await?;
    file.write_all(text.as_bytes()).await?;
    file.sync_all().await?;
    drop(file);
    if let Ok(meta) = tokio::fs::metadata(path).await {
        let _ = tokio::fs::set_permissions(&temp, meta.permissions()).await;
    }
    match tokio::fs::rename(&temp, path).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            Err(e)
        }
    }
}
