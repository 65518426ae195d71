"""A stand-in for the AWX controller API that ansible-rulebook's ``run_job_template`` talks to, on loopback.

It answers the four calls ansible-rulebook makes (``GET api/v2/config/``, ``GET api/v2/unified_job_templates/?name=``,
``POST <template>/launch/``, ``GET api/v2/jobs/?id__in=``), checks the bearer token, applies the survey's rules to
the launch exactly as AWX does (sgtest.awx.survey_launch: HTTP 400 with ``variables_needed_to_start``), and runs the
job through ansible-runner the way AWX prepares it (sgtest.awx.run_job). The real AWX needs Kubernetes.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Mapping, Optional
from urllib.parse import parse_qs, urlparse

from . import awx


class Controller:
    """``templates``: name -> (JobTemplate, survey spec). Jobs run one at a time, in launch order."""

    def __init__(self, base_dir: str, templates: Mapping[str, tuple], hosts, groups, token: str = "controller-token",
                 address: str = "127.0.0.1") -> None:
        self.base_dir, self.token = base_dir, token
        self.templates = dict(templates)
        self.hosts, self.groups = hosts, groups
        self.launches: List[dict] = []   # every launch request: body, answer code
        self.jobs: Dict[int, dict] = {}
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._next = 500
        self.server = ThreadingHTTPServer((address, 0), self._handler())
        self.url = "http://%s:%d/" % self.server.server_address
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Controller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.wait_idle()

    def wait_idle(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while any(j["status"] in ("pending", "running") for j in list(self.jobs.values())):
            if time.monotonic() > deadline:
                raise TimeoutError("controller stand-in: jobs still running")
            time.sleep(0.2)

    def _template_json(self, tid: int, name: str) -> dict:
        return {"id": tid, "type": "job_template", "name": name,
                "summary_fields": {"organization": {"id": 1, "name": "Default"}},
                "related": {"launch": "/api/v2/job_templates/%d/launch/" % tid},
                "ask_limit_on_launch": False, "ask_labels_on_launch": False, "ask_inventory_on_launch": False,
                "ask_variables_on_launch": False}

    def launch(self, tid: int, body: dict) -> tuple:
        name = list(self.templates)[tid - 1]
        template, spec = self.templates[name]
        answers = body.get("extra_vars") or {}
        if isinstance(answers, str):
            answers = json.loads(answers)
        extra, errors, ignored = awx.survey_launch(spec, answers, template.extra_vars)
        record = {"template": name, "body": body, "errors": errors, "ignored": ignored, "time": time.time()}
        self.launches.append(record)
        if errors:
            return 400, {"variables_needed_to_start": errors}
        with self._lock:
            self._next += 1
            job_id = self._next
            job = {"id": job_id, "status": "pending", "artifacts": {}, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "url": "/api/v2/jobs/%d/" % job_id, "name": name, "extra": extra, "job": None}
            self.jobs[job_id] = job
        threading.Thread(target=self._run, args=(job, template, extra), daemon=True).start()
        return 201, {"job": job_id, "id": job_id, "url": job["url"], "ignored_fields": {"extra_vars": ignored}
                     if ignored else {}}

    def _run(self, job: dict, template, extra: dict) -> None:
        with self._run_lock:
            job["status"] = "running"
            try:
                done = awx.run_job(self.base_dir, template, extra, hosts=self.hosts, groups=self.groups,
                                   job_id=job["id"])
                job["job"] = done
                job["artifacts"] = done.artifacts
                job["status"] = done.status
            except Exception as e:  # noqa: BLE001  # the job's error is its result
                job["status"] = "error"
                job["error"] = repr(e)
            job["finished"] = time.time()

    def _handler(self):
        controller = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, code: int, body: Optional[dict]) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != "Bearer %s" % controller.token:
                    self._answer(401, {"detail": "Authentication credentials were not provided."})
                    return False
                return True

            def do_GET(self):  # noqa: N802
                if not self._authorized():
                    return
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/api/v2/config/":
                    self._answer(200, {"version": "24.6.1"})
                elif url.path == "/api/v2/unified_job_templates/":
                    name = query.get("name", [""])[0]
                    results = [controller._template_json(i, n) for i, n in enumerate(controller.templates, 1)
                               if n == name]
                    self._answer(200, {"count": len(results), "next": None, "results": results})
                elif url.path == "/api/v2/jobs/":
                    ids = [int(i) for i in query.get("id__in", [""])[0].split(",") if i]
                    results = [{k: v for k, v in controller.jobs[i].items() if k not in ("job", "extra")}
                               for i in ids if i in controller.jobs]
                    self._answer(200, {"count": len(results), "next": None, "results": results})
                else:
                    self._answer(404, {"detail": "Not found."})

            def do_POST(self):  # noqa: N802
                if not self._authorized():
                    return
                parts = urlparse(self.path).path.strip("/").split("/")
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if len(parts) == 5 and parts[:3] == ["api", "v2", "job_templates"] and parts[4] == "launch":
                    code, answer = controller.launch(int(parts[3]), body)
                    self._answer(code, answer)
                else:
                    self._answer(404, {"detail": "Not found."})

        return Handler
