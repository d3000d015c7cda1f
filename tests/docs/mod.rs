//! The documentation's walkthroughs, run as written against the real binary: the shell blocks
//! of `docs/running.md` ("A two-minute walkthrough"), then the Python scripts `docs/verifying.md`
//! prints and the shell blocks that run them on the walkthrough's files. An example that stops
//! working (a field the server now refuses, a script that no longer verifies) fails here.
//!
//! Needs `bash`, `curl`, `jq` and `python3` with `cryptography` and `rfc8785` (`.ci/run`
//! installs them). `curl` is made to fail on an HTTP error (`--fail-with-body`) and the script
//! runs under `set -euo pipefail`, so a refused request stops it with the server's message.

use std::path::Path;
use std::process::Command;

use crate::common::Server;

/// The text of `heading`'s section: from the heading to the next heading of its level or above.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let body = &doc[start + heading.len() + 2..];
    let end = body
        .lines()
        .scan(0, |at, line| {
            let here = *at;
            *at += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, line)| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            hashes > 0 && hashes <= level && line.chars().nth(hashes) == Some(' ')
        })
        .map_or(body.len(), |(at, _)| at);
    &body[..end]
}

/// The fenced code blocks of `text` whose info string is `lang`, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) if info.trim() == lang => current = Some(String::new()),
            (None, Some(_)) => current = Some(String::from("\u{0}")), // another language
            (Some(block), Some("")) => {
                if !block.starts_with('\u{0}') {
                    out.push(std::mem::take(block));
                }
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn the_walkthrough_and_the_verification_scripts_work_as_written() {
    let server = Server::start(&[]);
    // The walkthrough reads `data/admin.token` and writes its files beside `data`.
    let dir = server
        .data_dir()
        .parent()
        .expect("the data directory has a parent")
        .to_path_buf();
    let url = server.client().url("");

    let running = read_doc("running.md");
    let walkthrough = blocks(section(&running, "## A two-minute walkthrough"), "sh");
    assert!(
        walkthrough.len() >= 4,
        "the walkthrough's shell blocks were not found"
    );
    // verifying.md: every script it prints that names itself (`usage: python3 NAME.py`) is
    // saved under that name, and every shell block that runs one of them is run.
    let verifying = read_doc("verifying.md");
    let mut scripts = 0;
    for script in blocks(&verifying, "python") {
        let Some(name) = script
            .lines()
            .find_map(|l| l.strip_prefix("usage: python3 "))
            .and_then(|rest| rest.split_whitespace().next())
        else {
            continue;
        };
        std::fs::write(dir.join(name), &script).expect("write the script");
        scripts += 1;
    }
    assert!(scripts >= 4, "verifying.md's scripts were not found");
    let checks: Vec<String> = blocks(&verifying, "sh")
        .into_iter()
        .filter(|b| b.contains("python3 "))
        .collect();
    assert!(checks.len() >= 4, "verifying.md's checks were not found");

    let mut script =
        String::from("set -euo pipefail\ncurl() { command curl --fail-with-body \"$@\"; }\n");
    for block in walkthrough.iter().chain(&checks) {
        // The server under test listens elsewhere than the documented default.
        script.push_str(&block.replace("http://127.0.0.1:8080", url.trim_end_matches('/')));
        script.push_str("echo '--- block done'\n");
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
        "the documented commands failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- script\n{script}",
        out.status
    );
    // What the documentation says the checks print.
    for expected in [
        "ok: ",
        "is entry 2 of test.example/log, tree size 3",
        "the payload matches the commitment in the leaf",
        "ok: the tree of size 3 extends the tree of size 1",
        "entries of test.example/log hash to the signed root",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    assert_eq!(
        stdout.matches("--- block done").count(),
        walkthrough.len() + checks.len()
    );
}
