#!/usr/bin/python3
"""Time from saving a handler file to the running daemon answering with the
new code (file watch → debounce → every worker builds and swaps).

  reload_latency.py PORT LUA_DIR [--runs 10]

Each run writes handlers/reload_probe.lua returning version N, then sends
reload_probe requests back to back until the reply carries N. Prints the
median and max over the runs. A measurement tool: it asserts nothing."""
import argparse, asyncio, json, os, statistics, time
import websockets

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("lua_dir")
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    path = os.path.join(a.lua_dir, "handlers", "reload_probe.lua")
    times = []
    async with websockets.connect(f"ws://127.0.0.1:{a.port}/ws") as ws:
        for n in range(1, a.runs + 1):
            await asyncio.sleep(0.5)  # let the previous reload settle
            t0 = time.monotonic()
            with open(path + ".tmp", "w") as f:
                f.write('local M = {}\nfunction M.handle() return "probe", {v = %d} end\nreturn M\n' % n)
            os.rename(path + ".tmp", path)  # how editors save: atomically
            while True:
                await ws.send(json.dumps({"message_type": "reload_probe", "message_id": 1}))
                r = json.loads(await ws.recv())
                if r["message_type"] == "probe" and r["data"]["v"] == n:
                    break
            times.append((time.monotonic() - t0) * 1000)
    os.unlink(path)
    print(f"runs={a.runs} median_ms={statistics.median(times):.0f} max_ms={max(times):.0f} "
          f"min_ms={min(times):.0f}")

asyncio.run(main())
