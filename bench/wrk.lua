-- Cycles through the requests of a file given after `--` (one a line: authorization TAB body,
-- the format bench/loadgen.py reads) and prints one JSON line of results when done.
--   wrk -t1 -c16 -d5s -s bench/wrk.lua http://127.0.0.1:8000/graphql -- requests.tsv

local prepared = {}
local counter = 0

function init(args)
  local path = args[1]
  for line in io.lines(path) do
    local tab = line:find("\t", 1, true)
    if tab then
      local authorization = line:sub(1, tab - 1)
      local body = line:sub(tab + 1)
      local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
      if authorization ~= "" then
        headers["Authorization"] = authorization
      end
      prepared[#prepared + 1] = wrk.format("POST", "/graphql", headers, body)
    end
  end
  if #prepared == 0 then
    error("wrk.lua: no requests in " .. tostring(path))
  end
end

function request()
  counter = counter % #prepared + 1
  return prepared[counter]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"non_2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect, errors.read, errors.write, errors.timeout
  ))
end
