-- wrk script: replay pre-signed webhook deliveries, each sent once.
--
-- The file named by DELIVERIES holds one delivery per line:
--   path \t webhook-id \t webhook-timestamp \t webhook-signature \t body
-- Thread k of n sends lines k, k+n, k+2n…, so no two threads send the same one.
-- If a thread runs out it starts over (and says so): a repeat is a duplicate, not a new one.
-- done() prints one JSON line the bench reads.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("DELIVERIES")
  requests = {}
  sent = 0
  wrapped = 0
  local n = tonumber(os.getenv("WRK_THREADS") or "1")
  local line_no = 0
  for line in io.lines(path) do
    if line_no % n == index then
      local p, id, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      local headers = {
        ["Content-Type"] = "application/json",
        ["webhook-id"] = id,
        ["webhook-timestamp"] = ts,
        ["webhook-signature"] = sig,
      }
      table.insert(requests, wrk.format("POST", p, headers, body))
    end
    line_no = line_no + 1
  end
  position = 0
end

function request()
  position = position + 1
  if position > #requests then
    position = 1
    wrapped = wrapped + 1
  end
  sent = sent + 1
  return requests[position]
end

function done(summary, latency, requests)
  local sent_total, wrapped_total = 0, 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    wrapped_total = wrapped_total + thread:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    '{"bench": 1, "duration_us": %d, "requests": %d, "bytes": %d, "sent": %d, "wrapped": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.duration, summary.requests, summary.bytes, sent_total, wrapped_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
