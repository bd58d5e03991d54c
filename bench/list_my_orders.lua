-- wrk script: every request reads the first page (20 orders with their lines) of the
-- caller's orders, as the customer whose token is in TOKEN.
wrk.method = "GET"
wrk.path = "/api/orders/my?size=20"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

-- Run from the repository root (bench/run.sh is).
dofile("bench/report.lua")
