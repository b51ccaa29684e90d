-- wrk script of bench/webhook_intake.py: posts pre-signed webhook requests.
--   wrk -t1 -c32 -d5s -s bench/webhook_intake.lua <url> -- <requests file> <path> [once]
-- Each line of the file is "<timestamp>\t<signature>\t<body>"; requests are built in init(), so
-- the client spends no time on them while it runs. Without "once" the requests go round and
-- round for the run's duration. With "once" each is sent exactly once and the run stops when
-- every one has been answered (idle connections meanwhile send GET /baseline, a 405, which is
-- not counted). done() prints one JSON line of figures.

local requests = {}
local next_request = 0
local once = false
local filler
local verified = false
answered = 0
statuses = {}

function init(args)
  for line in io.lines(args[1]) do
    local timestamp, signature, body = line:match("^([^\t]+)\t([^\t]+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", args[2], {
      ["Content-Type"] = "application/json",
      ["X-FKS-Timestamp"] = timestamp,
      ["X-FKS-Signature"] = signature,
    }, body)
  end
  once = args[3] == "once"
  filler = wrk.format("GET", "/baseline")
  if not once then
    response = nil -- wrk skips parsing answers when there is no response()
  end
end

function request()
  -- wrk calls request() once before the run, to count pipelined requests, and never sends
  -- that one: give it the filler, so that every event is sent.
  if not verified then
    verified = true
    return filler
  end
  if once and next_request >= #requests then
    return filler
  end
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function response(status)
  if status ~= 405 then
    answered = answered + 1
    statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
    if answered >= #requests then
      wrk.thread:stop()
    end
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, _)
  local errors = summary.errors
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[#counts + 1] = string.format('"%s": %d', status, n)
    end
  end
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(counts, ", ")))
end
