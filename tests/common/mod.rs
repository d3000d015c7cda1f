//! Helpers shared by every end-to-end test: the real `provledger` binary as a child process,
//! a small HTTP client, and independent implementations of what a sceptical client checks
//! (RFC 9162 proofs in [`merkle`], C2SP signed notes and checkpoints in [`note`]).
//!
//! Nothing here links the workspace's crates: the tests see the server only from outside.

pub mod merkle;
pub mod note;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

/// Origin every test server is started with.
pub const ORIGIN: &str = "test.example/log";

/// How long a server may take to answer `/healthz` after start, or to exit after SIGTERM.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
/// How often `/healthz` (or process exit) is polled.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_provledger")
}

/// A running (or stopped) `provledger serve`, killed on drop. It owns its temporary directory:
/// `<tmp>/data` is the data directory, `<tmp>/serve-<n>.log` the output of the n-th start.
pub struct Server {
    tmp: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
    client: Client,
    starts: u32,
}

impl Server {
    /// Starts a server on a fresh data directory, with `extra` flags after the usual ones.
    pub fn start(extra: &[&str]) -> Server {
        let tmp = tempfile::Builder::new()
            .prefix("provledger-e2e-")
            .tempdir()
            .expect("cannot make a temporary directory");
        let mut server = Server {
            tmp,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            client: Client::new("http://127.0.0.1:9"),
            starts: 0,
        };
        server.spawn();
        server
    }

    /// The admin token the server wrote on first start (`<data-dir>/admin.token`).
    pub fn admin_token(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir().join("admin.token"))
            .ok()
            .map(|t| t.trim().to_owned())
    }

    /// The data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The server's process id (it must be running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The server's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// A client for this start of the server (it stops working once the server is killed).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Starts the server again on the same data directory (it must be stopped).
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() needs a stopped server: call kill() or stop() first"
        );
        self.spawn();
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("cannot SIGKILL the server");
            child.wait().expect("cannot reap the killed server");
        }
    }

    /// SIGTERM and wait for a graceful exit; fails the test if the server does not exit
    /// cleanly within the bound.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -TERM {}", child.id()))
            .status()
            .expect("cannot run sh to send SIGTERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            if let Some(status) = child.try_wait().expect("cannot poll the server") {
                assert!(
                    status.success(),
                    "server exited with {status} after SIGTERM; its log:\n{}",
                    self.log()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit within {STARTUP_LIMIT:?} of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// What the current (or last) start of the server wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join(format!("serve-{}.log", self.starts))
    }

    /// Picks a free port, starts the binary and polls `/healthz` until it answers 200. A port
    /// taken between picking and binding is retried with another one.
    fn spawn(&mut self) {
        for _attempt in 0..5 {
            self.starts += 1;
            let port = free_port();
            let log = File::create(self.log_path()).expect("cannot create the server log");
            let child = Command::new(bin())
                .arg("serve")
                .arg("--data-dir")
                .arg(self.data_dir())
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--origin")
                .arg(ORIGIN)
                .args(&self.extra)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("cannot clone the log handle"))
                .stderr(log)
                .spawn()
                .expect("cannot start the provledger binary");
            self.child = Some(child);
            self.client = Client::new(&format!("http://127.0.0.1:{port}"));
            match self.wait_ready() {
                Ok(()) => {
                    if let Some(token) = self.admin_token() {
                        self.client = self.client.with_token(&token);
                    }
                    return;
                }
                Err(exited) => {
                    self.child = None;
                    let log = self.log();
                    if log.contains("cannot listen") {
                        continue;
                    }
                    panic!("server exited before it was ready ({exited}); its log:\n{log}");
                }
            }
        }
        panic!("could not find a free port for the server in 5 attempts");
    }

    /// Ok when `/healthz` answers 200; Err with the exit status when the process died first.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_LIMIT;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let url = self.client.url("/healthz");
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("cannot poll the server") {
                return Err(status.to_string());
            }
            if let Ok(resp) = agent.get(&url).call() {
                if resp.status() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "server did not answer GET /healthz with 200 within {STARTUP_LIMIT:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL_EVERY);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::ops::Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot find a free port")
}

/// An HTTP answer, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("body is not UTF-8")
    }

    /// The body as JSON; fails the test with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of a {} answer is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a 200 and returns the JSON body.
    pub fn ok_json(&self) -> Value {
        assert_eq!(
            self.status,
            200,
            "expected 200, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }
}

/// A small blocking HTTP client bound to one server address.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// Sent as `Authorization: Bearer …` when set (the admin token by default).
    token: Option<String>,
}

impl Client {
    fn new(base: &str) -> Client {
        Client {
            base: base.to_owned(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout_read(Duration::from_secs(60))
                .timeout_write(Duration::from_secs(60))
                .build(),
            token: None,
        }
    }

    /// The same server with another bearer token (or none: `anonymous`).
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The same server without a token.
    pub fn anonymous(&self) -> Client {
        Client {
            token: None,
            ..self.clone()
        }
    }

    /// A request with this client's token, for anything the helpers below do not cover.
    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &self.url(path));
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// Sends a prepared request (from [`Client::request`]) with an optional body.
    pub fn send(&self, req: ureq::Request, body: Option<&[u8]>) -> Resp {
        let url = req.url().to_owned();
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        finish(result).unwrap_or_else(|e| panic!("{url} failed: {e}"))
    }

    /// Absolute URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET; fails the test on a transport error.
    pub fn get(&self, path: &str) -> Resp {
        finish(self.request("GET", path).call())
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}"))
    }

    /// POST of raw bytes; `Err` on a transport error (the server died, …).
    pub fn try_post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Resp, String> {
        finish(
            self.request("POST", path)
                .set("Content-Type", content_type)
                .send_bytes(body),
        )
    }

    /// POST of raw bytes; fails the test on a transport error.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Resp {
        self.try_post(path, content_type, body)
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"))
    }

    /// POST of a JSON value to `/v1/records`.
    pub fn post_records(&self, body: &Value) -> Resp {
        self.post(
            "/v1/records",
            "application/json",
            &serde_json::to_vec(body).expect("encodable"),
        )
    }

    /// Appends one record or an array of records and returns the receipt(s); asserts 200.
    pub fn append(&self, body: &Value) -> Value {
        self.post_records(body).ok_json()
    }

    /// Appends an array of records and returns the receipts; asserts 200 and one per record.
    pub fn append_all(&self, records: &[Value]) -> Vec<Value> {
        let receipts = self.append(&Value::Array(records.to_vec()));
        let receipts = receipts.as_array().expect("an array of receipts").clone();
        assert_eq!(receipts.len(), records.len(), "one receipt per record");
        receipts
    }

    /// The latest checkpoint, parsed (its signature is not checked here).
    pub fn checkpoint(&self) -> note::Checkpoint {
        let resp = self.get("/checkpoint");
        assert_eq!(resp.status, 200, "GET /checkpoint: {}", resp.text());
        note::Checkpoint::parse(&resp.text())
    }

    /// Tree size of the latest checkpoint.
    pub fn tree_size(&self) -> u64 {
        self.checkpoint().size
    }

    /// Asserts that `/healthz` answers 200.
    pub fn assert_healthy(&self) {
        let resp = self.get("/healthz");
        assert_eq!(resp.status, 200, "GET /healthz: {}", resp.text());
    }
}

/// Any status is an answer (ureq 2 reports 4xx/5xx as `Error::Status`); only transport
/// failures are errors.
fn finish(r: Result<ureq::Response, ureq::Error>) -> Result<Resp, String> {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(ureq::Error::Transport(t)) => return Err(t.to_string()),
    };
    let status = resp.status();
    let content_type = resp.header("Content-Type").unwrap_or_default().to_owned();
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("reading the body failed: {e}"))?;
    Ok(Resp {
        status,
        content_type,
        body,
    })
}

/// A record with a payload; `n` makes it distinct.
pub fn record(kind: &str, entity: &str, n: u64) -> Value {
    json!({
        "kind": kind,
        "entity": entity,
        "actor": {"type": "agent", "id": "agent-7"},
        "attributes": {"model": "m-1", "step": n},
        "payload": {"text": format!("record number {n}"), "n": n, "tags": ["a", "b"]},
    })
}

/// A receipt's fields, decoded and checked for shape.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub id: String,
    pub index: u64,
    pub leaf: Vec<u8>,
    pub tree_size: u64,
    pub inclusion_proof: Vec<[u8; 32]>,
    pub checkpoint: String,
}

impl Receipt {
    /// Parses a receipt object; fails the test unless it has exactly the contract's fields.
    pub fn from_json(v: &Value) -> Receipt {
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("a receipt is a JSON object, got {v}"));
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "checkpoint",
                "id",
                "inclusion_proof",
                "index",
                "leaf",
                "tree_size"
            ],
            "receipt fields: {v}"
        );
        let id = v["id"].as_str().expect("id is a string").to_owned();
        assert!(
            id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "id must be 64 lowercase hex digits: {id:?}"
        );
        Receipt {
            id,
            index: v["index"].as_u64().expect("index is an integer"),
            leaf: b64(v["leaf"].as_str().expect("leaf is a string")),
            tree_size: v["tree_size"].as_u64().expect("tree_size is an integer"),
            inclusion_proof: v["inclusion_proof"]
                .as_array()
                .expect("inclusion_proof is an array")
                .iter()
                .map(|h| hash32(h.as_str().expect("a proof hash is a string")))
                .collect(),
            checkpoint: v["checkpoint"]
                .as_str()
                .expect("checkpoint is a string")
                .to_owned(),
        }
    }

    /// Checks everything a client can check without the log's public key: the id is the
    /// RFC 6962 leaf hash, the checkpoint is for this log and this tree size, and the audit
    /// path leads from the leaf to the checkpoint's root.
    pub fn check(&self) -> note::Checkpoint {
        let leaf_hash = merkle::leaf_hash(&self.leaf);
        assert_eq!(
            self.id,
            hex::encode(leaf_hash),
            "id is not SHA-256(0x00 ‖ leaf)"
        );
        let cp = note::Checkpoint::parse(&self.checkpoint);
        assert_eq!(cp.origin, ORIGIN, "checkpoint origin");
        assert_eq!(cp.size, self.tree_size, "checkpoint size vs tree_size");
        assert!(self.index < self.tree_size, "index inside the tree");
        assert!(
            merkle::verify_inclusion(
                &leaf_hash,
                self.index,
                self.tree_size,
                &self.inclusion_proof,
                &cp.root
            ),
            "inclusion proof of index {} does not lead to the root of tree size {}",
            self.index,
            self.tree_size
        );
        cp
    }
}

/// Decodes standard base64; fails the test otherwise.
pub fn b64(s: &str) -> Vec<u8> {
    B64.decode(s)
        .unwrap_or_else(|e| panic!("{s:?} is not standard base64: {e}"))
}

/// Decodes a base64 SHA-256 hash.
pub fn hash32(s: &str) -> [u8; 32] {
    b64(s)
        .try_into()
        .unwrap_or_else(|_| panic!("{s:?} is not a 32-byte hash"))
}

/// Hashes of a JSON array of base64 hashes.
pub fn hashes(v: &Value) -> Vec<[u8; 32]> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of hashes, got {v}"))
        .iter()
        .map(|h| hash32(h.as_str().expect("a hash is a string")))
        .collect()
}

/// `provledger verify --data-dir DIR`.
pub fn run_verify(data_dir: &Path) -> Output {
    Command::new(bin())
        .arg("verify")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run provledger verify")
}

/// `provledger key --data-dir DIR`.
pub fn run_key(data_dir: &Path) -> Output {
    Command::new(bin())
        .arg("key")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run provledger key")
}

/// Stdout and stderr of a finished command, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that `provledger verify` accepts the data directory; returns its stdout.
pub fn assert_verifies(data_dir: &Path) -> String {
    let out = run_verify(data_dir);
    assert!(
        out.status.success(),
        "provledger verify failed on a healthy data dir:\n{}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.starts_with("ok:"), "verify output: {stdout}");
    stdout
}

/// Copies a directory tree, keeping runs of zero bytes as holes so that fjall's preallocated
/// journals stay cheap to copy.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("cannot create the copy");
    for entry in std::fs::read_dir(src).expect("cannot list a directory") {
        let entry = entry.expect("cannot read a directory entry");
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().expect("cannot stat");
        if kind.is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            copy_file_sparse(&entry.path(), &to);
        }
    }
}

fn copy_file_sparse(src: &Path, dst: &Path) {
    use std::io::{Seek, SeekFrom};
    let bytes = std::fs::read(src).expect("cannot read a file to copy");
    let mut out = File::create(dst).expect("cannot create a copied file");
    const BLOCK: usize = 4096;
    for (i, chunk) in bytes.chunks(BLOCK).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            out.seek(SeekFrom::Start((i * BLOCK) as u64)).expect("seek");
            out.write_all(chunk).expect("cannot write a copied file");
        }
    }
    out.set_len(bytes.len() as u64).expect("cannot size a copy");
    let perms = std::fs::metadata(src).expect("stat").permissions();
    std::fs::set_permissions(dst, perms).expect("cannot copy permissions");
}

/// Every regular file under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("cannot list a directory") {
            let entry = entry.expect("cannot read a directory entry");
            if entry.file_type().expect("cannot stat").is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

/// XORs one byte of a file with `mask`.
pub fn flip_byte(path: &Path, offset: u64, mask: u8) {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("cannot open a file to damage");
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut b).expect("cannot read the byte to flip");
    b[0] ^= mask;
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&b).expect("cannot write the flipped byte");
    f.sync_all().expect("fsync");
}
