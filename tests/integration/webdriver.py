"""A headless Chromium inside the lab's namespace, driven through chromedriver's
WebDriver HTTP API (W3C, plus chromedriver's `se/log` for the browser console) with
curl from the namespace: Python's standard library only, no PyPI."""
import base64
import json
import os
import shutil
import subprocess

import labkit

CHROMEDRIVER_PORT = 9515  # the namespace's own loopback


class WebDriverError(Exception):
    pass


class Browser:
    def __init__(self, tmp, width=1400, height=1100, extra_args=()):
        driver = shutil.which("chromedriver")
        if driver is None or shutil.which("chromium") is None:
            raise WebDriverError("no chromium / chromedriver: scripts/install-deps installs "
                                 "the Debian packages chromium and chromium-driver")
        self.base = f"http://127.0.0.1:{CHROMEDRIVER_PORT}"
        self.proc = labkit.Proc([driver, f"--port={CHROMEDRIVER_PORT}"],
                                os.path.join(tmp, "chromedriver.log"))
        labkit.wait_for("chromedriver ready",
                        lambda: self.call("GET", "/status").get("ready"), 30)
        # The namespace has no route out; the flags also keep Chromium from trying.
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", f"--user-data-dir={tmp}/chromium",
                "--no-first-run", "--no-default-browser-check", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--disable-extensions", "--metrics-recording-only", *extra_args]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"args": args},
            "goog:loggingPrefs": {"browser": "ALL"}}}}
        self.session = self.call("POST", "/session", caps, timeout=60)["sessionId"]

    def call(self, method, path, body=None, timeout=30):
        argv = ["curl", "-s", "-m", str(timeout), "-X", method, f"{self.base}{path}"]
        if body is not None:
            argv[1:1] = ["-H", "Content-Type: application/json", "--data-binary", "@-"]
        r = subprocess.run(labkit.in_ns(argv), input=json.dumps(body) if body is not None else "",
                           capture_output=True, text=True, timeout=timeout + 5)
        if r.returncode != 0:
            raise WebDriverError(f"{method} {path}: curl exit {r.returncode} {r.stderr}")
        answer = json.loads(r.stdout)
        value = answer.get("value") if isinstance(answer, dict) else None
        if isinstance(value, dict) and "error" in value:
            raise WebDriverError(f"{method} {path}: {value['error']}: {value.get('message')}")
        return value

    def s(self, method, path, body=None, timeout=30):
        return self.call(method, f"/session/{self.session}{path}", body, timeout)

    def open(self, url):
        self.s("POST", "/url", {"url": url}, timeout=60)

    def js(self, script, *args):
        """Runs script (a function body) in the page; returns what it returns."""
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def console(self):
        """The browser's log entries since the last call: console messages, uncaught
        exceptions, failed loads ({level, message, source})."""
        return self.s("POST", "/se/log", {"type": "browser"})

    def errors(self):
        """Only the errors (level SEVERE) among them: Chromium logs its own notices too
        (e.g. an INFO about fonts on its new-tab page before the first navigation)."""
        return [e for e in self.console() if e.get("level") == "SEVERE"]

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def quit(self):
        """Ends the session (Chromium exits) and chromedriver (its /shutdown); returns
        chromedriver's exit status."""
        try:
            self.s("DELETE", "")
        finally:
            subprocess.run(labkit.in_ns(["curl", "-s", "-m", "5", f"{self.base}/shutdown"]),
                           capture_output=True, timeout=10)
            try:
                labkit.wait_for("chromedriver to exit", lambda: not self.proc.alive(), 15)
            finally:
                rc = self.proc.stop(timeout=15)
        return rc
