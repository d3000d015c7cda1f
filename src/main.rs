//! The `provledger` binary: command line, configuration and wiring. Nothing else lives here.

mod config;
mod keys;
mod tokens;
mod upkeep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use provledger_exporters::{
    counted, export_as_file, looks_like_envelope, verify_bundle, verify_dsse, ConsistencyProof,
    ExportFormat, KeyTrust, LaterCheckpoint, RangeScope, Scope,
};
use provledger_graphql::{configure, AppState, ServerSettings};
use provledger_ledger::{
    verify_data_dir, Ledger, LedgerConfig, PolicyInstall, Redactor, TokenKey,
    BUILTIN_POLICY_VERSION,
};
use provledger_signer::{Hash, SigningKey, VerifierKey};
use tracing::info;

use crate::config::{LogFormat, ServeArgs, Settings};

/// The tokenization key's file in the data directory.
const TOKENIZATION_KEY_FILE: &str = "tokenization.key";

/// glibc's allocator showed up at the top of append profiles; mimalloc handles the many
/// short-lived request and record buffers better. It is built without transparent huge pages
/// (`no_thp` in Cargo.toml), so the memory it frees goes back to the OS in small pieces.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Called by each pipeline thread when it falls quiet, and by each HTTP worker every
/// [`provledger_ledger::IDLE_AFTER`]: takes back the blocks other threads freed into this
/// thread's heap and returns emptied pages to the OS. Without it, what a burst of appends
/// freed across threads stayed resident until the next burst (`docs/benchmarks.md`).
#[allow(unsafe_code)]
fn collect_freed_memory() {
    // SAFETY: mi_collect takes no pointers; it walks the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Raises the soft limit on open files to the hard one (at most 1,048,576), as Go's runtime and
/// the JVM do for their processes: the store sizes its cache of open segment files from it
/// (`provledger_ledger`'s `Store::open`), and each connection takes a descriptor too.
#[cfg(target_os = "linux")]
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited: nothing to raise.
    let Some(soft) = limit.current else { return };
    let target = limit.maximum.unwrap_or(u64::MAX).min(1 << 20);
    if soft >= target {
        return;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => info!(from = soft, to = target, "raised the limit on open files"),
        Err(e) => tracing::warn!(error = %e, soft, "cannot raise the limit on open files"),
    }
}

/// Elsewhere the platform's limit stays as it is.
#[cfg(not(target_os = "linux"))]
fn raise_open_files_limit() {}

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
    /// Print the log's verifier key (C2SP signed-note vkey format), or manage the log's keys
    /// offline: `key list`, `key rotate`, `key retire KEY`.
    Key(keys::KeyArgs),
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
    /// Write a signed export bundle (docs/export-format.md) of part of the log, offline: the
    /// server must not be running on the data directory. Choose one scope: --entity, an index
    /// and/or time range (with optional --kind), or --record.
    Export(ExportArgs),
    /// Check an export bundle offline: the manifest and checkpoint signatures, every inclusion
    /// proof and payload commitment, and the refs between the records. Exit code 0 only when
    /// everything holds; otherwise the first failure is printed.
    VerifyBundle(VerifyBundleArgs),
    /// Manage bearer tokens offline: create, list, revoke.
    Token(tokens::TokenArgs),
    /// Make erased payload bytes disappear from every file of a data directory, offline (the
    /// server compacts on its own while it runs): flushes memtables, rotates and deletes old
    /// journals, and rewrites the payload segments without the erased values.
    Compact {
        /// Data directory (the server must not be running on it).
        #[arg(long, env = "PROVLEDGER_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
}

/// Flags of `provledger export`.
#[derive(Args, Debug)]
struct ExportArgs {
    /// Data directory (the server must not be running on it).
    #[arg(long, env = "PROVLEDGER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Signing key file, which signs the manifest; default `<data-dir>/signing.key`.
    #[arg(long, env = "PROVLEDGER_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Scope: every version of this entity (of --tenant, or the default tenant).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["from_index", "to_index", "from_time", "to_time", "kind", "record"])]
    entity: Option<String>,
    /// Scope: records from this index on (inclusive).
    #[arg(long, value_name = "INDEX", conflicts_with = "record")]
    from_index: Option<u64>,
    /// Scope: records before this index (exclusive).
    #[arg(long, value_name = "INDEX", conflicts_with = "record")]
    to_index: Option<u64>,
    /// Scope: records integrated at or after this time (ms since the Unix epoch).
    #[arg(long, value_name = "MS", conflicts_with = "record")]
    from_time: Option<u64>,
    /// Scope: records integrated before this time (ms since the Unix epoch, exclusive).
    #[arg(long, value_name = "MS", conflicts_with = "record")]
    to_time: Option<u64>,
    /// With a range: only records of this kind.
    #[arg(long, conflicts_with = "record")]
    kind: Option<String>,
    /// Scope: this record (64 hex digits); repeat for several.
    #[arg(long, value_name = "ID")]
    record: Vec<String>,
    /// With --record: also export what the records cite, this many hops upstream.
    #[arg(long, value_name = "N", requires = "record")]
    depth: Option<u32>,
    /// Only records of this tenant (with --entity: the entity's tenant, default `default`).
    #[arg(long)]
    tenant: Option<String>,
    /// Output format: `bundle` (signed bundle), `prov-json` (W3C PROV-JSON) or `dsse` (the
    /// bundle in a signed DSSE envelope as an in-toto statement).
    #[arg(long, default_value = "bundle")]
    format: String,
    /// File to write (replaced only once the bundle is complete).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Flags of `provledger verify-bundle`.
#[derive(Args, Debug)]
struct VerifyBundleArgs {
    /// The bundle file.
    file: PathBuf,
    /// The log's verifier key, obtained independently of the bundle (repeat for several).
    /// Without it the bundle's own keys are used, which proves integrity but not origin.
    #[arg(long = "key", value_name = "VERIFIER_KEY")]
    keys: Vec<String>,
    /// A later signed checkpoint of the same log that you trust (file): prove the bundle's
    /// checkpoint is a prefix of it.
    #[arg(long, value_name = "FILE", requires = "consistency_proof")]
    checkpoint: Option<PathBuf>,
    /// The consistency proof from the bundle's tree size to the later checkpoint's: the JSON of
    /// `GET /v1/proofs/consistency?from=<bundle size>&to=<later size>` (file).
    #[arg(long, value_name = "FILE", requires = "checkpoint")]
    consistency_proof: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Key(args) => keys::run(args),
        Command::Verify {
            data_dir,
            key,
            key_file,
        } => verify(&data_dir, key.as_deref(), key_file),
        Command::Export(args) => export(args),
        Command::VerifyBundle(args) => verify_bundle_file(&args),
        Command::Token(args) => tokens::run(args),
        Command::Compact { data_dir } => compact(&data_dir),
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
    raise_open_files_limit();
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            settings.data_dir.display()
        )
    })?;
    provledger_ledger::finish_interrupted_rotation(&settings.data_dir, &settings.key_file)
        .context("cannot finish an interrupted key rotation")?;
    let key = load_or_create_key(&settings.key_file, settings.origin.as_deref())?;
    // Before the ledger opens, so that its threads' first quiet spell already collects.
    provledger_ledger::set_idle_hook(collect_freed_memory);
    let registry = prometheus::Registry::new();
    // process_resident_memory_bytes, process_cpu_seconds_total, open fds, threads.
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .context("cannot register the process metrics")?;
    let mut config = LedgerConfig::new(&settings.data_dir);
    config.queue_depth = settings.queue_depth;
    config.max_batch_records = settings.max_batch_records;
    config.commit_linger = settings.commit_linger;
    config.cache_bytes = settings.cache_mb * 1024 * 1024;
    config.max_queued_bytes = settings.max_queued_mb * 1024 * 1024;
    let origin = key.name().to_owned();
    let ledger = Ledger::open(&config, key, &registry)
        .with_context(|| format!("cannot open the ledger in {}", settings.data_dir.display()))?;
    install_redaction_policy(&ledger, &settings)?;
    settings.upkeep.spawn(&ledger)?;
    let tokens = Arc::new(tokens::open_for_server(&settings.data_dir)?);
    let head = ledger.head();
    info!(
        listen = %settings.listen,
        data_dir = %settings.data_dir.display(),
        origin = %origin,
        verifier_key = %ledger.verifier(),
        tree_size = head.size,
        "provledger ready"
    );
    let http = provledger_graphql::HttpMetrics::register(&registry)
        .context("cannot register HTTP metrics")?;
    let state = AppState {
        ledger,
        http,
        registry,
        settings: Arc::new(ServerSettings {
            max_body_bytes: settings.max_body_bytes,
            public_log: settings.public_log,
            key_file: Some(settings.key_file.clone()),
        }),
        tokens,
    };
    let workers = settings.workers;
    let listen = settings.listen;
    let closing = state.ledger.clone();
    actix_web::rt::System::new().block_on(async move {
        actix_web::HttpServer::new(move || {
            // Runs once on each worker thread: collect that thread's heap now and then.
            actix_web::rt::spawn(async {
                let mut tick = actix_web::rt::time::interval(provledger_ledger::IDLE_AFTER);
                loop {
                    tick.tick().await;
                    collect_freed_memory();
                }
            });
            actix_web::App::new()
                .wrap(actix_web::middleware::from_fn(provledger_graphql::observe))
                .configure(configure(state.clone()))
        })
        .workers(workers)
        .bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?
        .run()
        .await
        .context("server failed")
    })?;
    // Background tasks may still hold the ledger: record the segment digests explicitly.
    if let Err(e) = closing.seal() {
        tracing::warn!(error = %e, "cannot record segment digests");
    }
    info!("provledger stopped");
    Ok(())
}

/// Makes the configured redaction policy the one every append is scrubbed with, recording it in
/// the log when it is new. The tokenization key `<data-dir>/tokenization.key` is created on
/// first start (mode 0600) and never logged; only its public id is.
fn install_redaction_policy(ledger: &Ledger, settings: &Settings) -> Result<()> {
    let key_path = settings.data_dir.join(TOKENIZATION_KEY_FILE);
    let created = !key_path.exists();
    let key = TokenKey::load_or_create(&key_path)?;
    if created {
        info!(path = %key_path.display(), key_id = %key.id(), "created a new tokenization key");
    }
    let Some((path, policy)) = &settings.redaction_policy else {
        info!(
            version = BUILTIN_POLICY_VERSION,
            "redaction policy: built in (not recorded in the log)"
        );
        return Ok(());
    };
    let key = policy.tokenizes().then_some(key);
    let redactor = Redactor::new(policy.clone(), key)
        .with_context(|| format!("redaction policy {} cannot be used", path.display()))?;
    let digest: String = redactor
        .digest()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let installed = ledger.install_redaction_policy(redactor).with_context(|| {
        format!(
            "cannot record redaction policy {} in the log",
            path.display()
        )
    })?;
    info!(
        file = %path.display(),
        version = %policy.version(),
        digest = %digest,
        policy_record = %installed.record().to_hex(),
        appended = matches!(installed, PolicyInstall::Recorded { .. }),
        "redaction policy installed"
    );
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
        "ok: {}, root {}, {}, {}, {} checked against the signed checkpoint; {}, each cited by an erasure record",
        counted(report.tree_size, "entry"),
        report.root.to_base64(),
        counted(report.payloads, "payload commitment"),
        counted(report.tiles, "tile"),
        counted(report.checkpoints, "archived checkpoint"),
        counted(report.erased, "erased payload")
    );
    Ok(())
}

fn compact(data_dir: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let report = provledger_ledger::compact_data_dir(data_dir, |step| eprintln!("compact: {step}"))
        .with_context(|| format!("cannot compact {}", data_dir.display()))?;
    if report.journals_left > 0 {
        bail!(
            "{} old journal files were not deleted in time; run compact again",
            report.journals_left
        );
    }
    println!(
        "ok: compacted in {:.1}s: {} flushed, {} deleted, payload segments {} -> {}",
        started.elapsed().as_secs_f64(),
        counted(report.flushed as u64, "partition"),
        counted(report.journals_removed as u64, "old journal"),
        report.payload_segments.0,
        report.payload_segments.1
    );
    Ok(())
}

/// A progress bar on stderr when it is a terminal, hidden otherwise.
fn progress_bar(template: &str) -> ProgressBar {
    use std::io::IsTerminal as _;
    let bar = ProgressBar::with_draw_target(
        None,
        if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The scope the flags ask for.
fn export_scope(args: &ExportArgs) -> Result<Scope> {
    if let Some(entity) = &args.entity {
        return Ok(Scope::entity(args.tenant.as_deref(), entity));
    }
    if !args.record.is_empty() {
        let ids = args
            .record
            .iter()
            .map(|id| {
                Hash::from_hex(id)
                    .ok()
                    .filter(|_| id.bytes().all(|b| !b.is_ascii_uppercase()))
                    .with_context(|| {
                        format!("--record {id:?} is not a record id (64 lowercase hex digits)")
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Scope::Records {
            tenant: args.tenant.clone(),
            ids,
            depth: args.depth.unwrap_or(0),
        });
    }
    let range = RangeScope {
        from_index: args.from_index,
        to_index: args.to_index,
        from_time: args.from_time,
        to_time: args.to_time,
        kind: args.kind.clone(),
        tenant: args.tenant.clone(),
    };
    if range == RangeScope::default() {
        bail!("choose what to export: --entity NAME, --from-index/--to-index, --from-time/--to-time (optionally with --kind and --tenant), or --record ID [--depth N]");
    }
    Ok(Scope::Range(range))
}

fn export(args: ExportArgs) -> Result<()> {
    let format: ExportFormat = args.format.parse()?;
    let scope = export_scope(&args)?;
    let key_path = args
        .key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("signing.key"));
    let load = || {
        SigningKey::load(&key_path)
            .with_context(|| format!("cannot read signing key {}", key_path.display()))
    };
    let key = load()?;
    if !args.data_dir.join("fjall").exists() {
        bail!(
            "{} is not a provledger data directory (no fjall/ inside)",
            args.data_dir.display()
        );
    }
    let ledger = Ledger::open(
        &LedgerConfig::new(&args.data_dir),
        load()?,
        &prometheus::Registry::new(),
    )
    .with_context(|| format!("cannot open the ledger in {}", args.data_dir.display()))?;
    let bar = progress_bar("exporting {bar:40} {pos}/{len} ({per_sec}, eta {eta})");
    let summary = export_as_file(
        format,
        &ledger,
        &key,
        &scope,
        &args.out,
        &mut |done, total| {
            if let Some(total) = total {
                bar.set_length(total);
            }
            bar.set_position(done);
        },
    );
    bar.finish_and_clear();
    let summary = summary.with_context(|| format!("export to {} failed", args.out.display()))?;
    println!(
        "wrote {} ({format}): {} ({}), proven against the checkpoint of tree size {}",
        args.out.display(),
        counted(summary.records, "record"),
        summary.scope,
        summary.tree_size
    );
    Ok(())
}

fn verify_bundle_file(args: &VerifyBundleArgs) -> Result<()> {
    let trusted = args
        .keys
        .iter()
        .map(|k| {
            VerifierKey::parse(k)
                .with_context(|| format!("--key {k:?} is not a valid verifier key"))
        })
        .collect::<Result<Vec<_>>>()?;
    let later = match (&args.checkpoint, &args.consistency_proof) {
        (Some(cp), Some(proof)) => {
            let checkpoint = std::fs::read_to_string(cp)
                .with_context(|| format!("cannot read the later checkpoint {}", cp.display()))?;
            let text = std::fs::read_to_string(proof).with_context(|| {
                format!("cannot read the consistency proof {}", proof.display())
            })?;
            Some(LaterCheckpoint {
                checkpoint,
                proof: ConsistencyProof::from_json(&text)?,
            })
        }
        _ => None,
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let mut file = std::io::BufReader::new(file);
    let dsse = looks_like_envelope(
        std::io::BufRead::fill_buf(&mut file)
            .with_context(|| format!("cannot read {}", args.file.display()))?,
    );
    let report = if dsse {
        verify_dsse(file, &trusted, later.as_ref())
    } else {
        verify_bundle(file, &trusted, later.as_ref())
    };
    let report =
        report.with_context(|| format!("bundle {} does not verify", args.file.display()))?;
    if dsse {
        println!("DSSE envelope: signature over its PAE and in-toto subjects verified");
    }
    println!(
        "ok: {} of {} ({}), proven against its checkpoint of tree size {} (root {})",
        counted(report.records(), "record"),
        report.origin(),
        report.scope(),
        report.tree_size(),
        report.root().to_base64()
    );
    println!(
        "payloads: {} checked against their commitments, {} absent (erased or withheld)",
        report.payloads(),
        report.payloads_absent()
    );
    println!(
        "refs: {} between records of the bundle, {} to {} records outside it",
        report.internal_refs(),
        report.external_refs(),
        report.external_records()
    );
    if let Some((size, root)) = report.later() {
        println!(
            "consistent with the later checkpoint of tree size {size} (root {})",
            root.to_base64()
        );
    }
    match report.key() {
        KeyTrust::Trusted(k) => println!("signed by trusted key {k}"),
        KeyTrust::BundleOnly(k) => println!(
            "WARNING: signed by {k}, the bundle's own key; nothing was checked against a key you trust. Pass --key with the log's verifier key obtained independently"
        ),
        _ => {}
    }
    Ok(())
}
