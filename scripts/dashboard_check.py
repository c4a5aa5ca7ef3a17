"""Drives the dashboard of a running `rlvr train --dashboard` in headless Chromium (Playwright, with the
browser from PATH or $RLVR_CHROMIUM) and checks what an operator relies on:

1. the page loads with no console error and requests nothing from another host;
2. the charts gain points as steps finish;
3. the rollout viewer shows a group (prompt, samples, rewards);
4. the controls refuse without the token (401);
5. pausing with the token pauses the run: the state shown, /metrics' rlvr_run_state and the step count
   agree; resuming continues it;
6. with --screenshot, saves a screenshot; with --stop, stops the run at the end.

Usage: dashboard_check.py URL --token TOKEN [--screenshot PNG] [--stop]
       dashboard_check.py URL --only-screenshot PNG [--steps N]   (wait for N steps and a group, save, exit)
"""

import argparse
import os
import re
import shutil
import sys
import time
import urllib.parse

from playwright.sync_api import sync_playwright

TIMEOUT_MS = 90_000


def say(msg):
    print(f"dashboard_check: {msg}", flush=True)


def wait_until(what, check, timeout_s=TIMEOUT_MS / 1000):
    """Polls `check` from Python: the page's CSP forbids the string evaluation Playwright's
    function waits use."""
    deadline = time.time() + timeout_s
    while not check():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--token")
    ap.add_argument("--screenshot")
    ap.add_argument("--stop", action="store_true")
    ap.add_argument("--only-screenshot")
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    if not args.token and not args.only_screenshot:
        ap.error("--token is needed (or --only-screenshot)")
    origin = urllib.parse.urlsplit(args.url)
    chromium = os.environ.get("RLVR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("no chromium: install Debian's chromium package (scripts/test.sh does) or set RLVR_CHROMIUM")

    errors, foreign = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        def on_console(m):
            # The refusals step 4 asks for are logged by the browser as failed loads; nothing else may be.
            refused = "401" in m.text and "/api/control/" in (m.location or {}).get("url", "")
            if m.type == "error" and not refused:
                errors.append(f"console {m.type}: {m.text} ({(m.location or {}).get('url', '')})")

        page.on("console", on_console)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))

        def on_request(req):
            u = urllib.parse.urlsplit(req.url)
            if u.scheme not in ("data", "blob") and u.netloc != origin.netloc:
                foreign.append(req.url)

        page.on("request", on_request)
        page.set_default_timeout(TIMEOUT_MS)

        # 1. The page and its history.
        page.goto(args.url)
        page.wait_for_selector("body[data-ready='1']")
        points = lambda: int(page.get_attribute(".chart", "data-points"))
        first = points()
        say(f"loaded with {first} steps of history")
        if args.only_screenshot:
            wait_until(f"{args.steps} steps", lambda: points() >= args.steps, timeout_s=3600)
            page.wait_for_selector("#rollout .sample")
            time.sleep(1.5)  # the next status (members, queues)
            page.screenshot(path=args.only_screenshot, full_page=True)
            say(f"screenshot in {args.only_screenshot}")
            browser.close()
            sys.exit(1 if errors or foreign else 0)

        # 2. Charts gain points from the live stream.
        wait_until("the charts to gain points", lambda: points() > first + 1)
        say(f"charts grew to {points()} points")
        for title in ("Reward", "Clip fraction", "Timing (s)"):
            assert page.locator(f".chart[data-title='{title}'] canvas").count() == 1, f"chart {title} has no canvas"

        # 3. The rollout viewer shows a group.
        page.wait_for_selector("#rollout .sample")
        samples = page.locator("#rollout .sample").count()
        prompt = page.inner_text("#rollout .prompt")
        assert samples >= 2 and prompt.strip(), f"rollout viewer: {samples} samples, prompt {prompt!r}"
        assert re.search(r"reward -?\d", page.inner_text("#rollout")), "rollout viewer shows no reward"
        say(f"rollout viewer shows a group of {samples} samples")

        # 4. Controls refuse without the token.
        page.fill("#token", "")
        page.click("button[data-action='pause']")
        page.wait_for_selector("#control-result[data-status='401']")
        assert page.get_attribute("body", "data-state") == "running", "a control without the token changed the state"
        r = page.request.post(args.url.rstrip("/") + "/api/control/pause", headers={"Authorization": "Bearer wrong"})
        assert r.status == 401, f"a wrong token got {r.status}"
        say("controls refuse without the token (401)")

        # 5. Pause with the token: the state, the metrics and the step count agree.
        page.fill("#token", args.token)
        page.click("button[data-action='pause']")
        page.wait_for_selector("#control-result[data-status='200']")
        page.wait_for_selector("body[data-state='paused']")
        metrics = lambda: page.request.get(args.url.rstrip("/") + "/metrics").text()
        deadline = time.time() + 30
        while 'rlvr_run_state{state="paused"} 1' not in metrics():
            assert time.time() < deadline, "the metrics never showed the run paused"
            time.sleep(0.5)
        time.sleep(3)  # the step in hand finishes
        step = lambda: int(re.search(r"^rlvr_step (\d+)", metrics(), re.M).group(1))
        paused_at = step()
        time.sleep(3)
        assert step() == paused_at, f"the run kept training while paused ({paused_at} -> {step()})"
        assert points() == paused_at or points() >= paused_at - 1, f"charts show {points()} points at step {paused_at}"
        say(f"paused at step {paused_at}: state, metrics and steps agree")
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
            say(f"screenshot in {args.screenshot}")

        # Resume: training continues.
        page.click("button[data-action='resume']")
        page.wait_for_selector("body[data-state='running']")
        wait_until("training to continue", lambda: points() > paused_at)
        assert 'rlvr_run_state{state="running"} 1' in metrics()
        say(f"resumed: step {step()}")

        if args.stop:
            page.click("button[data-action='stop']")
            page.wait_for_selector("#control-result[data-status='200']")
            say("stop sent")
        browser.close()

    problems = errors + [f"request to another host: {u}" for u in foreign]
    for p in problems:
        print("PROBLEM", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
