-- Shared by the wrk scripts: prints the request rate, latency percentiles and errors in
-- the lines bench/run.sh reads.
function done(summary, latency, requests)
  io.write(string.format("requests/s %.0f\n", summary.requests / (summary.duration / 1e6)))
  for _, p in ipairs({ 50, 90, 99 }) do
    io.write(string.format("latency p%d %.2f ms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("errors %d\n", summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
