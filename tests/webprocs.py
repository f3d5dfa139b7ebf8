"""A `nutups serve` subprocess on a simulated HAT with the dashboard on, for the web tests."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request

from conftest import USERS
from nutprocs import free_port, make_confdir, nut_tmpdir, poll_until, wait_port

SIM_UPS = '[ups]\n driver = x120x\n board = x1202\n sim = yes\n desc = "simulated HAT"\n'
# cmduser (conftest USERS) may run load.off and SET; observer may do neither
USERS_WEB = USERS + "\n[viewer]\n  password = viewpw\n"


class WebClient:
    """JSON requests to a dashboard at ``url``."""

    def __init__(self, url: str, ssl_context=None) -> None:
        self.url = url
        self.ssl_context = ssl_context

    def request(self, method: str, path: str, body=None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl_context) as resp:
                raw = resp.read()
                status, ctype, hdrs = resp.status, resp.headers.get("Content-Type", ""), resp.headers
        except urllib.error.HTTPError as exc:
            raw, status, ctype, hdrs = exc.read(), exc.code, exc.headers.get("Content-Type", ""), exc.headers
        value = json.loads(raw) if ctype.startswith("application/json") else raw.decode()
        return status, value, hdrs

    def get(self, path: str):
        status, value, _ = self.request("GET", path)
        return status, value


class WebDaemon(WebClient):
    """`nutups serve` with nutups.yaml's web.listen on a free port."""

    def __init__(self, yaml_text: str = "", ups_conf: str = SIM_UPS, web: bool = True,
                 files: dict[str, str] | None = None, upsd_conf: str = "", scheme: str = "http") -> None:
        self.base = nut_tmpdir("nutups-web-")
        self.nut_port = free_port()
        self.web_port = free_port()
        self.statepath = self.base / "state"
        self.datapath = self.base / "data"
        self.web = web
        text = (f"web:\n  listen: 127.0.0.1:{self.web_port}\n" if web else "") + yaml_text
        self.confdir = make_confdir(self.base / "conf", ups_conf, upsd_conf, USERS_WEB,
                                    files={"nutups.yaml": text, **(files or {})})
        self.proc: subprocess.Popen | None = None
        self.url = f"{scheme}://127.0.0.1:{self.web_port}"
        self.ssl_context = None  # for https: a context that trusts the test's certificate
        self.preexec_fn = None  # run in the daemon's process before it starts (resource limits)

    def start(self) -> WebDaemon:
        self.err = open(self.base / "stderr", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(self.confdir),
             "--listen", f"127.0.0.1:{self.nut_port}", "--statepath", str(self.statepath),
             "--datapath", str(self.datapath)],
            stdout=subprocess.DEVNULL, stderr=self.err, preexec_fn=self.preexec_fn)
        wait_port(self.nut_port, self.proc)
        if self.web:
            wait_port(self.web_port, self.proc)
            poll_until(lambda: (self.get("/api/v1/ups")[1] or [{}])[0].get("stale") is False, "fresh data")
        return self

    def stderr(self) -> str:
        return (self.base / "stderr").read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.err.close()

    def sim(self, *words: str) -> None:
        subprocess.run([sys.executable, "-m", "nutups.cli", "sim", "--statepath", str(self.statepath), *words],
                       check=True, capture_output=True, timeout=30)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
