-- wrk script: each connection waits PACE_MS (default 1) milliseconds after every answer,
-- so the load stays below saturation and the latency percentiles measure the server's
-- service time rather than the queue a saturated closed loop builds.
local pace = tonumber(os.getenv("PACE_MS") or "1")

function delay()
  return pace
end
