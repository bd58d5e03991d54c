-- wrk script: every request places an order of LINES lines (default 1), each for a
-- different one of PRODUCTS products (BENCH-1 … BENCH-n, chosen at random), as the
-- customer whose token is in TOKEN.
wrk.method = "POST"
wrk.path = "/api/orders"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
local products = tonumber(os.getenv("PRODUCTS") or "1")
local lines = math.min(tonumber(os.getenv("LINES") or "1"), products)

function request()
  local first = math.random(products)
  local items = {}
  for i = 0, lines - 1 do
    items[#items + 1] = string.format('{"product_sku":"BENCH-%d","quantity":1}', (first + i - 1) % products + 1)
  end
  local body = '{"items":[' .. table.concat(items, ",") .. '],"customer_name":"Bench",'
    .. '"customer_email":"bench@example.com","shipping_address":"1 Load Street"}'
  return wrk.format(nil, nil, nil, body)
end

-- Run from the repository root (bench/run.sh is).
dofile("bench/report.lua")
