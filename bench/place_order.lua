-- wrk script: every request places a one-line order, for one of PRODUCTS products
-- (BENCH-1 … BENCH-n, chosen at random), as the customer whose token is in TOKEN.
wrk.method = "POST"
wrk.path = "/api/orders"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
local products = tonumber(os.getenv("PRODUCTS") or "1")

function request()
  local body = string.format('{"items":[{"product_sku":"BENCH-%d","quantity":1}],"customer_name":"Bench",'
    .. '"customer_email":"bench@example.com","shipping_address":"1 Load Street"}', math.random(products))
  return wrk.format(nil, nil, nil, body)
end

local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("requests/s %.0f\n", summary.requests / (summary.duration / 1e6)))
  for _, p in ipairs({ 50, 90, 99 }) do
    io.write(string.format("latency p%d %.2f ms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("errors %d\n", summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
