//! The documentation's examples, run as written against the real binary: the walkthrough of
//! `docs/running.md`, the Python scripts `docs/verifying.md` prints with the shell blocks that
//! run them, the example of `docs/openlineage.md`, and the token requests of `docs/access.md`.
//! An example that stops working (a field the server now refuses, a script that no longer
//! verifies, an answer that changed) fails here.
//!
//! Needs `bash`, `curl`, `jq`, `gzip` and `python3` with `cryptography` and `rfc8785` (`.ci/run`
//! installs them). `curl` is made to fail on an HTTP error (`--fail-with-body`) and the blocks run
//! in one `bash` under `set -euo pipefail`, so a refused request stops them with the server's
//! message.

use std::path::Path;
use std::process::Command;

use crate::common::Server;

/// A fenced code block: its info string (`sh`, `text`, …) and its text.
struct Block {
    lang: String,
    text: String,
}

/// The fenced code blocks of `doc`, in order.
fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for line in doc.lines() {
        match (current.as_mut(), line.strip_prefix("```")) {
            (None, Some(info)) => {
                current = Some(Block {
                    lang: info.trim().to_owned(),
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => out.extend(current.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// The text of `heading`'s section: from the heading to the next heading of its level or above.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"))
        + heading.len()
        + 2;
    let mut at = start;
    for line in doc[start..].lines() {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && hashes <= level && line.chars().nth(hashes) == Some(' ') {
            break;
        }
        at += line.len() + 1;
    }
    &doc[start..at.min(doc.len())]
}

fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Marks the end of a block's output.
const DONE: &str = "--- block done";

/// Where the examples run: the directory that holds the server's `data` (they read
/// `data/admin.token` and write their files beside it).
fn work_dir(server: &Server) -> std::path::PathBuf {
    server
        .data_dir()
        .parent()
        .expect("the data directory has a parent")
        .to_path_buf()
}

/// Runs `scripts` in order in one `bash`, in [`work_dir`], with the documented address replaced
/// by the server's. Returns each block's standard output; fails the test, with everything
/// printed, when one fails.
fn run(server: &Server, scripts: &[&str]) -> Vec<String> {
    let dir = work_dir(server);
    let url = server.client().url("");
    let mut script =
        String::from("set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n");
    for block in scripts {
        script.push_str(&block.replace("http://127.0.0.1:8080", url.trim_end_matches('/')));
        script.push_str(&format!("echo '{DONE}'\n"));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .output()
        .expect("cannot run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the documented commands failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n\
         --- script\n{script}",
        out.status
    );
    let mut outputs: Vec<String> = stdout
        .split(&format!("{DONE}\n"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        outputs.pop().as_deref(),
        Some(""),
        "output after the last block"
    );
    assert_eq!(outputs.len(), scripts.len(), "{stdout}");
    outputs
}

#[test]
fn the_walkthrough_and_the_verification_scripts_work_as_written() {
    let server = Server::start(&[]);
    let running = read_doc("running.md");
    let walkthrough: Vec<Block> = blocks(section(&running, "## A two-minute walkthrough"))
        .into_iter()
        .filter(|b| b.lang == "sh")
        .collect();
    assert!(
        walkthrough.len() >= 4,
        "the walkthrough's shell blocks were not found"
    );
    // verifying.md: every script it prints that names itself (`usage: python3 NAME.py`) is
    // saved under that name, and every shell block that runs one of them is run.
    let verifying = read_doc("verifying.md");
    let dir = work_dir(&server);
    let mut scripts = 0;
    let mut checks = Vec::new();
    for block in blocks(&verifying) {
        match block.lang.as_str() {
            "python" => {
                let Some(name) = block
                    .text
                    .lines()
                    .find_map(|l| l.strip_prefix("usage: python3 "))
                    .and_then(|rest| rest.split_whitespace().next())
                else {
                    continue;
                };
                std::fs::write(dir.join(name), &block.text).expect("write the script");
                scripts += 1;
            }
            "sh" if block.text.contains("python3 ") => checks.push(block),
            _ => {}
        }
    }
    assert!(scripts >= 4, "verifying.md's scripts were not found");
    assert!(checks.len() >= 4, "verifying.md's checks were not found");

    let all: Vec<&str> = walkthrough
        .iter()
        .chain(&checks)
        .map(|b| b.text.as_str())
        .collect();
    let outputs = run(&server, &all).concat();
    // What the documentation says the checks print (ids, keys and times differ per run).
    for expected in [
        "{\"status\":\"ok\",\"tree_size\":0}",
        "is entry 2 of test.example/log, tree size 3",
        "the payload matches the commitment in the leaf",
        "ok: the tree of size 3 extends the tree of size 1",
        "ok: 3 entries of test.example/log hash to the signed root",
    ] {
        assert!(
            outputs.contains(expected),
            "missing {expected:?} in:\n{outputs}"
        );
    }
}

/// The OpenLineage example, whose answers hold no ids or times: each block's output must be
/// the `text` block the documentation shows after it, exactly.
#[test]
fn the_openlineage_example_answers_as_documented() {
    let server = Server::start(&[]);
    let doc = read_doc("openlineage.md");
    let example = blocks(section(&doc, "## Example"));
    let mut scripts = Vec::new();
    let mut expected = Vec::new();
    for (i, block) in example.iter().enumerate() {
        // Blocks with a placeholder (`<output id>`) are for the reader to fill in.
        let placeholder = block.text.contains("<output id>");
        if block.lang != "sh" || placeholder {
            continue;
        }
        scripts.push(block.text.as_str());
        expected.push(
            example
                .get(i + 1)
                .filter(|next| next.lang == "text")
                .map(|next| next.text.clone()),
        );
    }
    assert!(
        scripts.len() >= 2,
        "the OpenLineage example's blocks were not found"
    );
    let outputs = run(&server, &scripts);
    for ((script, output), expected) in scripts.iter().zip(&outputs).zip(&expected) {
        if let Some(expected) = expected {
            assert_eq!(output, expected, "the output of\n{script}");
        }
    }
}

/// The token requests of access.md (listing, then making a writer token) answer what the page
/// describes. Its `provledger token` block is for a stopped server and is not run here.
#[test]
fn the_token_requests_of_access_md_work_as_written() {
    let server = Server::start(&[]);
    let doc = read_doc("access.md");
    let requests: Vec<Block> = blocks(&doc)
        .into_iter()
        .filter(|b| b.lang == "sh" && b.text.contains("curl "))
        .collect();
    assert_eq!(
        requests.len(),
        2,
        "access.md's token requests were not found"
    );
    // The second block uses `PL`, which the walkthrough (running.md) defines.
    let mut scripts = vec!["PL=http://127.0.0.1:8080\n"];
    scripts.extend(requests.iter().map(|b| b.text.as_str()));
    let outputs = run(&server, &scripts);
    let listed: serde_json::Value = serde_json::from_str(&outputs[1]).expect("a JSON listing");
    assert_eq!(listed["tokens"][0]["role"], "admin", "{listed}");
    let made: serde_json::Value = serde_json::from_str(&outputs[2]).expect("a JSON answer");
    assert_eq!(
        (&made["role"], &made["tenant"], &made["kinds"]),
        (
            &serde_json::json!("writer"),
            &serde_json::json!("acme"),
            &serde_json::json!(["decision"])
        ),
        "{made}"
    );
    assert!(
        made["token"].as_str().is_some_and(|t| !t.is_empty()),
        "{made}"
    );
}
