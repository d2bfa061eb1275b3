-- A fixed-rate (open-loop) schedule for wrk, with each answer's status and latency written out.
--
--   wrk -t1 -c512 -d34s --timeout 60s -s bench/openloop.lua http://127.0.0.1:8000/graphql \
--       -- requests.tsv answers.tsv 7000:30
--
-- Arguments after `--`: the requests file (one a line: authorization TAB body, as bench/wrk.lua
-- reads), the file to write answers to, and the schedule: phases of `rate:seconds`, one after
-- the other (`0:30,50:8`: nothing for 30 s, then 50 requests a second for 8 s). Request n of
-- the schedule is due at a fixed time, whatever the server does. Run it with -t1 (each thread
-- would follow the whole schedule) and give wrk's -d the schedule plus a few seconds.
--
-- How wrk is made open-loop: wrk asks `delay()` before each request a connection sends, and
-- `request()` for the request when the delay is over. Each `delay()` claims the next slot of
-- the schedule and waits until it is due; with many connections, each idle between its answer
-- and its next slot, the arrivals follow the schedule as long as some connection is free when
-- a slot falls due. When none is (the server holds every connection), the slot goes out late,
-- on the first connection to come free, and its latency still counts from when it was due
-- (coordinated omission is not hidden: the lateness shows in the latency, and on its own as
-- `sent - due`).
--
-- wrk tells `delay()`, `request()` and `response()` nothing about which connection calls them:
-- - `request()` sends the earliest claimed slot not yet sent, if it is due (wrk's timers are in
--   whole ms, so a request may leave up to 1 ms early; its latency then counts from when it was
--   sent). When two timers fire in one pass of wrk's loop, the first to send gets the earlier
--   slot: a latency is never counted from later than the slot was due;
-- - each request carries `X-Request-Id: <its number>`, which keyplane echoes on every answer,
--   503 included, and `response()` finds the request's due and send times by it;
-- - a connection whose next slot is over 2 s away (keyplane closes connections idle for 5 s)
--   sends `GET /healthz` instead, uncounted, as it does for wrk's check of the script.
--
-- Answers file, one line per answer (times in µs from the schedule's start t0):
--   id  status  retry_after(0|1)  due  sent  done
-- and on stdout at the end:
--   OPENLOOP-RESULT {"t0_us": <t0 on CLOCK_MONOTONIC>, "sent": ..., "answered": ..., "errors": ...}

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } keyplane_timespec;
int clock_gettime(int clock, keyplane_timespec *now);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("keyplane_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + tonumber(timespec.tv_nsec) / 1000
end

local START_US = 200000 -- the schedule starts this long after the first connection is ready
local PARKED_MS = 3600000 -- a connection after the schedule's end waits for wrk to stop
local KEEPALIVE_MS = 2000 -- keyplane closes a connection idle for 5 s
local EARLY_US = 2000 -- wrk's timers are in whole ms: a slot may go out this much early

local heads, tails = {}, {} -- each request split after its request line, for X-Request-Id
local phases = {}
local out
t0 = nil -- global, like the counts below: done() reads it with thread:get
local slot, phase = 0, 1
local claimed, claimed_first, claimed_last = {}, 1, 0 -- due times of slots claimed, not sent
local due_of, sent_of = {}, {}
local HEALTH
sent, answered = 0, 0 -- globals: done() reads them with thread:get

function init(args)
  local requests, answers, schedule = args[1], args[2], args[3]
  if not (requests and answers and schedule) then
    error("openloop.lua: -- REQUESTS.tsv ANSWERS.tsv RATE:SECONDS[,RATE:SECONDS...]")
  end
  for line in io.lines(requests) do
    local tab = line:find("\t", 1, true)
    if tab then
      local authorization = line:sub(1, tab - 1)
      local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
      if authorization ~= "" then
        headers["Authorization"] = authorization
      end
      local text = wrk.format("POST", "/graphql", headers, line:sub(tab + 1))
      local cut = text:find("\r\n", 1, true)
      heads[#heads + 1] = text:sub(1, cut + 1)
      tails[#tails + 1] = text:sub(cut + 2)
    end
  end
  if #heads == 0 then
    error("openloop.lua: no requests in " .. requests)
  end
  local start, first = 0, 0
  for rate, seconds in schedule:gmatch("([%d.]+):([%d.]+)") do
    rate, seconds = tonumber(rate), tonumber(seconds)
    local count = math.floor(rate * seconds + 0.5)
    phases[#phases + 1] = { rate = rate, start = start, first = first, count = count }
    start = start + seconds * 1000000
    first = first + count
  end
  out = assert(io.open(answers, "w"))
  HEALTH = wrk.format("GET", "/healthz", { ["X-Request-Id"] = "health" })
end

-- The due time (µs from t0) of the next slot of the schedule, or nil past its end.
local function peek()
  while phase <= #phases do
    local p = phases[phase]
    if slot < p.first + p.count then
      return p.start + (slot - p.first) * 1000000 / p.rate
    end
    phase = phase + 1
  end
  return nil
end

function delay()
  local now = now_us()
  if t0 == nil then
    t0 = now + START_US
  end
  local due = peek()
  if due == nil then
    return PARKED_MS
  end
  local wait = (t0 + due - now) / 1000
  if wait > KEEPALIVE_MS then
    -- Too far ahead: keyplane would close the idle connection. This connection sends a
    -- health probe (uncounted) instead, and the slot waits for one that comes by nearer its time.
    return KEEPALIVE_MS
  end
  slot = slot + 1
  claimed_last = claimed_last + 1
  claimed[claimed_last] = due
  if wait < 0 then
    return 0
  end
  return math.floor(wait)
end

function request()
  -- The earliest slot claimed and not yet sent, if it is due (to wrk's 1 ms timers); else
  -- this is a health probe (wrk's check of the script, or a connection kept alive).
  local due = claimed[claimed_first]
  local now = now_us()
  if due == nil or t0 + due > now + EARLY_US then
    return HEALTH
  end
  claimed[claimed_first] = nil
  claimed_first = claimed_first + 1
  sent = sent + 1
  due_of[sent] = due
  sent_of[sent] = now - t0
  local i = (sent - 1) % #heads + 1
  return heads[i] .. "X-Request-Id: " .. sent .. "\r\n" .. tails[i]
end

function response(status, headers, body)
  local done = now_us() - t0
  local id = tonumber(headers["x-request-id"] or headers["X-Request-Id"])
  local due = id and due_of[id]
  if due == nil then -- a health probe
    return
  end
  answered = answered + 1
  local retry_after = (headers["retry-after"] or headers["Retry-After"]) and 1 or 0
  out:write(
    id, "\t", status, "\t", retry_after, "\t", string.format("%.0f", due), "\t",
    string.format("%.0f", sent_of[id]), "\t", string.format("%.0f", done), "\n"
  )
  due_of[id], sent_of[id] = nil, nil
  if answered % 4096 == 0 then
    out:flush()
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  if #threads ~= 1 then
    error("openloop.lua: run it with -t1 (each thread would follow the whole schedule)")
  end
  local thread = threads[1]
  local e = summary.errors
  io.write(string.format(
    'OPENLOOP-RESULT {"t0_us": %.0f, "sent": %d, "answered": %d, "errors": {"connect": %d, '
      .. '"read": %d, "write": %d, "status": %d}}\n',
    thread:get("t0") or -1, thread:get("sent") or 0, thread:get("answered") or 0,
    e.connect, e.read, e.write, e.status
  ))
end
