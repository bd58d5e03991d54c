-- wrk script: every request reads the first page (20 orders with their lines) of the
-- caller's orders, as the customer whose token is in TOKEN.
wrk.method = "GET"
wrk.path = "/api/orders/my?size=20"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

function done(summary, latency, requests)
  io.write(string.format("requests/s %.0f\n", summary.requests / (summary.duration / 1e6)))
  for _, p in ipairs({ 50, 90, 99 }) do
    io.write(string.format("latency p%d %.2f ms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("errors %d\n", summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
