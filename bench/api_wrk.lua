-- wrk script of bench/api_bench.py: replays prepared requests, split between wrk's threads.
--   wrk ... -s bench/api_wrk.lua URL -- REQUESTS_FILE THREADS once|cycle [accepted]
-- REQUESTS_FILE is a Lua chunk returning {{method, path, header, value, body|nil}, ...}.
-- "once": each request is sent at most once (a drop-off, a code); a thread that runs out
-- stops and the result says so (the figure is then not a full run). "accepted": a 200 whose
-- body does not say "accepted":true counts as refused (a code check that failed).
-- done() prints one RESULT line that the bench parses.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local all = dofile(args[1])
  local nthreads = tonumber(args[2])
  once = args[3] == "once"
  reqs = {}
  for i = 1, #all do
    if (i - 1) % nthreads == id then
      local r = all[i]
      local headers = {[r[3]] = r[4]}
      if r[5] then headers["Content-Type"] = "application/json" end
      reqs[#reqs + 1] = wrk.format(r[1], r[2], headers, r[5])
    end
  end
  pos = 0
  refused = 0
  exhausted = 0
  if args[4] == "accepted" then
    response = function(status, headers, body)
      if status == 200 and not string.find(body, '"accepted":true', 1, true) then
        refused = refused + 1
      end
    end
  end
end

function request()
  pos = pos + 1
  if pos > #reqs then
    if once then
      exhausted = 1
      wrk.thread:stop()
    end
    pos = 1
  end
  return reqs[pos]
end

function done(summary, latency, requests)
  local refused_all, exhausted_all = 0, 0
  for _, thread in ipairs(threads) do
    refused_all = refused_all + thread:get("refused")
    exhausted_all = exhausted_all + thread:get("exhausted")
  end
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), refused_all, exhausted_all))
end
