//! Errors about settings, placed where the setting is written: the
//! configuration file and the key's line in it.

use super::{RunArgs, DEFAULT_CONFIG};
use std::path::PathBuf;

impl RunArgs {
    /// The configuration file this run reads, if any.
    fn config_path(&self) -> Option<PathBuf> {
        match &self.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        }
    }

    /// An error about a setting, placed where the setting is written: the
    /// configuration file and the key's line in it. Errors that name no
    /// setting, and settings given only by flags or left at their default,
    /// keep the file's name alone.
    pub fn placed(&self, e: anyhow::Error) -> anyhow::Error {
        use crate::config::ConfigError;
        use crate::policy::PolicyError;
        use crate::server::ContextError;
        use crate::tls::TlsError;
        let Some(path) = self.config_path() else { return e };
        let key: Option<&str> = if let Some(c) = e.downcast_ref::<ConfigError>() {
            match c {
                // Read and parse errors name the file and line already.
                ConfigError::Read { .. } | ConfigError::Parse { .. } => return e,
                ConfigError::Invalid { field, .. } => Some(field),
            }
        } else if let Some(c) = e.downcast_ref::<ContextError>() {
            match c {
                ContextError::Tls(TlsError::Setting { setting, .. }) => Some(setting),
                ContextError::Tls(_) => Some("tls.cert"),
                ContextError::Policy(PolicyError::UnknownBackend { .. }) => Some("policy"),
                ContextError::Policy(_) => Some("policy"),
                ContextError::Xferlog(..) => Some("logs.xferlog"),
            }
        } else {
            None
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let file = path.display();
        match key.and_then(|k| crate::config::line_of_key(&text, k)) {
            Some(line) => {
                let key = key.unwrap_or_default().split(" (").next().unwrap_or_default();
                if e.to_string().starts_with(key) {
                    e.context(format!("{file}: line {line}"))
                } else {
                    e.context(format!("{file}: line {line}: {key}"))
                }
            }
            None => e.context(format!("{file}")),
        }
    }
}
