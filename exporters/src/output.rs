//! Choosing the output format of an export: a bundle, PROV-JSON, or a DSSE envelope.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use provledger_ledger::Ledger;
use provledger_signer::SigningKey;

use crate::error::ExportError;
use crate::export::{export, write_atomically, ExportSummary, Scope};

/// What an export writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// A signed bundle, version 1 (`docs/export-format.md`): streaming, verifiable offline.
    #[default]
    Bundle,
    /// W3C PROV-JSON of the scope: entities, activities, agents and their relations. Unsigned.
    ProvJson,
    /// A DSSE envelope holding an in-toto Statement v1 whose predicate is the bundle.
    Dsse,
}

impl ExportFormat {
    /// Every format, in the order they are documented.
    pub const ALL: [ExportFormat; 3] = [
        ExportFormat::Bundle,
        ExportFormat::ProvJson,
        ExportFormat::Dsse,
    ];

    /// The name used on the command line and in the API (`bundle`, `prov-json`, `dsse`).
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Bundle => "bundle",
            ExportFormat::ProvJson => "prov-json",
            ExportFormat::Dsse => "dsse",
        }
    }

    /// The media type to serve it with.
    pub fn media_type(self) -> &'static str {
        match self {
            ExportFormat::Bundle | ExportFormat::ProvJson => "application/json",
            ExportFormat::Dsse => "application/vnd.dsse.envelope.v1+json",
        }
    }

    /// A file name to suggest for it.
    pub fn file_name(self) -> &'static str {
        match self {
            ExportFormat::Bundle => "provledger-export.bundle.json",
            ExportFormat::ProvJson => "provledger-export.prov.json",
            ExportFormat::Dsse => "provledger-export.dsse.json",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExportFormat {
    type Err = ExportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExportFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| ExportError::UnknownFormat(s.to_owned()))
    }
}

/// Writes `scope` in `format` to `out`. `key` must be the log's signing key (PROV-JSON is not
/// signed, but the key is checked all the same, so every format proves the same log).
pub fn export_as<W: Write>(
    format: ExportFormat,
    ledger: &Ledger,
    key: &SigningKey,
    scope: &Scope,
    out: W,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<ExportSummary, ExportError> {
    crate::export::ensure_log_key(ledger, key)?;
    match format {
        ExportFormat::Bundle => export(ledger, key, scope, out, progress),
        ExportFormat::ProvJson => crate::prov::export_prov_json(ledger, scope, out, progress),
        ExportFormat::Dsse => crate::dsse::export_dsse(ledger, key, scope, out, progress),
    }
}

/// [`export_as`] to `path`, through a temporary file renamed into place once complete and on
/// disk: a failed export leaves nothing behind.
pub fn export_as_file(
    format: ExportFormat,
    ledger: &Ledger,
    key: &SigningKey,
    scope: &Scope,
    path: &Path,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<ExportSummary, ExportError> {
    write_atomically(path, &mut |file| {
        export_as(format, ledger, key, scope, file, progress)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_only() {
        for f in ExportFormat::ALL {
            assert_eq!(f.name().parse::<ExportFormat>().ok(), Some(f));
        }
        let err = "PROV-JSON"
            .parse::<ExportFormat>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("export format \"PROV-JSON\" is unknown: use bundle, prov-json or dsse")
        );
    }
}
