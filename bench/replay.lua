-- Replays pre-generated, pre-signed Twilio webhook requests (see bench/webhook.py).
--
-- Arguments after "--": <request file> <url path> <unique|cycle> <wrk thread count>
-- Each line of the file is "<X-Twilio-Signature>\t<form body>". Thread i takes lines
-- i, i+T, i+2T, ... so no two threads ever send the same CallSid. Every request is built
-- in init() (before wrk starts its clock); request() only hands out the next string.
--
-- "unique" files must not run out: a repeated CallSid is a Twilio retry, which the service
-- answers without storing anything, and that would break the row/queue accounting. If it
-- happens anyway the thread wraps around and counts it in `wrapped`, so it is reported.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("id", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

function init(args)
   local file, path, mode, nthreads = args[1], args[2], args[3], tonumber(args[4])
   unique = mode == "unique"
   requests = {}
   local index = 0
   for line in io.lines(file) do
      if index % nthreads == id then
         local tab = string.find(line, "\t", 1, true)
         local headers = {
            ["Host"] = wrk.host .. ":" .. wrk.port,
            ["Content-Type"] = "application/x-www-form-urlencoded",
            ["X-Twilio-Signature"] = string.sub(line, 1, tab - 1),
         }
         requests[#requests + 1] = wrk.format("POST", path, headers, string.sub(line, tab + 1))
      end
      index = index + 1
   end
   count = #requests
   -- One call of request() is wrk checking the script before the run; it is never sent.
   -- `calls` is therefore an upper bound (by one) on the requests put on the wire.
   calls = 0
   wrapped = 0
   repeating = false
   position = 0
end

function request()
   calls = calls + 1
   position = position + 1
   if position > count then
      position = 1
      repeating = unique
   end
   if repeating then
      wrapped = wrapped + 1
   end
   return requests[position]
end

function done(summary, latency, requests_stats)
   local calls_total, wrapped_total, loaded = 0, 0, 0
   for _, thread in ipairs(threads) do
      calls_total = calls_total + thread:get("calls")
      wrapped_total = wrapped_total + thread:get("wrapped")
      loaded = loaded + thread:get("count")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"duration_us": %d, "requests": %d, "bytes": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, '
         .. '"calls": %d, "wrapped": %d, "loaded": %d}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, calls_total, wrapped_total, loaded))
end
