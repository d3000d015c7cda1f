//! `provledger key …`: print the verifier key, list the log's keys, rotate or retire offline.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use provledger_ledger::{
    finish_interrupted_rotation, key_hash, Actor, KeyRing, Ledger, LedgerConfig,
};
use provledger_signer::SigningKey;

/// Flags of `provledger key`.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// Data directory.
    #[arg(
        long,
        env = "PROVLEDGER_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    data_dir: PathBuf,
    /// Signing key file; default `<data-dir>/signing.key`.
    #[arg(long, env = "PROVLEDGER_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    action: Option<KeyAction>,
}

#[derive(Subcommand, Debug)]
enum KeyAction {
    /// Every key the log has used: hash, tree sizes it signed, status (current first).
    List,
    /// Make a new signing key (the server must be stopped): it signs every checkpoint from
    /// now on; the old key stays listed so old checkpoints and receipts still verify.
    Rotate {
        /// Who rotates, recorded in the log (`type:id`).
        #[arg(long, default_value = "human:operator")]
        actor: String,
    },
    /// Stop publishing a key that no longer signs (by its 8-hex-digit hash or its vkey).
    Retire {
        /// The key.
        key: String,
    },
}

/// Runs `provledger key …`.
pub fn run(args: KeyArgs) -> Result<()> {
    let key_file = args
        .key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("signing.key"));
    match args.action {
        None => {
            let key = SigningKey::load(&key_file)
                .with_context(|| format!("cannot read signing key {}", key_file.display()))?;
            println!("{}", key.verifier());
        }
        Some(KeyAction::List) => {
            let ring = KeyRing::load(&args.data_dir)?;
            let last = ring.entries().len().saturating_sub(1);
            for (i, k) in ring.entries().iter().enumerate().rev() {
                let status = match (i == last, k.retired) {
                    (true, _) => "current",
                    (false, Some(_)) => "retired",
                    (false, None) => "previous",
                };
                let until = k.last_size.map_or("now".to_owned(), |s| s.to_string());
                println!(
                    "{}  {status:<8}  sizes {}..{until}  {}",
                    key_hash(&k.vkey).unwrap_or_default(),
                    k.first_size,
                    k.vkey
                );
            }
        }
        Some(KeyAction::Rotate { actor }) => {
            let (kind, id) = actor
                .split_once(':')
                .context("--actor must be type:id, e.g. human:alice")?;
            finish_interrupted_rotation(&args.data_dir, &key_file)?;
            let old = SigningKey::load(&key_file)
                .with_context(|| format!("cannot read signing key {}", key_file.display()))?;
            let ledger = Ledger::open(
                &LedgerConfig::new(&args.data_dir),
                old,
                &prometheus::Registry::new(),
            )
            .with_context(|| {
                format!(
                    "cannot open the ledger in {} (stop the server, or use POST /v1/keys/rotate)",
                    args.data_dir.display()
                )
            })?;
            let new = SigningKey::generate(ledger.signing_key().name())?;
            let entry = ledger.rotate_key(
                new,
                &key_file,
                Actor {
                    kind: kind.to_owned(),
                    id: id.to_owned(),
                },
            )?;
            eprintln!(
                "rotated at tree size {}; the new verifier key is:",
                entry.first_size
            );
            println!("{}", entry.vkey);
        }
        Some(KeyAction::Retire { key }) => {
            let retired = provledger_ledger::retire_offline(&args.data_dir, &key)
                .context("cannot retire (stop the server, or use POST /v1/keys/{key}/retire)")?;
            eprintln!("retired {}", retired.vkey);
        }
    }
    Ok(())
}
