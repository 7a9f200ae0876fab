-- wrk script: GET requests of the application API, with its key.
--
-- The file named by API_PATHS holds one path per line; API_KEY is the Bearer key.
-- Thread k of n starts at line k and walks the file n lines at a time, round and round.
-- done() prints the same JSON line as deliveries.lua.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local headers = { ["Authorization"] = "Bearer " .. os.getenv("API_KEY") }
  local n = tonumber(os.getenv("WRK_THREADS") or "1")
  requests = {}
  sent = 0
  wrapped = 0
  local line_no = 0
  for line in io.lines(os.getenv("API_PATHS")) do
    if line_no % n == index then
      table.insert(requests, wrk.format("GET", line, headers))
    end
    line_no = line_no + 1
  end
  position = 0
end

function request()
  position = position + 1
  if position > #requests then
    position = 1
  end
  sent = sent + 1
  return requests[position]
end

function done(summary, latency, requests)
  local sent_total = 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
  end
  local e = summary.errors
  io.write(string.format(
    '{"bench": 1, "duration_us": %d, "requests": %d, "bytes": %d, "sent": %d, "wrapped": 0, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.duration, summary.requests, summary.bytes, sent_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
