//! GraphQL subscriptions over WebSocket (`GET /graphql/ws`, graphql-transport-ws, also the
//! legacy graphql-ws): `recordAppended(filter)` tails the log live.
//!
//! A subscriber hears of every batch only after it is fsynced and its signed checkpoint is
//! published ([`Ledger::subscribe`]); it then reads the new records from the log, in index
//! order, and sends those that match. It keeps its own position in the log, so a subscriber
//! that falls behind the ledger's notification backlog catches up from the log itself: it never
//! misses or repeats a record.
//!
//! The WebSocket transport ([`websocket`]) waits for each message to be taken by the
//! connection before it produces the next, so a subscriber that stops reading holds at most a
//! few messages in server memory (actix-ws's 32-frame channel and the socket's buffers) and the
//! rest stays in the log until it reads again.

use std::collections::VecDeque;
use std::sync::Arc;

use actix_web::http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use actix_web::{web, HttpRequest, HttpResponse};
use async_graphql::futures_util::stream::{self, BoxStream, Stream, StreamExt};
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage};
use async_graphql::{Context, Data, Executor, InputObject, Object, Subscription};
use provledger_ledger::{Head, Leaf, Ledger, TokenStore};
use tokio::sync::broadcast::error::RecvError;

use crate::auth::{caller_from_token, check_field, Caller};
use crate::error::{ApiError, Failure, GqlCode};
use crate::schema::{Checkpoint, InclusionProof, ProvSchema, Record};
use crate::AppState;

/// Leaves scanned from the log per blocking call while catching up.
const CHUNK: u64 = 256;
/// Most matching records (payloads included) a subscription holds ready to send: with the
/// transport's backpressure, what bounds a subscriber's memory in the server.
const MAX_READY: usize = 16;
/// How often the server pings an open WebSocket; a connection whose ping cannot be sent is
/// closed.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// Registers `GET /graphql/ws`.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/graphql/ws", web::get().to(websocket));
}

/// Upgrades to a WebSocket speaking graphql-transport-ws (or the legacy graphql-ws), chosen
/// by the client's `Sec-WebSocket-Protocol` header. The caller is the bearer token of the
/// upgrade request's `Authorization` header, or (browsers cannot set that header) of the
/// `Authorization` member of the `connection_init` payload.
async fn websocket(
    state: web::Data<AppState>,
    schema: web::Data<ProvSchema>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let offered = req
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The first protocol offered that we speak, as the client ordered them.
    let Some(protocol) = offered
        .split(',')
        .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
    else {
        return Err(ApiError::bad_request(
            "invalid_websocket",
            "GET /graphql/ws is a WebSocket endpoint: upgrade with Sec-WebSocket-Protocol: graphql-transport-ws",
        ));
    };
    let mut data = Data::default();
    // Each message re-checks the subscriber's token against the store (revocation, expiry).
    data.insert(Arc::clone(&state.tokens));
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let token = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        data.insert(caller_from_token(&state, token)?);
    }
    let (mut response, session, incoming) = actix_ws::handle(&req, payload).map_err(|e| {
        ApiError::bad_request(
            "invalid_websocket",
            format!("WebSocket handshake failed: {e}"),
        )
    })?;
    response.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol.sec_websocket_protocol()),
    );
    let executor = Coded(ProvSchema::clone(&schema));
    actix_web::rt::spawn(serve_websocket(
        executor, data, protocol, state, session, incoming,
    ));
    Ok(response)
}

/// Runs one WebSocket connection: client frames feed async-graphql's protocol machine, and each
/// message it produces is sent before the next is asked for (backpressure: the subscription's
/// stream is not polled while the client is not reading). Pings are answered, and sent every
/// [`HEARTBEAT`]; the connection ends when either side closes or a send fails.
async fn serve_websocket(
    executor: Coded,
    data: Data,
    protocol: WebSocketProtocols,
    state: web::Data<AppState>,
    mut session: actix_ws::Session,
    incoming: actix_ws::MessageStream,
) {
    let answer = session.clone();
    let frames = incoming
        .take_while(|frame| {
            let open = matches!(
                frame,
                Ok(actix_ws::Message::Text(_)
                    | actix_ws::Message::Binary(_)
                    | actix_ws::Message::Ping(_)
                    | actix_ws::Message::Pong(_)
                    | actix_ws::Message::Continuation(_)
                    | actix_ws::Message::Nop)
            );
            std::future::ready(open)
        })
        .filter_map(move |frame| {
            let mut answer = answer.clone();
            async move {
                match frame {
                    Ok(actix_ws::Message::Text(text)) => Some(text.into_bytes()),
                    Ok(actix_ws::Message::Binary(bytes)) => Some(bytes),
                    Ok(actix_ws::Message::Ping(bytes)) => {
                        // A failed pong means the connection is gone; the next send says so.
                        let _ = answer.pong(&bytes).await;
                        None
                    }
                    _ => None,
                }
            }
        })
        .boxed_local();
    let mut outgoing = WebSocket::new(executor, frames, protocol)
        .connection_data(data)
        .on_connection_init(move |init| async move { connection_caller(&state, &init) });
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = outgoing.next() => match message {
                Some(WsMessage::Text(text)) => {
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    let reason = actix_ws::CloseReason {
                        code: code.into(),
                        description: Some(reason),
                    };
                    let _ = session.close(Some(reason)).await;
                    return;
                }
                None => break,
            },
            _ = heartbeat.tick() => {
                if session.ping(b"").await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = session.close(None).await;
}

/// Session data from a `connection_init` payload: the [`Caller`] of its `Authorization`
/// (`"Bearer <token>"`) member, when it has one. A token that does not authenticate refuses
/// the connection (async-graphql closes it with code 1002 and the error as the reason).
fn connection_caller(state: &AppState, init: &serde_json::Value) -> async_graphql::Result<Data> {
    let mut data = Data::default();
    let token = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| init.get(k)?.as_str());
    if let Some(token) = token {
        let caller = caller_from_token(state, token)
            .map_err(|e| async_graphql::Error::new(e.to_string()))?;
        data.insert(caller);
    }
    Ok(data)
}

/// The schema, with codes given to the errors async-graphql raises itself (as on `POST
/// /graphql`).
#[derive(Clone)]
struct Coded(ProvSchema);

impl Executor for Coded {
    async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        crate::schema::execute(&self.0, request).await
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, async_graphql::Response> {
        Executor::execute_stream(&self.0, request, session_data)
            .map(|mut response| {
                crate::error::code_library_errors(&mut response.errors);
                response
            })
            .boxed()
    }
}

/// Subscriptions.
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Records as they are appended, oldest first, each once it is durable and covered by a
    /// signed checkpoint; only those matching `filter` (every field given must match).
    async fn record_appended(
        &self,
        ctx: &Context<'_>,
        filter: Option<AppendedFilter>,
        #[graphql(
            desc = "Start at this leaf index (at most the current tree size) to resume without a gap: pass the last index received plus one. Default: the current tree size, so the first record is the next one appended."
        )]
        from: Option<u64>,
    ) -> Result<impl Stream<Item = async_graphql::Result<RecordAppended>>, Failure> {
        // Subscriptions do not pass the query/mutation field rules: check this one here.
        let caller = ctx.data_opt::<Caller>().cloned();
        check_field(caller.as_ref(), "Subscription", "recordAppended")?;
        let ledger = ctx
            .data::<Ledger>()
            .map_err(|e| Failure::internal(&e.message))?
            .clone();
        let tokens = ctx.data_opt::<Arc<TokenStore>>().cloned();
        let stream = tail(ledger, filter.unwrap_or_default(), caller, tokens, from)?;
        Ok(stream.map(|r| r.map_err(Into::into)))
    }
}

/// Which appended records to send; every field given must match.
#[derive(InputObject, Clone, Debug, Default)]
pub(crate) struct AppendedFilter {
    /// Record kind.
    kind: Option<String>,
    /// Entity name.
    entity: Option<String>,
    /// Writer, by type and/or id.
    actor: Option<AppendedActorFilter>,
    /// Owning tenant.
    tenant: Option<String>,
}

/// Matches writers by type and/or id.
#[derive(InputObject, Clone, Debug, Default)]
pub(crate) struct AppendedActorFilter {
    #[graphql(name = "type")]
    kind: Option<String>,
    id: Option<String>,
}

impl AppendedFilter {
    fn matches(&self, leaf: &Leaf, caller: Option<&Caller>) -> bool {
        let eq = |want: Option<&str>, have: &str| want.is_none_or(|w| w == have);
        let actor = self.actor.as_ref();
        caller.is_none_or(|c| eq(c.tenant_scope(), &leaf.tenant) && c.may_read_kind(&leaf.kind))
            && eq(self.tenant.as_deref(), &leaf.tenant)
            && eq(self.kind.as_deref(), &leaf.kind)
            && (self.entity.is_none() || self.entity == leaf.entity)
            && eq(actor.and_then(|a| a.kind.as_deref()), &leaf.actor.kind)
            && eq(actor.and_then(|a| a.id.as_deref()), &leaf.actor.id)
    }
}

/// One appended record and a signed checkpoint that covers it.
pub(crate) struct RecordAppended {
    record: Record,
    head: Arc<Head>,
}

#[Object]
impl RecordAppended {
    /// Leaf index of the record.
    async fn index(&self) -> u64 {
        self.record.0.index
    }

    /// The record.
    async fn record(&self) -> &Record {
        &self.record
    }

    /// The signed checkpoint of the batch the record was committed in (or, for a subscriber
    /// that had fallen behind, a later one): the record is among its first `treeSize` entries.
    async fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tree_size: self.head.size,
            root_hash: self.head.root.to_base64(),
            note: Some(self.head.checkpoint.clone()),
        }
    }

    /// Inclusion proof of the record against `checkpoint`.
    async fn proof(&self, ctx: &Context<'_>) -> Result<InclusionProof, Failure> {
        let ledger = ctx
            .data::<Ledger>()
            .map_err(|e| Failure::internal(&e.message))?
            .clone();
        let (index, size) = (self.record.0.index, self.head.size);
        let proof = tokio::task::spawn_blocking(move || ledger.inclusion_proof(index, Some(size)))
            .await??;
        Ok(InclusionProof::from(proof))
    }
}

/// Where a tail is: the next index to read, the head to read up to, what is ready to send.
struct Tail {
    ledger: Ledger,
    rx: tokio::sync::broadcast::Receiver<provledger_ledger::Appended>,
    filter: AppendedFilter,
    /// Whose records may be sent (their tenant, the kinds of their token); `None`: anyone's.
    caller: Option<Caller>,
    /// Where the caller's token is checked again before each message.
    tokens: Option<Arc<TokenStore>>,
    next: u64,
    target: Arc<Head>,
    ready: VecDeque<RecordAppended>,
}

/// The records from index `from` (the current tree size when `None`) on that match `filter`
/// (and that `caller` may read, when given), in log order, waiting for appends. Ends when the
/// ledger shuts down or a read fails (the error is the last item).
fn tail(
    ledger: Ledger,
    filter: AppendedFilter,
    caller: Option<Caller>,
    tokens: Option<Arc<TokenStore>>,
    from: Option<u64>,
) -> Result<impl Stream<Item = Result<RecordAppended, Failure>>, Failure> {
    // Subscribe before reading the head: a batch committed in between is then both covered by
    // the head (so read from the log) and announced (and ignored), never lost.
    let rx = ledger.subscribe();
    let head = ledger.head();
    let next = from.unwrap_or(head.size);
    if next > head.size {
        return Err(Failure::bad_input(format!(
            "from {next} is beyond the current tree size {}",
            head.size
        )));
    }
    let state = Some(Tail {
        ledger,
        rx,
        filter,
        caller,
        tokens,
        next,
        target: head,
        ready: VecDeque::new(),
    });
    Ok(stream::unfold(state, |state| async move {
        let mut tail = state?;
        match tail.advance().await {
            Ok(Some(item)) => Some((Ok(item), Some(tail))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    }))
}

impl Tail {
    /// The next matching record, waiting for appends as needed; `None` once the ledger is gone.
    async fn advance(&mut self) -> Result<Option<RecordAppended>, Failure> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                // A token revoked or expired since the subscription began ends it.
                if let (Some(Caller::Token(token)), Some(store)) = (&self.caller, &self.tokens) {
                    if !store.still_valid(token) {
                        return Err(Failure::new(
                            GqlCode::Unauthenticated,
                            "the subscription's token was revoked or has expired",
                        ));
                    }
                }
                return Ok(Some(item));
            }
            if self.next < self.target.size {
                self.read_chunk().await?;
                continue;
            }
            match self.rx.recv().await {
                Ok(appended) => {
                    if appended.head.size > self.target.size {
                        self.target = appended.head;
                    }
                }
                // Fallen behind the notifications: the log has every record, catch up from it.
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, next = self.next, "subscriber lagged; catching up");
                    self.target = self.ledger.head();
                }
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// Scans up to [`CHUNK`] leaves from `next` towards the target head, keeping the matches,
    /// and stops early once [`MAX_READY`] records matched.
    async fn read_chunk(&mut self) -> Result<(), Failure> {
        let (from, to) = (
            self.next,
            self.target.size.min(self.next.saturating_add(CHUNK)),
        );
        let ledger = self.ledger.clone();
        let filter = self.filter.clone();
        let caller = self.caller.clone();
        let (records, read_to) = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for index in from..to {
                let leaf = Leaf::decode(&ledger.leaf(index)?)?;
                if filter.matches(&leaf, caller.as_ref()) {
                    out.push(ledger.record_at(index)?);
                    if out.len() == MAX_READY {
                        return Ok((out, index + 1));
                    }
                }
            }
            Ok::<_, provledger_ledger::LedgerError>((out, to))
        })
        .await??;
        self.next = read_to;
        self.ready
            .extend(records.into_iter().map(|r| RecordAppended {
                record: Record(Arc::new(r)),
                head: Arc::clone(&self.target),
            }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use provledger_ledger::{LedgerConfig, PreparedRecord, RecordInput, SUBSCRIBER_BACKLOG};
    use serde_json::json;

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    fn open() -> Result<(tempfile::TempDir, Ledger), Box<dyn std::error::Error + Send + Sync>> {
        let dir = tempfile::tempdir()?;
        let key = provledger_signer::SigningKey::generate("example.com/log")?;
        let ledger = Ledger::open(
            &LedgerConfig::new(dir.path()),
            key,
            &prometheus::Registry::new(),
        )?;
        Ok((dir, ledger))
    }

    fn record(
        kind: &str,
        actor: &str,
    ) -> Result<PreparedRecord, Box<dyn std::error::Error + Send + Sync>> {
        let input: RecordInput = serde_json::from_value(json!({
            "kind": kind, "actor": {"type": "agent", "id": actor}
        }))?;
        Ok(PreparedRecord::prepare(input, "record")?)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_ledger_announces_a_batch_after_its_head_is_published() -> TestResult {
        let (_dir, ledger) = open()?;
        let mut rx = ledger.subscribe();
        let l = ledger.clone();
        tokio::task::spawn_blocking(move || {
            let batch = vec![record("input", "a1")?, record("decision", "a1")?];
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(l.append_blocking(batch)?)
        })
        .await??;
        let appended = rx.recv().await?;
        assert_eq!((appended.first_index, appended.head.size), (0, 2));
        // Published before it was announced: reads already cover the batch.
        assert!(ledger.head().size >= appended.head.size);
        assert_eq!(ledger.record_at(1)?.leaf.kind, "decision");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lagging_subscriber_catches_up_from_the_log_without_gaps() -> TestResult {
        let (_dir, ledger) = open()?;
        let filter = AppendedFilter {
            kind: Some("decision".into()),
            ..AppendedFilter::default()
        };
        let stream =
            tail(ledger.clone(), filter, None, None, None).map_err(|e| format!("{e:?}"))?;
        // More batches than the notification backlog holds, before the stream is first polled.
        let batches = SUBSCRIBER_BACKLOG + 10;
        let l = ledger.clone();
        tokio::task::spawn_blocking(
            move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                for i in 0..batches {
                    let kind = if i % 2 == 0 { "decision" } else { "input" };
                    let input: RecordInput = serde_json::from_value(json!({
                        "kind": kind, "actor": {"type": "agent", "id": "a1"}
                    }))?;
                    l.append_blocking(vec![PreparedRecord::prepare(input, "record")?])?;
                }
                Ok(())
            },
        )
        .await??;
        let got: Vec<u64> = stream
            .take(batches.div_ceil(2))
            .map(|r| r.map(|a| a.record.0.index))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{e:?}"))?;
        let want: Vec<u64> = (0..batches as u64).step_by(2).collect();
        assert_eq!(got, want);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn from_resumes_at_an_index_and_refuses_the_future() -> TestResult {
        let (_dir, ledger) = open()?;
        let l = ledger.clone();
        tokio::task::spawn_blocking(move || {
            let batch = vec![
                record("decision", "a1")?,
                record("decision", "a2")?,
                record("decision", "a1")?,
            ];
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(l.append_blocking(batch)?)
        })
        .await??;
        let filter = AppendedFilter {
            actor: Some(AppendedActorFilter {
                kind: None,
                id: Some("a1".into()),
            }),
            ..AppendedFilter::default()
        };
        let got: Vec<(u64, u64)> = tail(ledger.clone(), filter, None, None, Some(1))
            .map_err(|e| format!("{e:?}"))?
            .take(1)
            .map(|r| r.map(|a| (a.record.0.index, a.head.size)))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{e:?}"))?;
        assert_eq!(got, vec![(2, 3)]);
        let Err(e) = tail(ledger, AppendedFilter::default(), None, None, Some(4)) else {
            panic!("from beyond the tree size must be refused");
        };
        assert!(
            format!("{e:?}").contains("from 4 is beyond the current tree size 3"),
            "{e:?}"
        );
        Ok(())
    }

    #[test]
    fn filters_match_every_field_given() {
        let leaf = |tenant: &str, entity: Option<&str>| -> Leaf {
            // Built from JSON so that leaf fields added later (with defaults) need no change.
            serde_json::from_value(json!({
                "v": 1, "index": 0, "time": 0, "tenant": tenant, "kind": "decision",
                "entity": entity, "actor": {"type": "agent", "id": "a1"}, "refs": [],
                "attributes": {}, "classification": "internal", "commitment": null,
            }))
            .unwrap_or_else(|e| panic!("test leaf: {e}"))
        };
        let f = |kind: Option<&str>, entity: Option<&str>, tenant: Option<&str>| AppendedFilter {
            kind: kind.map(Into::into),
            entity: entity.map(Into::into),
            actor: Some(AppendedActorFilter {
                kind: Some("agent".into()),
                id: None,
            }),
            tenant: tenant.map(Into::into),
        };
        let l = leaf("acme", Some("refund:1"));
        assert!(f(None, None, None).matches(&l, None));
        assert!(f(Some("decision"), Some("refund:1"), Some("acme")).matches(&l, None));
        assert!(!f(Some("input"), None, None).matches(&l, None));
        assert!(!f(None, Some("refund:2"), None).matches(&l, None));
        assert!(!f(None, Some("refund:1"), None).matches(&leaf("acme", None), None));
        assert!(!f(None, None, Some("other")).matches(&l, None));
        // An anonymous caller sees nothing, whatever the filter.
        assert!(!f(None, None, None).matches(&l, Some(&Caller::Anonymous)));
    }
}
