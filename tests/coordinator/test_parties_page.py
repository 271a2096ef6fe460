"""The parties page's link checks: a node's real health report (real probes, real certificates)
→ the API's PartyOut (`links`, `cert_days_left`) → what coordinator/static/app.js renders.

The rendering runs app.js itself under Node.js with a minimal DOM (the page test in a real
browser is tests/e2e/test_ui.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from certs.authority import init_federation
from coordinator.api.routes.parties import health_links
from coordinator.schemas import PartyOut
from node.ops.health import run_checks
from node.ops.probe import serve
from node.settings import NodeSettings

APP_JS = Path(__file__).resolve().parents[2] / "coordinator" / "static" / "app.js"

# app.js in a Node.js vm with just enough DOM for its h() helper; prints the rendered trees
HARNESS = r"""
const fs = require("fs"), vm = require("vm");
class Node {}
class Text extends Node { constructor(t) { super(); this.data = t; } get textContent() { return this.data; } }
class Element extends Node {
  constructor(tag) { super(); this.tag = tag; this.children = []; this.attrs = {}; this.dataset = {}; this.className = ""; }
  set textContent(v) { this.children = [new Text(String(v))]; }
  get textContent() { return this.children.map((c) => c.textContent).join(""); }
  setAttribute(k, v) { this.attrs[k] = String(v); }
  addEventListener() {}
  append(...cs) { this.children.push(...cs); }
}
const document = {
  createElement: (t) => new Element(t), createTextNode: (t) => new Text(t),
  addEventListener() {}, querySelector() { return null; },
};
const ctx = vm.createContext({ document, Node, window: {}, console });
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), ctx);
const dump = (el) => el instanceof Text ? el.data : el === null ? null : ({
  tag: el.tag, class: el.className, dataset: el.dataset, text: el.textContent,
  children: el.children.filter((c) => c instanceof Element).map(dump),
});
const p = JSON.parse(fs.readFileSync(0, "utf8"));
const out = {
  links: dump(ctx.linkList(p)),
  cert: dump(ctx.certDays(p)),
  health: ctx.healthList(p).map(dump),
};
process.stdout.write(JSON.stringify(out));
"""


def render(party: dict) -> dict:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("Node.js is not installed")
    done = subprocess.run(
        [node, "-e", HARNESS, str(APP_JS)],
        input=json.dumps(party),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _settings(certs: Path, tmp: Path, party: str, **kw) -> NodeSettings:
    return NodeSettings(
        party=party,
        broker_url="redis://node:s3cret-Zq81@127.0.0.1:1/0",
        data_root=tmp,
        cert_file=certs / f"{party}.crt",
        key_file=certs / f"{party}.key",
        ca_file=certs / "ca.crt",
        trusted_signers=str(certs / "coordinator.crt"),
        allowed_peers="alice,bob,carol",
        probe_listen_host="127.0.0.1",
        **kw,
    )


@pytest.fixture()
def alice_report(tmp_path, ports) -> dict:
    """alice's health report: bob's probe answers as bob; carol's address reaches bob's node."""
    certs = tmp_path / "certs"
    init_federation(certs, ["alice", "bob", "carol", "coordinator"])
    bob = _settings(certs, tmp_path, "bob", probe_port=ports.one())
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=serve, args=(bob, stop), kwargs={"on_ready": lambda _a: ready.set()}
    )
    thread.start()
    try:
        assert ready.wait(10)
        at_bob = f"127.0.0.1:{bob.probe_port}"
        alice = _settings(
            certs,
            tmp_path,
            "alice",
            ray_address=f"127.0.0.1:{ports.one()}",
            peer_probes=f"bob={at_bob},carol={at_bob}",
        )
        return run_checks(alice, check_worker=False).as_dict()
    finally:
        stop.set()
        thread.join(10)


def _party_out(health: dict) -> dict:
    out = PartyOut(
        name="alice", broker="redis://node:***@x:1/0", fed_host="x", spu_host="x", slots=1
    )
    out.health = health
    out.links, out.cert_days_left = health_links(health, "alice")
    return json.loads(out.model_dump_json())


def test_the_api_carries_each_link_and_the_certificate_days(alice_report):
    party = _party_out(alice_report)
    links = {link["peer"]: link for link in party["links"]}
    assert links["bob"]["ok"] and links["bob"]["outcome"] == "ok"
    assert links["bob"]["party"] == "alice" and links["bob"]["peer_cn"] == "bob"
    assert not links["carol"]["ok"] and links["carol"]["outcome"] == "wrong_party"
    assert "carol at 127.0.0.1:" in links["carol"]["message"]
    assert "presented bob's certificate" in links["carol"]["message"]
    assert 360 <= party["cert_days_left"] <= 365


def test_a_report_without_links_or_with_junk_gives_none():
    assert health_links(None, "alice") == ([], None)
    assert health_links({"checks": []}, "alice") == ([], None)  # a node of an older version
    junk = {"links": [{"peer": "bob"}, "x"], "cert_days_left": "soon"}
    assert health_links(junk, "alice") == ([], None)
    other = {  # a node may only report its own links
        "links": [
            {"party": "mallory", "peer": "bob", "address": "b:1", "outcome": "ok", "ok": True}
            | {"message": "fine"}
        ]
    }
    assert health_links(other, "alice") == ([], None)


def test_the_page_renders_who_reaches_whom_and_what_to_do(alice_report):
    party = _party_out(alice_report)
    page = render(party)
    items = {li["dataset"]["peer"]: li for li in page["links"]["children"]}
    assert page["links"]["class"] == "checks links"
    bob, carol = items["bob"], items["carol"]
    assert bob["class"] == "ok" and bob["dataset"]["outcome"] == "ok"
    assert bob["text"].startswith("✓alice → bob · bob's certificate: ")
    assert carol["class"] == "failed" and carol["dataset"]["outcome"] == "wrong_party"
    assert carol["children"][0]["text"] == "✗"
    days = party["links"][1]["days_left"]
    # the certificate named is the one presented: bob's, at carol's address
    assert carol["children"][1]["text"] == f"alice → carol · bob's certificate: {days} days"
    # the failed link shows its whole "what to do" message
    assert carol["children"][2]["text"] == party["links"][1]["message"]
    assert "points at another party's node" in carol["children"][2]["text"]
    # own certificate
    assert page["cert"]["class"] == "cert-days small ok"
    assert page["cert"]["text"] == f"certificate: {party['cert_days_left']} days left"
    # the links are not repeated among the other health checks, which stay
    names = [li["dataset"]["check"] for li in page["health"][0]["children"]]
    assert "link bob" not in names and "link carol" not in names
    assert {"redis", "ray head", "certificate", "certificate expiry"} <= set(names)


@pytest.mark.parametrize(
    ("days", "cls", "text"),
    [(12, "warn", "certificate: 12 days left"), (-1, "bad", "certificate expired")],
)
def test_certificate_days_near_or_past_expiry_stand_out(days, cls, text):
    page = render({"name": "alice", "links": [], "cert_days_left": days, "health": None})
    assert page["cert"]["class"] == f"cert-days small {cls}" and page["cert"]["text"] == text
    assert page["links"]["text"] == "—"
