//! `provledger token …` (offline token management) and the admin token made on first start.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use provledger_ledger::{
    parse_expiry, NewToken, Role, TokenInfo, TokenStore, ADMIN_TOKEN_FILE, DEFAULT_TENANT,
    TOKENS_FILE,
};
use tracing::{info, warn};

/// `provledger token …`: manage bearer tokens offline (the server must not be running on
/// the data directory; while it runs, admins use `POST /v1/tokens`).
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Data directory.
    #[arg(
        long,
        env = "PROVLEDGER_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    action: TokenAction,
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Make a token and print it (once: only its hash is stored).
    Create {
        /// admin, writer, auditor or regulator.
        #[arg(long)]
        role: String,
        /// The tenant it acts for.
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
        /// Limit it to these record kinds (comma-separated).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// Expiry: a duration from now (`30d`, `12h`) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// A note for people.
        #[arg(long)]
        label: Option<String>,
    },
    /// List tokens (ids, roles, tenants; never secrets).
    List {
        /// One JSON object per token instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token id (16 hex digits, from `token list`).
        id: String,
    },
}

/// Runs `provledger token …`.
pub fn run(args: TokenArgs) -> Result<()> {
    let store = TokenStore::open_offline(&args.data_dir).with_context(|| {
        format!(
            "cannot open the tokens of {} (a running server owns it: use POST /v1/tokens)",
            args.data_dir.display()
        )
    })?;
    match args.action {
        TokenAction::Create {
            role,
            tenant,
            kinds,
            expires,
            label,
        } => {
            let new = NewToken {
                role: role.parse::<Role>()?,
                tenant,
                kinds: (!kinds.is_empty()).then_some(kinds),
                expires: expires.as_deref().map(parse_expiry).transpose()?,
                label,
            };
            let issued = store.create(new)?;
            eprintln!(
                "created {} token {} for tenant {:?}; it is shown once:",
                issued.info.role, issued.info.id, issued.info.tenant
            );
            println!("{}", issued.token);
        }
        TokenAction::List { json } => {
            for t in store.list() {
                if json {
                    println!("{}", serde_json::to_string(&t)?);
                } else {
                    println!("{}", describe(&t));
                }
            }
        }
        TokenAction::Revoke { id } => {
            let t = store.revoke(&id)?;
            eprintln!("revoked {}", describe(&t));
        }
    }
    Ok(())
}

fn describe(t: &TokenInfo) -> String {
    let mut line = format!("{}  {:<9}  tenant={}", t.id, t.role, t.tenant);
    if let Some(kinds) = &t.kinds {
        line.push_str(&format!("  kinds={}", kinds.join(",")));
    }
    if let Some(e) = t.expires {
        line.push_str(&format!("  expires={e}"));
    }
    if let Some(l) = &t.label {
        line.push_str(&format!("  label={l:?}"));
    }
    line
}

/// Opens the server's token store; on a data directory's first start (no token file yet)
/// makes an admin token, writes it to `<data-dir>/admin.token` (mode 0600) and prints it once.
pub fn open_for_server(data_dir: &Path) -> Result<TokenStore> {
    let first_start = !data_dir.join(TOKENS_FILE).exists();
    let store = TokenStore::open(data_dir)
        .with_context(|| format!("cannot read the tokens of {}", data_dir.display()))?;
    if !first_start {
        if store.list().iter().all(|t| t.role != Role::Admin) {
            warn!("no admin token exists; make one offline with `provledger token create --role admin`");
        }
        return Ok(store);
    }
    let issued = store.create(NewToken {
        role: Role::Admin,
        tenant: DEFAULT_TENANT.to_owned(),
        kinds: None,
        expires: None,
        label: Some("made on first start".into()),
    })?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_secret(&path, &issued.token)
        .with_context(|| format!("cannot write the admin token to {}", path.display()))?;
    info!(id = %issued.info.id, path = %path.display(), "created the admin token");
    // Printed, not logged: log pipelines keep lines for longer than a secret should live.
    println!("admin token (also in {}): {}", path.display(), issued.token);
    Ok(store)
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
