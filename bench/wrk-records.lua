-- wrk script: POST /v1/records with the same ~300-byte records as examples/loadgen.rs.
--   RECORDS=1 wrk -t2 -c64 -d20s --latency -s bench/wrk-records.lua http://127.0.0.1:18284
-- Environment: PROVLEDGER_TOKEN (a writer token), RECORDS (records per request, default 1).
-- Every non-2xx answer is counted and reported, so a failing server cannot look fast.
local token = os.getenv("PROVLEDGER_TOKEN") or ""
local per = tonumber(os.getenv("RECORDS") or "1")
-- REFS (default 0): each record cites that many of the entities scale:0 … scale:999 by name,
-- which must exist first (bench/ab.sh appends them when REFS is set).
local refs = tonumber(os.getenv("REFS") or "0")
local pad = string.rep("p", 160)
local seq = 0
local thread_id = 0

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
end

local function cited(n)
  if refs == 0 then return "" end
  local r = {}
  for j = 0, refs - 1 do
    r[j + 1] = string.format('{"role":"input","ref":"scale:%d"}', (n * 7 + j * 131) % 1000)
  end
  return '"refs":[' .. table.concat(r, ",") .. '],'
end

local function record(n)
  return string.format(
    '{"kind":"output","entity":"scale:%d","actor":{"type":"agent","id":"agent-%d"},%s' ..
    '"attributes":{"model":"gpt-x","policy_version":"v3"},"payload":{"i":%d,"pad":"%s"}}',
    n % 1000, id, cited(n), n, pad)
end

function request()
  local parts = {}
  for i = 1, per do
    seq = seq + 1
    parts[i] = record(seq)
  end
  local body
  if per == 1 then body = parts[1] else body = "[" .. table.concat(parts, ",") .. "]" end
  return wrk.format("POST", "/v1/records", headers, body)
end

function done(summary, latency, requests)
  -- wrk counts answers outside 2xx/3xx itself (the server never redirects), so no response()
  -- callback: with one, wrk would copy every receipts body (~600 KB for 500 records) into Lua.
  local failed_total = summary.errors.status
  local secs = summary.duration / 1e6
  io.write(string.format(
    "records/request=%d -> %.0f records/s acknowledged, %d requests failed; " ..
    "latency ms p50 %.2f p90 %.2f p99 %.2f max %.2f\n",
    per, (summary.requests - failed_total) * per / secs, failed_total,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
