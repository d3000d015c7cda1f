//! The GraphQL console: `GET /graphql` serves GraphiQL, and `/graphql/assets/<file>` the files
//! it needs, all vendored in `graphql/assets/` (see its README) and compiled into the binary,
//! so the console works with no internet access. A Content-Security-Policy keeps the page
//! from loading anything from elsewhere.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;

/// Cache policy of the vendored files: their names carry their package versions, so a name
/// never changes content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache policy of the page and of our own script, which change with provledger.
const REVALIDATE: &str = "no-cache";

/// The page may load scripts, styles and fonts only from this server (fonts and icons come
/// inline as `data:` URLs), and talk only to it (HTTP and WebSocket).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A file served under `/graphql/assets/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    cache: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file the console loads. Names of vendored files carry their npm package versions.
const ASSETS: &[Asset] = &[
    Asset {
        name: "graphiql-3.9.0.min.js",
        content_type: JS,
        cache: IMMUTABLE,
        body: include_bytes!("../assets/graphiql-3.9.0.min.js"),
    },
    Asset {
        name: "graphiql-3.9.0.min.css",
        content_type: CSS,
        cache: IMMUTABLE,
        body: include_bytes!("../assets/graphiql-3.9.0.min.css"),
    },
    Asset {
        name: "react-18.3.1.production.min.js",
        content_type: JS,
        cache: IMMUTABLE,
        body: include_bytes!("../assets/react-18.3.1.production.min.js"),
    },
    Asset {
        name: "react-dom-18.3.1.production.min.js",
        content_type: JS,
        cache: IMMUTABLE,
        body: include_bytes!("../assets/react-dom-18.3.1.production.min.js"),
    },
    Asset {
        name: "graphql-ws-5.16.0.min.js",
        content_type: JS,
        cache: IMMUTABLE,
        body: include_bytes!("../assets/graphql-ws-5.16.0.min.js"),
    },
    Asset {
        name: "console.js",
        content_type: JS,
        cache: REVALIDATE,
        body: include_bytes!("../assets/console.js"),
    },
];

/// The console page: GraphiQL's stylesheet and scripts, in dependency order, then ours.
const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>provledger GraphQL console</title>
<link rel="stylesheet" href="/graphql/assets/graphiql-3.9.0.min.css">
<style>html, body, #graphiql { height: 100%; margin: 0; }</style>
</head>
<body>
<div id="graphiql"><noscript>The provledger GraphQL console needs JavaScript. POST GraphQL requests to /graphql.</noscript></div>
<script src="/graphql/assets/react-18.3.1.production.min.js"></script>
<script src="/graphql/assets/react-dom-18.3.1.production.min.js"></script>
<script src="/graphql/assets/graphql-ws-5.16.0.min.js"></script>
<script src="/graphql/assets/graphiql-3.9.0.min.js"></script>
<script src="/graphql/assets/console.js"></script>
</body>
</html>
"#;

/// Registers `GET /graphql` (the page) and `GET /graphql/assets/{name}`.
pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/graphql", web::get().to(page))
        .route("/graphql/assets/{name}", web::get().to(asset));
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, REVALIDATE))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(PAGE)
}

async fn asset(name: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = name.into_inner();
    let asset = ASSETS.iter().find(|a| a.name == name).ok_or_else(|| {
        ApiError::not_found(format!("the GraphQL console has no asset named {name:?}"))
    })?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, asset.cache))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(asset.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_every_asset_and_only_local_ones() {
        let referenced: Vec<&str> = PAGE
            .split(['"', '\''])
            .filter(|s| s.starts_with("/graphql/assets/"))
            .collect();
        let served: Vec<String> = ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") || a.name.ends_with(".css"))
            .map(|a| format!("/graphql/assets/{}", a.name))
            .collect();
        assert_eq!(referenced.len(), served.len(), "{referenced:?}");
        for s in &served {
            assert!(
                referenced.contains(&s.as_str()),
                "the page does not load {s}"
            );
        }
        assert!(!PAGE.contains("//"), "the page names no other origin");
        let console = std::str::from_utf8(include_bytes!("../assets/console.js")).unwrap_or("");
        assert!(!console.contains("http://") && !console.contains("https://"));
    }

    #[test]
    fn the_vendored_files_are_the_published_ones() {
        // Sizes of the files in the npm tarballs (graphql/assets/README.md has their SHA-256).
        for (name, len) in [
            ("graphiql-3.9.0.min.js", 978_022),
            ("graphiql-3.9.0.min.css", 410_559),
            ("react-18.3.1.production.min.js", 10_751),
            ("react-dom-18.3.1.production.min.js", 131_835),
            ("graphql-ws-5.16.0.min.js", 11_387),
        ] {
            let asset = ASSETS.iter().find(|a| a.name == name);
            assert_eq!(asset.map(|a| a.body.len()), Some(len), "{name}");
        }
    }
}
