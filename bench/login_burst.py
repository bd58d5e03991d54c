"""Fires BURST concurrent failed logins (one request each, unknown users) at an api while a
customer keeps placing orders, and reports the answers, the order latencies during the
burst, and the api's peak resident memory (VmHWM). Loopback only; ends by itself."""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

BASE, PID, TOKEN, BURST = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def post(path, body, token=None):
    request = urllib.request.Request(
        BASE + path, data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return "connection error"


def rss_kib(field):
    with open(f"/proc/{PID}/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


order = {"items": [{"product_sku": "BURST-1", "quantity": 1}], "customer_name": "B",
         "customer_email": "b@example.com", "shipping_address": "1 Main St"}
done = threading.Event()
order_results = []


def keep_ordering():
    while not done.is_set():
        started = time.monotonic()
        status = post("/api/orders", order, TOKEN)
        order_results.append((status, time.monotonic() - started))
        time.sleep(0.02)


before = rss_kib("VmRSS")
orderer = threading.Thread(target=keep_ordering)
orderer.start()
start = threading.Barrier(BURST)


def guess(i):
    start.wait()
    return post("/api/auth/login", {"username": f"nobody-{i}", "password": "wrong-password"})


began = time.monotonic()
with ThreadPoolExecutor(BURST) as pool:
    answers = Counter(pool.map(guess, range(BURST)))
burst_seconds = time.monotonic() - began
time.sleep(0.5)
done.set()
orderer.join()
latencies = sorted(latency for status, latency in order_results if status == 201)
p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
print(json.dumps({
    "burst": BURST,
    "answers": dict(sorted((str(k), v) for k, v in answers.items())),
    "burst_seconds": round(burst_seconds, 2),
    "rss_before_mib": round(before / 1024, 1),
    "rss_peak_mib": round(rss_kib("VmHWM") / 1024, 1),
    "rss_after_mib": round(rss_kib("VmRSS") / 1024, 1),
    "orders_during_burst": dict(Counter(str(s) for s, _ in order_results)),
    "order_p50_ms": round(p(0.5), 1),
    "order_p99_ms": round(p(0.99), 1),
}))
