// provledger's GraphiQL console: queries and mutations go to POST /graphql, subscriptions to
// the graphql-transport-ws endpoint /graphql/ws. Everything loads from this server.
(function () {
  "use strict";
  var http = new URL("/graphql", window.location.href);
  var ws = new URL("/graphql/ws", window.location.href);
  ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
  // Browsers cannot set headers on a WebSocket: the Authorization header typed in GraphiQL's
  // Headers tab (kept in localStorage) goes in the connection_init payload instead.
  function connectionParams() {
    try {
      var headers = JSON.parse(window.localStorage.getItem("graphiql:headers") || "{}");
      return headers && headers.Authorization ? { Authorization: headers.Authorization } : {};
    } catch (e) {
      return {};
    }
  }
  var fetcher = GraphiQL.createFetcher({
    url: http.href,
    wsClient: graphqlWs.createClient({
      url: ws.href,
      lazy: true,
      connectionParams: connectionParams,
    }),
  });
  var defaultQuery = [
    "# provledger GraphQL console. Ctrl-Enter runs the query; Docs lists the schema.",
    "{",
    "  checkpoint { treeSize rootHash }",
    "  records(first: 5) {",
    "    edges { node { id index kind entity actor { type id } time } }",
    "    pageInfo { hasNextPage endCursor }",
    "  }",
    "}",
    "",
    "# Tail the log live (run it on its own):",
    "# subscription { recordAppended(filter: {kind: \"decision\"}) { index record { id kind entity } checkpoint { treeSize } } }",
    "",
  ].join("\n");
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultQuery: defaultQuery })
  );
})();
