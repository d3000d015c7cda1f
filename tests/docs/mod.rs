//! The documentation's examples, run as written against the real binary: the walkthrough of
//! `docs/running.md`, and the examples that continue it in `docs/verifying.md` (the Python
//! scripts it prints, with the shell blocks that run them), `docs/api.md` (shell and GraphQL),
//! `docs/export-format.md` and `docs/operating.md` (stopping and restarting the server where
//! they say so); the example of `docs/openlineage.md`; `docs/access.md`'s token commands.
//! api.md's subscriptions are run by `subscriptions`.
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
#[derive(Clone)]
pub(crate) struct Block {
    pub(crate) lang: String,
    pub(crate) text: String,
}

/// The fenced code blocks of `doc`, in order.
pub(crate) fn blocks(doc: &str) -> Vec<Block> {
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
pub(crate) fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no section {heading:?}"))
        + heading.len()
        + 2;
    let mut at = start;
    let mut fenced = false; // a `# comment` in a shell block is not a heading
    for line in doc[start..].lines() {
        fenced ^= line.starts_with("```");
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !fenced && hashes > 0 && hashes <= level && line.chars().nth(hashes) == Some(' ') {
            break;
        }
        at += line.len() + 1;
    }
    &doc[start..at.min(doc.len())]
}

pub(crate) fn read_doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Marks the end of a block's output.
const DONE: &str = "--- block done";

/// The shell variables the pages' examples define for later ones (`PL`, `AUTH`, `POLICY` and
/// `DECISION` by the walkthrough, `VKEY` by export-format.md, `AUDITOR` by access.md), and the
/// file that carries them from one [`run`] to the next.
const CARRIED_VARIABLES: [&str; 6] = ["PL", "AUTH", "POLICY", "DECISION", "VKEY", "AUDITOR"];
const CARRIED: &str = "documented-variables.sh";

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
    // A page that stops and restarts the server runs in several `bash`es: each takes over
    // the documented variables the one before set, with the address of the server now.
    script.push_str(&format!(
        "if [ -f {CARRIED} ]; then source {CARRIED}; PL={}; fi\n",
        url.trim_end_matches('/')
    ));
    // `provledger` as the documentation runs it: the binary under test.
    let bin_dir = Path::new(crate::common::bin())
        .parent()
        .expect("the binary has a directory");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(dirs).expect("a PATH");
    for block in scripts {
        script.push_str(&block.replace("http://127.0.0.1:8080", url.trim_end_matches('/')));
        script.push_str(&format!("echo '{DONE}'\n"));
    }
    script.push_str(&format!(
        "declare -p {} > {CARRIED} 2>/dev/null || true\n",
        CARRIED_VARIABLES.join(" ")
    ));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .env("PATH", path)
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

/// Saves every Python script of `doc` that names itself (`usage: python3 NAME.py`) under that
/// name in `dir`; returns how many.
fn save_scripts(doc: &str, dir: &Path) -> usize {
    let mut saved = 0;
    for block in blocks(doc).into_iter().filter(|b| b.lang == "python") {
        let Some(name) = block
            .text
            .lines()
            .find_map(|l| l.strip_prefix("usage: python3 "))
            .and_then(|rest| rest.split_whitespace().next())
        else {
            continue;
        };
        std::fs::write(dir.join(name), &block.text).expect("write the script");
        saved += 1;
    }
    saved
}

/// The shell blocks of running.md's walkthrough, which the other pages' examples continue.
fn walkthrough() -> Vec<Block> {
    let running = read_doc("running.md");
    let blocks: Vec<Block> = blocks(section(&running, "## A two-minute walkthrough"))
        .into_iter()
        .filter(|b| b.lang == "sh")
        .collect();
    assert!(
        blocks.len() >= 4,
        "the walkthrough's shell blocks were not found"
    );
    blocks
}

/// Runs the walkthrough on `server`, for the pages that continue it.
fn run_walkthrough(server: &Server) {
    let blocks = walkthrough();
    let scripts: Vec<&str> = blocks.iter().map(|b| b.text.as_str()).collect();
    run(server, &scripts);
}

/// Whether a block holds a placeholder for the reader to fill in (`<token>`, `<output id>`).
fn has_placeholder(text: &str) -> bool {
    text.split('<').skip(1).any(|rest| {
        rest.split_once('>').is_some_and(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == ' ')
        })
    })
}

#[test]
fn the_walkthrough_and_the_verification_scripts_work_as_written() {
    let server = Server::start(&[]);
    let walkthrough = walkthrough();
    // verifying.md: every script it prints that names itself (`usage: python3 NAME.py`) is
    // saved under that name, and every shell block that runs one of them is run.
    let verifying = read_doc("verifying.md");
    let dir = work_dir(&server);
    let scripts = save_scripts(&verifying, &dir);
    let checks: Vec<Block> = blocks(&verifying)
        .into_iter()
        .filter(|b| b.lang == "sh" && b.text.contains("python3 "))
        .collect();
    assert!(scripts >= 5, "verifying.md's scripts were not found");
    assert!(checks.len() >= 5, "verifying.md's checks were not found");

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
        "ok: 3 records and 2 citations of test.example/log, proven against its checkpoint of \
         tree size 3",
    ] {
        assert!(
            outputs.contains(expected),
            "missing {expected:?} in:\n{outputs}"
        );
    }
    // check_trace.py refuses a trace whose edge or proof the server could have altered.
    let trace: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("trace.json")).expect("trace.json"))
            .expect("trace.json is JSON");
    let lineage = "/data/lineage";
    for (what, pointer, altered) in [
        (
            "a changed role",
            "/edges/0/role",
            serde_json::json!("input"),
        ),
        (
            "a made-up edge",
            "/edges/0/to",
            trace["data"]["lineage"]["nodes"][0]["id"].clone(),
        ),
        ("a wrong index", "/nodes/1/index", serde_json::json!(1)),
        (
            "an edge from no node",
            "/edges/0/from",
            serde_json::json!("ab".repeat(32)),
        ),
    ] {
        let mut bad = trace.clone();
        *bad.pointer_mut(&format!("{lineage}{pointer}"))
            .unwrap_or_else(|| panic!("no {pointer} in the trace")) = altered;
        std::fs::write(dir.join("bad-trace.json"), bad.to_string()).expect("write");
        let out = Command::new("python3")
            .args(["check_trace.py", "bad-trace.json"])
            .arg(
                std::fs::read_to_string(dir.join("log.vkey"))
                    .expect("log.vkey")
                    .trim(),
            )
            .current_dir(&dir)
            .output()
            .expect("python3");
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("ValueError"),
            "check_trace.py did not refuse {what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The OpenLineage example, whose answers hold no ids or times: each block's output must be
/// the `text` block the documentation shows after it, exactly.
#[test]
fn the_openlineage_example_answers_as_documented() {
    let server = Server::start(&[]);
    let doc = read_doc("openlineage.md");
    // Blocks with a placeholder (`<output id>`) are for the reader to fill in.
    let steps: Vec<_> = shown_outputs(&doc, "## Example")
        .into_iter()
        .filter(|(b, _)| !has_placeholder(&b.text))
        .collect();
    assert!(
        steps.len() >= 2,
        "the OpenLineage example's blocks were not found"
    );
    let scripts: Vec<&str> = steps.iter().map(|(b, _)| b.text.as_str()).collect();
    let outputs = run(&server, &scripts);
    for ((block, shown), output) in steps.iter().zip(&outputs) {
        if let Some(shown) = shown {
            assert_eq!(output, shown, "the output of\n{}", block.text);
        }
    }
}

/// The token requests of access.md (listing, then making a writer token) answer what the page
/// describes; its offline `provledger token` block, run on the stopped server's directory,
/// makes an auditor token and revokes it, which the restarted server then refuses.
#[test]
fn the_token_requests_of_access_md_work_as_written() {
    let mut server = Server::start(&[]);
    let doc = read_doc("access.md");
    let requests: Vec<Block> = blocks(&doc)
        .into_iter()
        .filter(|b| b.lang == "sh" && b.text.contains("curl "))
        .collect();
    let offline: Vec<Block> = blocks(&doc)
        .into_iter()
        .filter(|b| b.lang == "sh" && b.text.contains("provledger token "))
        .collect();
    assert_eq!(
        offline.len(),
        1,
        "access.md's offline token block was not found"
    );
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

    server.stop();
    let listed = run(&server, &[&offline[0].text, "echo \"$AUDITOR\"\n"]);
    assert!(listed[0].contains("auditor  tenant=acme"), "{}", listed[0]);
    server.restart();
    let auditor = listed[1].trim();
    assert!(
        auditor.starts_with("plt_"),
        "the block sets AUDITOR: {auditor}"
    );
    let refused = server.client().with_token(auditor).get("/v1/tokens");
    assert_eq!(refused.status, 401, "a revoked token: {}", refused.text());
    let tokens = server.client().get("/v1/tokens").ok_json();
    assert!(
        !tokens.to_string().contains("q3 audit"),
        "revoked, yet listed: {tokens}"
    );
}

/// What differs between two runs of the same example: ids, hashes, keys and signatures (runs of
/// 40 or more base64 or hex characters, `/` and `+` included), key hashes (8 lowercase hex
/// digits) and the log's origin.
fn masked(text: &str) -> String {
    let text = text.replace(crate::common::ORIGIN, "vm/provledger");
    let mut out = String::new();
    let mut run = String::new();
    let token = |c: char| c.is_ascii_alphanumeric() || "+/=".contains(c);
    for c in text.chars().chain(std::iter::once('\n')) {
        if token(c) {
            run.push(c);
            continue;
        }
        let key_hash = run.len() == 8 && run.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        out.push_str(if run.len() >= 40 || key_hash {
            "…"
        } else {
            &run
        });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// The GraphQL variables api.md's queries may declare, and the walkthrough's shell variable
/// each takes its value from.
const GRAPHQL_VARIABLES: [(&str, &str); 1] = [("v3", "$POLICY")];

/// A GraphQL block of api.md as a shell command that sends it, with its variables, to
/// `POST /graphql` and prints the answer.
fn graphql_request(query: &str) -> String {
    let mut args = String::new();
    let mut vars = Vec::new();
    for (at, _) in query.match_indices('$') {
        let name: String = query[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if vars.contains(&name) {
            continue;
        }
        let (_, from) = GRAPHQL_VARIABLES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| {
                panic!("api.md's query uses ${name}, which no test value fills:\n{query}")
            });
        args.push_str(&format!(" --arg {name} \"{from}\""));
        vars.push(name);
    }
    let variables: Vec<String> = vars.iter().map(|v| format!("{v}: ${v}")).collect();
    format!(
        "Q=$(cat <<'GRAPHQL'\n{query}GRAPHQL\n)\n\
         jq -n --arg q \"$Q\"{args} '{{query: $q, variables: {{{}}}}}' |\n  \
         curl -s $PL/graphql -H \"$AUTH\" -H 'content-type: application/json' -d @-\necho\n",
        variables.join(", ")
    )
}

/// api.md's examples, in the page's order after the walkthrough: every shell block but those
/// with a placeholder (`<token>`) runs, and its output must be the `text` block the page shows
/// after it, up to ids, keys and signatures; every GraphQL query and mutation is sent to the
/// server and must answer data and no errors (subscriptions are tested in `subscriptions`).
#[test]
fn the_api_examples_continue_the_walkthrough_as_written() {
    let server = Server::start(&[]);
    let doc = read_doc("api.md");
    let example = blocks(&doc);
    let walkthrough = walkthrough();
    let mut scripts: Vec<String> = walkthrough.iter().map(|b| b.text.clone()).collect();
    // (script number, what the page shows it prints), and the scripts that send GraphQL.
    let mut expected = Vec::new();
    let mut queries = Vec::new();
    let mut shell = 0;
    for (i, block) in example.iter().enumerate() {
        match block.lang.as_str() {
            "sh" if !has_placeholder(&block.text) => {
                shell += 1;
                if let Some(next) = example.get(i + 1).filter(|next| next.lang == "text") {
                    expected.push((scripts.len(), next.text.clone()));
                }
                scripts.push(block.text.clone());
            }
            "graphql" if !block.text.trim_start().starts_with("subscription") => {
                queries.push((scripts.len(), block.text.clone()));
                scripts.push(graphql_request(&block.text));
            }
            _ => {}
        }
    }
    assert!(shell >= 5, "api.md's shell examples were not found");
    assert!(
        queries.len() >= 5,
        "api.md's GraphQL examples were not found"
    );
    assert!(expected.len() >= 3, "api.md's shown outputs were not found");
    let all: Vec<&str> = scripts.iter().map(String::as_str).collect();
    let outputs = run(&server, &all);
    for (at, shown) in &expected {
        assert_eq!(
            masked(&outputs[*at]),
            masked(shown),
            "the output of\n{}",
            scripts[*at]
        );
    }
    for (at, query) in &queries {
        let answer: serde_json::Value = serde_json::from_str(&outputs[*at])
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nfor\n{query}", outputs[*at]));
        assert!(
            answer.get("errors").is_none() && answer["data"].is_object(),
            "the query\n{query}\nanswered {answer}"
        );
    }
}

#[test]
fn masking_keeps_what_an_example_shows_and_hides_what_varies() {
    let shown = "ok: 3 records of vm/provledger, tree size 4 (root u8bVsvja+WDlZMU/P7IFQV5mjPU5jU8yjA/YS6VsotQ=)\n\
                 signed by trusted key vm/provledger+13982ea4+AYpOnWP/iXD3uEA8HW6m6toOWImrKdCAdpnADhmF2PVl\n";
    let got = "ok: 3 records of test.example/log, tree size 4 (root 7uNs4SQkXOwQMawbfy4FwQcSPJlNYM42VAS8B2/Rxsk=)\n\
               signed by trusted key test.example/log+0d89c78b+AdkGTQg6jt1etzmeGt6H53YZvp9S2FdIFs2ySfSooS95\n";
    assert_eq!(masked(shown), masked(got));
    assert_ne!(
        masked(shown),
        masked(&got.replace("3 records", "4 records"))
    );
    assert_ne!(masked(shown), masked(&got.replace("size 4", "size 5")));
    assert_eq!(masked("[2,\"decision\"]"), "[2,\"decision\"]");
    assert!(has_placeholder("Bearer <token>") && has_placeholder("ids: <output id>"));
    assert!(
        !has_placeholder("jq -r < batch.json")
            && !has_placeholder("[ $x -lt 2 ] || y=$((a < 2 && b > 1))")
    );
    assert_eq!(
        masked("6aa7b10d  previous  sizes 3..4"),
        masked("17193022  previous  sizes 3..4")
    );
    assert_ne!(
        masked("6aa7b10d  previous  sizes 3..4"),
        masked("17193022  current   sizes 3..4")
    );
}

/// The shell blocks of `doc` in `heading`'s section, each with the `text` block the page shows
/// right after it (what it prints), if any.
fn shown_outputs(doc: &str, heading: &str) -> Vec<(Block, Option<String>)> {
    let all = blocks(section(doc, heading));
    let mut out = Vec::new();
    for (i, block) in all.iter().enumerate() {
        if block.lang != "sh" {
            continue;
        }
        let shown = all.get(i + 1).filter(|next| next.lang == "text");
        out.push((block.clone(), shown.map(|b| b.text.clone())));
    }
    out
}

/// Runs `steps` in one `bash` and compares each output with what the page shows after it, up
/// to what varies between runs ([`masked`]). Returns the outputs.
fn run_as_shown(server: &Server, steps: &[(Block, Option<String>)]) -> Vec<String> {
    let scripts: Vec<&str> = steps.iter().map(|(b, _)| b.text.as_str()).collect();
    let outputs = run(server, &scripts);
    for ((block, shown), output) in steps.iter().zip(&outputs) {
        if let Some(shown) = shown {
            assert_eq!(
                masked(output),
                masked(shown),
                "the output of\n{}",
                block.text
            );
        }
    }
    outputs
}

/// export-format.md's examples, a regulator's path after the walkthrough: with the server
/// stopped, the four kinds of export and their check; with it running again and the log
/// grown, the check against a later checkpoint; stopped again, the Python reference verifier
/// and the standard formats. Every output the page shows must be what the commands print.
#[test]
fn the_export_examples_run_as_written_on_the_walkthroughs_log() {
    let mut server = Server::start(&[]);
    let doc = read_doc("export-format.md");
    let making = shown_outputs(&doc, "## Making and checking bundles");
    let python = shown_outputs(&doc, "## Reference verifier in Python");
    let standard = shown_outputs(&doc, "## Standard formats");
    assert_eq!(
        (making.len(), python.len(), standard.len()),
        (3, 1, 1),
        "export-format.md's examples were not found"
    );
    assert!(
        making.iter().all(|(_, shown)| shown.is_some()) && python[0].1.is_some(),
        "export-format.md shows what its examples print"
    );
    run_walkthrough(&server);

    server.stop();
    run_as_shown(&server, &making[..2]);

    server.restart();
    server.append(&serde_json::json!({
        "kind": "input", "actor": {"type": "service", "id": "helpdesk"}, "attributes": {"n": 2}
    }));
    run_as_shown(&server, &making[2..]);

    server.stop();
    assert_eq!(
        save_scripts(&doc, &work_dir(&server)),
        1,
        "verify_bundle.py"
    );
    run_as_shown(&server, &[python, standard].concat());
    let dsse = work_dir(&server).join("lineage.dsse.json");
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&dsse).expect("the DSSE export")).expect("JSON");
    assert_eq!(
        envelope["payloadType"], "application/vnd.in-toto+json",
        "{envelope}"
    );
}

/// operating.md's examples after the walkthrough: compaction of a stopped server's directory,
/// key rotation on the running server and then offline, the key list, and `verify` against the
/// log's first key; each output the page shows (but compaction's, which holds timings) must be
/// what the commands print. Restarted, the server signs with the last key.
#[test]
fn the_operating_examples_run_as_written_on_the_walkthroughs_log() {
    let mut server = Server::start(&[]);
    let doc = read_doc("operating.md");
    let compaction = shown_outputs(&doc, "## Erasure, compaction and retention");
    let compaction: Vec<_> = compaction
        .into_iter()
        .filter(|(b, _)| b.text.contains("provledger compact"))
        .map(|(b, _)| (b, None))
        .collect();
    let rotation = shown_outputs(&doc, "## Key rotation");
    assert_eq!(
        (compaction.len(), rotation.len()),
        (1, 3),
        "operating.md's examples were not found"
    );
    assert!(
        rotation.iter().all(|(_, shown)| shown.is_some()),
        "operating.md shows what its key rotation examples print"
    );
    run_walkthrough(&server);

    server.stop();
    run_as_shown(&server, &compaction);
    server.restart();
    run_as_shown(&server, &rotation[..1]);
    server.stop();
    let offline = run_as_shown(&server, &rotation[1..]);

    // `key rotate` printed the new key, `key list` named it current and the first key last,
    // and the restarted server publishes the three, the new one first.
    let lines: Vec<&str> = offline[0].lines().collect();
    assert_eq!(lines.len(), 4, "the new key and three listed: {lines:?}");
    server.restart();
    let published = server.client().get("/v1/key").text();
    let published: Vec<&str> = published.lines().collect();
    assert_eq!(published.len(), 3, "{published:?}");
    assert_eq!(
        published[0], lines[0],
        "the server signs with the rotated key"
    );
    assert!(
        lines[1].ends_with(published[0]) && lines[1].contains(" current "),
        "{lines:?}"
    );
    assert!(lines[3].ends_with(published[2]), "{lines:?}");
    assert_eq!(server.tree_size(), 5, "two rotation records after three");
}
