//! Who may call what: bearer-token authentication and the one table of authorization rules,
//! for HTTP routes ([`ROUTES`]) and for GraphQL root fields ([`FIELDS`]).
//!
//! Every request passes [`authorize`] before routing. It finds the request's rule in
//! [`ROUTES`]; a request that no rule covers is refused (404, or 405 when only the method is
//! wrong), so an endpoint added without a rule cannot be reached at all. Public routes let
//! anyone in; the others need `Authorization: Bearer <token>` (401 without a valid one) whose
//! role the rule allows (403 otherwise). The caller is then available to handlers as a
//! [`Caller`] extractor, and to GraphQL resolvers as context data.
//!
//! Tenancy is not decided here but by each handler through [`Caller::tenant_scope`]: records
//! of other tenants answer exactly like records that do not exist.

use std::future::{ready, Ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ResourceDef, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage as _, HttpRequest, ResponseError};
use async_graphql::extensions::ResolveInfo;
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve};
use async_graphql::{ServerResult, Value};
use provledger_ledger::{Role, TokenInfo};
use std::sync::Arc;

use crate::error::{ApiError, Failure, GqlCode};
use crate::AppState;

/// Who may use a route or a GraphQL field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token: the public verification surface.
    Public,
    /// Entry bundles: public when the operator declares the log public, else admins only
    /// (they hold every tenant's leaf metadata).
    Entries,
    /// A valid token with one of these roles.
    Roles(&'static [Role]),
}

const ADMIN: &[Role] = &[Role::Admin];
const WRITERS: &[Role] = &[Role::Admin, Role::Writer];
const READERS: &[Role] = &[Role::Admin, Role::Auditor];
const PROVERS: &[Role] = &[Role::Admin, Role::Auditor, Role::Writer];
const EXPORTERS: &[Role] = &[Role::Admin, Role::Auditor, Role::Regulator];
const ANY_ROLE: &[Role] = &[Role::Admin, Role::Writer, Role::Auditor, Role::Regulator];

/// One HTTP route and who may call it. Paths use actix's pattern syntax.
#[derive(Clone, Copy, Debug)]
pub struct RouteRule {
    /// HTTP method.
    pub method: &'static str,
    /// Path pattern, e.g. `/v1/records/{id}`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

const fn rule(method: &'static str, path: &'static str, access: Access) -> RouteRule {
    RouteRule {
        method,
        path,
        access,
    }
}

/// Every HTTP route the server answers, with its rule. The first matching rule applies, so
/// more specific patterns come first.
pub const ROUTES: &[RouteRule] = &[
    rule("GET", "/healthz", Access::Public),
    rule("GET", "/checkpoint", Access::Public),
    rule("GET", "/tile/entries/{rest:.*}", Access::Entries),
    rule("GET", "/tile/{rest:.*}", Access::Public),
    rule("GET", "/v1/key", Access::Public),
    rule("GET", "/v1/keys", Access::Public),
    rule("POST", "/v1/keys/rotate", Access::Roles(ADMIN)),
    rule("POST", "/v1/keys/{key}/retire", Access::Roles(ADMIN)),
    rule("GET", "/metrics", Access::Roles(ADMIN)),
    rule("POST", "/v1/records", Access::Roles(WRITERS)),
    rule("GET", "/v1/records/{id}", Access::Roles(READERS)),
    rule("GET", "/v1/proofs/inclusion", Access::Roles(PROVERS)),
    rule("GET", "/v1/proofs/consistency", Access::Roles(PROVERS)),
    rule("POST", "/graphql", Access::Roles(ANY_ROLE)),
    // The console is static HTML and scripts; its queries carry the user's token.
    rule("GET", "/graphql", Access::Public),
    rule("GET", "/graphql/assets/{file}", Access::Public),
    // Browsers cannot set headers on a WebSocket: the token travels in `connection_init`
    // and the subscription checks it (see `subscription.rs`).
    rule("GET", "/graphql/ws", Access::Public),
    rule("POST", "/v1/exports", Access::Roles(EXPORTERS)),
    rule("POST", "/api/v1/lineage", Access::Roles(WRITERS)),
    rule("POST", "/v1/records/{id}/erase", Access::Roles(ADMIN)),
    rule("POST", "/v1/erasures", Access::Roles(ADMIN)),
    rule("POST", "/v1/tokens", Access::Roles(ADMIN)),
    rule("GET", "/v1/tokens", Access::Roles(ADMIN)),
    rule("DELETE", "/v1/tokens/{id}", Access::Roles(ADMIN)),
];

/// Who may use each GraphQL root field (`Type.field`). A root field missing here is refused
/// with `FORBIDDEN` for everyone; a test checks that the table covers the schema exactly.
pub const FIELDS: &[(&str, &[Role])] = &[
    ("Query.record", READERS),
    ("Query.records", READERS),
    // The approval queue and intervention figures, tenant-scoped like listings.
    ("Query.pendingApprovals", READERS),
    ("Query.stats", READERS),
    ("Query.lineage", READERS),
    ("Query.checkpoint", PROVERS),
    ("Query.consistencyProof", PROVERS),
    ("Query.inclusionProof", PROVERS),
    ("Subscription.recordAppended", READERS),
    ("Mutation.append", WRITERS),
    ("Mutation.appendBatch", WRITERS),
];

/// The authenticated (or anonymous) caller of a request.
#[derive(Clone, Debug, Default)]
pub enum Caller {
    /// No token: only public routes get this far.
    #[default]
    Anonymous,
    /// A valid token.
    Token(TokenInfo),
}

impl Caller {
    /// The role, if any.
    pub fn role(&self) -> Option<Role> {
        match self {
            Caller::Anonymous => None,
            Caller::Token(t) => Some(t.role),
        }
    }

    /// The tenant whose records this caller may see: `None` for admins (every tenant),
    /// the token's tenant otherwise. Anonymous callers see no tenant at all.
    pub fn tenant_scope(&self) -> Option<&str> {
        match self {
            Caller::Token(t) if t.role == Role::Admin => None,
            Caller::Token(t) => Some(&t.tenant),
            // Tenants are never empty, so this matches nothing.
            Caller::Anonymous => Some(""),
        }
    }

    /// Whether the caller may read a record of `kind` directly (kind-limited tokens).
    pub fn may_read_kind(&self, kind: &str) -> bool {
        match self {
            Caller::Anonymous => false,
            Caller::Token(t) => t.role == Role::Admin || t.allows_kind(kind),
        }
    }

    /// Checks and completes a record this caller appends: non-admins write to their own
    /// tenant only (a body naming another tenant is refused, none means theirs), and within
    /// their kind limit. Admins write where the record says (the default tenant if unsaid).
    pub fn claim_record(
        &self,
        record: &mut provledger_ledger::RecordInput,
        field: &str,
    ) -> Result<(), Denied> {
        let Caller::Token(token) = self else {
            return Err(Denied("appending needs a token".into()));
        };
        if !token.allows_kind(&record.kind) {
            return Err(Denied(format!(
                "{field}.kind: this token may only append records of kind {}",
                token.kinds.as_deref().unwrap_or_default().join(", ")
            )));
        }
        if token.role == Role::Admin {
            return Ok(());
        }
        match &record.tenant {
            None => record.tenant = Some(token.tenant.clone()),
            Some(t) if *t == token.tenant => {}
            Some(t) => {
                return Err(Denied(format!(
                    "{field}.tenant: a token of tenant {:?} cannot append to tenant {t:?}",
                    token.tenant
                )))
            }
        }
        Ok(())
    }
}

/// A refusal with the reason (a 403 / `FORBIDDEN`).
#[derive(Debug)]
pub struct Denied(pub String);

impl From<Denied> for ApiError {
    fn from(d: Denied) -> ApiError {
        ApiError::forbidden(d.0)
    }
}

impl From<Denied> for Failure {
    fn from(d: Denied) -> Failure {
        Failure::new(GqlCode::Forbidden, d.0)
    }
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Caller, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(req
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_default()))
    }
}

/// Compiled [`ROUTES`]: built once per worker.
pub(crate) struct RouteTable(Vec<CompiledRule>);

/// A rule with its method parsed and its pattern compiled. `literal` is the text before the
/// pattern's first parameter: a path that does not start with it cannot match, and checking
/// that first spares the regex match of a pattern with parameters for nearly every request.
struct CompiledRule {
    method: Method,
    literal: &'static str,
    def: ResourceDef,
    rule: &'static RouteRule,
}

impl RouteTable {
    pub(crate) fn new() -> RouteTable {
        RouteTable(
            ROUTES
                .iter()
                .map(|rule| CompiledRule {
                    method: Method::from_bytes(rule.method.as_bytes()).unwrap_or(Method::GET),
                    literal: rule.path.split('{').next().unwrap_or_default(),
                    def: ResourceDef::new(rule.path),
                    rule,
                })
                .collect(),
        )
    }

    /// The rule for a request: `Ok(rule)`, or `Err(Some(rule))` with a rule for the path under
    /// another method, `Err(None)` when no rule's pattern matches the path.
    fn find(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<&'static RouteRule, Option<&'static RouteRule>> {
        let mut other_method = None;
        for c in &self.0 {
            if path.starts_with(c.literal) && c.def.is_match(path) {
                if c.method == *method {
                    return Ok(c.rule);
                }
                other_method.get_or_insert(c.rule);
            }
        }
        Err(other_method)
    }
}

/// The pattern of the rule a request matched (`/v1/records/{id}`), left in the request's
/// extensions by [`authorize`] so that the metrics middleware labels requests by it without
/// matching the path again.
#[derive(Clone, Copy)]
pub(crate) struct RoutePattern(pub(crate) &'static str);

/// The authorization middleware (see the module docs). Registered by [`crate::configure`]
/// around every route.
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match check(&req) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
    }
}

fn check(req: &ServiceRequest) -> Result<Caller, ApiError> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::internal(&"the app has no AppState"));
    };
    let table = req
        .app_data::<web::Data<RouteTable>>()
        .ok_or_else(|| ApiError::internal(&"the app has no route table"))?;
    let found = table.find(req.method(), req.path());
    if let Ok(rule) | Err(Some(rule)) = found {
        req.extensions_mut().insert(RoutePattern(rule.path));
    }
    let access = match found {
        Ok(rule) => rule.access,
        Err(Some(_)) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{} is not allowed on {}", req.method(), req.path()),
            ))
        }
        Err(None) => {
            return Err(ApiError::not_found(format!(
                "no route for {} {}",
                req.method(),
                req.path()
            )))
        }
    };
    let roles = match access {
        Access::Public => return Ok(Caller::Anonymous),
        Access::Entries if state.settings.public_log => return Ok(Caller::Anonymous),
        Access::Entries => ADMIN,
        Access::Roles(roles) => roles,
    };
    let token = bearer(req.headers())?;
    let info = state
        .tokens
        .authenticate(token)
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if !roles.contains(&info.role) {
        return Err(ApiError::forbidden(format!(
            "a {} token may not {} {}",
            info.role,
            req.method(),
            req.path()
        )));
    }
    Ok(Caller::Token(info))
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(headers: &header::HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "this endpoint needs an Authorization: Bearer <token> header",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header must be \"Bearer <token>\"",
        )),
    }
}

/// Authenticates a token given some other way than a header (the WebSocket `connection_init`
/// payload), for the roles of a GraphQL operation.
pub fn caller_from_token(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token)
        .trim();
    state
        .tokens
        .authenticate(token)
        .map(Caller::Token)
        .map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// The roles allowed on a GraphQL root field, if the table has it.
pub fn field_roles(type_name: &str, field: &str) -> Option<&'static [Role]> {
    FIELDS
        .iter()
        .find(|(name, _)| {
            name.split_once('.')
                .is_some_and(|(t, f)| t == type_name && f == field)
        })
        .map(|(_, roles)| *roles)
}

/// Checks a GraphQL root field against [`FIELDS`] for the caller in the context.
pub(crate) fn check_field(
    caller: Option<&Caller>,
    type_name: &str,
    field: &str,
) -> Result<(), Failure> {
    let Some(roles) = field_roles(type_name, field) else {
        return Err(Failure::new(
            GqlCode::Forbidden,
            format!("{type_name}.{field} has no access rule; nobody may use it"),
        ));
    };
    match caller.and_then(Caller::role) {
        None => Err(Failure::new(
            GqlCode::Unauthenticated,
            "this operation needs a bearer token",
        )),
        Some(role) if roles.contains(&role) => Ok(()),
        Some(role) => Err(Failure::new(
            GqlCode::Forbidden,
            format!("a {role} token may not use {type_name}.{field}"),
        )),
    }
}

/// async-graphql extension enforcing [`FIELDS`] on every root field of a query or mutation.
pub(crate) struct FieldRules;

impl ExtensionFactory for FieldRules {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(FieldRulesExtension)
    }
}

struct FieldRulesExtension;

#[async_graphql::async_trait::async_trait]
impl Extension for FieldRulesExtension {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let is_root = info.path_node.parent.is_none();
        if is_root && !info.name.starts_with("__") {
            if let Err(f) = check_field(ctx.data_opt::<Caller>(), info.parent_type, info.name) {
                return Err(async_graphql::Error::from(f).into_server_error(Default::default()));
            }
        }
        next.run(ctx, info).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root fields of `type <name> { … }` in an SDL document (doc strings and multi-line
    /// argument lists skipped).
    fn root_fields(sdl: &str, name: &str) -> Vec<String> {
        let mut fields = Vec::new();
        let mut lines = sdl
            .lines()
            .skip_while(|l| !l.starts_with(&format!("type {name} ")));
        if lines.next().is_none() {
            return fields;
        }
        let (mut in_doc, mut depth) = (false, 0i32);
        for line in lines {
            let t = line.trim();
            if t == "}" && depth == 0 {
                break;
            }
            if t.starts_with("\"\"\"") {
                let single = t.len() > 3 && t.ends_with("\"\"\"");
                if !single {
                    in_doc = !in_doc;
                }
                continue;
            }
            if in_doc {
                continue;
            }
            if depth == 0 {
                let end = t.find(['(', ':']).unwrap_or(t.len());
                fields.push(format!("{name}.{}", &t[..end]));
            }
            depth += t.matches('(').count() as i32 - t.matches(')').count() as i32;
        }
        fields
    }

    #[test]
    fn every_root_field_of_the_schema_has_exactly_one_rule() {
        // docs/schema.graphql is kept identical to the served schema by a schema test.
        let sdl = include_str!("../../docs/schema.graphql");
        let mut in_schema: Vec<String> = ["Query", "Mutation", "Subscription"]
            .iter()
            .flat_map(|t| root_fields(sdl, t))
            .collect();
        let mut in_table: Vec<String> = FIELDS.iter().map(|(f, _)| (*f).to_owned()).collect();
        in_schema.sort();
        in_table.sort();
        assert!(in_schema.len() >= 8, "parsed {in_schema:?}");
        assert_eq!(
            in_schema, in_table,
            "FIELDS must list every root field once"
        );
    }

    #[test]
    fn routes_resolve_to_their_rules_and_unknown_ones_to_nothing() {
        let table = RouteTable::new();
        let access = |method: &Method, path: &str| {
            table
                .find(method, path)
                .map(|r| r.access)
                .map_err(|r| r.is_some())
        };
        assert_eq!(access(&Method::GET, "/healthz"), Ok(Access::Public));
        assert_eq!(
            access(&Method::GET, "/tile/entries/x001/234.p/5"),
            Ok(Access::Entries)
        );
        assert_eq!(
            access(&Method::GET, "/tile/0/x001/234.p/5"),
            Ok(Access::Public)
        );
        assert_eq!(
            access(&Method::GET, "/v1/records/ab"),
            Ok(Access::Roles(READERS))
        );
        assert_eq!(access(&Method::PUT, "/v1/records"), Err(true));
        assert_eq!(access(&Method::GET, "/v2/anything"), Err(false));
        // The pattern, for metrics labels, also when the method is wrong.
        let pattern = |method: &Method, path: &str| {
            table
                .find(method, path)
                .map(|r| r.path)
                .map_err(|r| r.map(|r| r.path))
        };
        assert_eq!(
            pattern(&Method::GET, "/v1/records/ab"),
            Ok("/v1/records/{id}")
        );
        assert_eq!(
            pattern(&Method::PUT, "/v1/records"),
            Err(Some("/v1/records"))
        );
        // The literal-prefix shortcut never changes an answer: compare with the patterns alone,
        // on an instance of every rule and on paths at the edges of the patterns.
        let by_patterns = |method: &Method, path: &str| {
            let mut other_method = None;
            for c in &table.0 {
                if c.def.is_match(path) {
                    if c.method == *method {
                        return Ok(c.rule.path);
                    }
                    other_method.get_or_insert(c.rule.path);
                }
            }
            Err(other_method)
        };
        let mut paths: Vec<String> = ROUTES
            .iter()
            .map(|r| {
                r.path
                    .replace("{rest:.*}", "a/b.p/3")
                    .replace(['{', '}'], "")
            })
            .collect();
        paths.extend(
            [
                "",
                "/",
                "/tile",
                "/tile/",
                "/tile/entries",
                "/tile/entries/",
                "/v1/keys//retire",
                "/v1/keys/k/retire/",
                "/v1/records/",
                "/v1/records//erase",
                "/graphql/assets/",
                "/graphql/",
                "/v1/tokens/",
                "/v1/recordsx",
                "/TILE/0/000",
            ]
            .map(str::to_owned),
        );
        for path in &paths {
            for method in [Method::GET, Method::POST, Method::DELETE, Method::PUT] {
                assert_eq!(
                    pattern(&method, path),
                    by_patterns(&method, path),
                    "{method} {path}"
                );
            }
        }
        for rule in ROUTES {
            assert!(
                Method::from_bytes(rule.method.as_bytes()).is_ok(),
                "{}",
                rule.method
            );
        }
    }
}
