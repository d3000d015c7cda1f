//! The `provledger` binary: command line, configuration and wiring. Nothing else lives here.

mod config;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use provledger_graphql::{configure, AppState, ServerSettings};
use provledger_ledger::{verify_data_dir, Ledger, LedgerConfig};
use provledger_signer::{SigningKey, VerifierKey};
use tracing::info;

use crate::config::{LogFormat, ServeArgs, Settings};

/// glibc's allocator showed up at the top of append profiles; mimalloc handles the many
/// short-lived request and record buffers better.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// provledger: a provenance and lineage ledger for AI systems.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (creates the data directory and a signing key on first start).
    Serve(ServeArgs),
    /// Print the log's verifier key (C2SP signed-note vkey format).
    Key {
        /// Data directory.
        #[arg(long, env = "PROVLEDGER_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Signing key file; default `<data-dir>/signing.key`.
        #[arg(long, env = "PROVLEDGER_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Check a data directory offline: every entry, tile, payload commitment and the latest
    /// signed checkpoint. Exit code 0 only when everything holds.
    Verify {
        /// Data directory (the server must not be running on it).
        #[arg(long, env = "PROVLEDGER_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Verifier key to check the checkpoint with; default: derived from the data
        /// directory's signing key.
        #[arg(long)]
        key: Option<String>,
        /// Signing key file to derive the verifier key from; default `<data-dir>/signing.key`.
        #[arg(long, env = "PROVLEDGER_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Key { data_dir, key_file } => {
            let path = key_file.unwrap_or_else(|| data_dir.join("signing.key"));
            SigningKey::load(&path)
                .with_context(|| format!("cannot read signing key {}", path.display()))
                .map(|k| println!("{}", k.verifier()))
        }
        Command::Verify {
            data_dir,
            key,
            key_file,
        } => verify(&data_dir, key.as_deref(), key_file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(args: ServeArgs) -> Result<()> {
    let settings = Settings::resolve(args)?;
    init_logging(settings.log_format);
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            settings.data_dir.display()
        )
    })?;
    let key = load_or_create_key(&settings.key_file, settings.origin.as_deref())?;
    let registry = prometheus::Registry::new();
    let mut config = LedgerConfig::new(&settings.data_dir);
    config.queue_depth = settings.queue_depth;
    config.max_batch_records = settings.max_batch_records;
    config.cache_bytes = settings.cache_mb * 1024 * 1024;
    config.max_queued_bytes = settings.max_queued_mb * 1024 * 1024;
    let origin = key.name().to_owned();
    let ledger = Ledger::open(&config, key, &registry)
        .with_context(|| format!("cannot open the ledger in {}", settings.data_dir.display()))?;
    let head = ledger.head();
    info!(
        listen = %settings.listen,
        data_dir = %settings.data_dir.display(),
        origin = %origin,
        verifier_key = %ledger.verifier(),
        tree_size = head.size,
        "provledger ready"
    );
    let state = AppState {
        ledger,
        registry,
        settings: Arc::new(ServerSettings {
            max_body_bytes: settings.max_body_bytes,
        }),
    };
    let workers = settings.workers;
    let listen = settings.listen;
    actix_web::rt::System::new().block_on(async move {
        actix_web::HttpServer::new(move || {
            actix_web::App::new().configure(configure(state.clone()))
        })
        .workers(workers)
        .bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?
        .run()
        .await
        .context("server failed")
    })?;
    info!("provledger stopped");
    Ok(())
}

/// Loads the signing key, or makes one (mode 0600) on first start.
fn load_or_create_key(path: &Path, origin: Option<&str>) -> Result<SigningKey> {
    if path.exists() {
        let key = SigningKey::load(path)
            .with_context(|| format!("cannot read signing key {}", path.display()))?;
        if let Some(o) = origin {
            if o != key.name() {
                bail!(
                    "--origin {o:?} differs from the origin {:?} of the existing key {}; a log's origin cannot change",
                    key.name(),
                    path.display()
                );
            }
        }
        return Ok(key);
    }
    let origin = origin.map(str::to_owned).unwrap_or_else(default_origin);
    let key = SigningKey::create_new(path, &origin)
        .with_context(|| format!("cannot create signing key {}", path.display()))?;
    info!(path = %path.display(), origin = %origin, "created a new signing key");
    Ok(key)
}

/// `<hostname>/provledger`.
fn default_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace) && !h.contains('+'))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}/provledger")
}

fn verify(data_dir: &Path, key: Option<&str>, key_file: Option<PathBuf>) -> Result<()> {
    let vkey = match key {
        Some(k) => VerifierKey::parse(k).context("--key is not a valid verifier key")?,
        None => {
            let path = key_file.unwrap_or_else(|| data_dir.join("signing.key"));
            SigningKey::load(&path)
                .with_context(|| {
                    format!("cannot read signing key {} (or pass --key)", path.display())
                })?
                .verifier()
        }
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "verifying {bar:40} {pos}/{len} entries ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = verify_data_dir(data_dir, &vkey, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = report.context("verification failed")?;
    println!(
        "ok: {} entries, root {}, {} payload commitments, {} tiles, {} archived checkpoints checked against the signed checkpoint",
        report.tree_size,
        report.root.to_base64(),
        report.payloads,
        report.tiles,
        report.checkpoints
    );
    Ok(())
}
