"""The UI in real headless Chromium (Debian's chromium driven by Playwright for Python, no
browser download) against real nodes and a real coordinator process on SQLite: log in, see the
parties' health, launch a PSI from the "New PSI" form with the dataset and key-column pickers,
watch it reach SUCCEEDED live and read the right intersection count. Screenshots land in
test-artifacts/ui/.
"""

from __future__ import annotations

import re
import shutil

import pytest

from deploy.local.standin import read_keys, write_csv

from .conftest import ARTIFACTS
from .helpers import psi_body, running_coordinator, write_inputs

playwright_api = pytest.importorskip("playwright.sync_api")

SHOTS = ARTIFACTS / "ui"
JOB_TIMEOUT_MS = 240_000
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT")


@pytest.fixture(scope="module")
def data(federation):
    """Distinct dataset names and key columns per party, with a known true intersection."""
    alice = [f"u{i:05d}" for i in range(0, 900)]
    bob = [f"u{i:05d}" for i in range(600, 1700)]
    return sorted(write_inputs(federation, "ui", alice, bob))


@pytest.fixture(scope="module")
def coordinator(federation, data):
    # the test-only hello kind (tests/e2e/hello_kind.py) beside PSI: its form is drawn from its
    # schema (the nodes run its job type: the federation's NODE_JOB_MODULES)
    env = {"COORD_JOB_KINDS": "tests.e2e.hello_kind"}
    with running_coordinator(federation, ARTIFACTS / "e2e-ui", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A browser tab on the coordinator that records uncaught JS errors."""

    def __init__(self, browser, coordinator) -> None:
        self.ctx = browser.new_context(
            base_url=coordinator.url, viewport={"width": 1366, "height": 900}
        )
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(60_000)
        self.js_errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.js_errors.append(str(exc)))

    def login(self, token: str) -> None:
        r = self.page.request.post("/login", form={"token": token}, max_redirects=0)
        assert r.status == 303, r.text()

    def close(self) -> None:
        self.ctx.close()
        assert not self.js_errors, f"uncaught JS errors: {self.js_errors}"


@pytest.fixture
def tab(browser, coordinator):
    t = Page(browser, coordinator)
    yield t
    t.close()


@pytest.fixture
def page(tab, coordinator):
    """A logged-in tab."""
    tab.login(coordinator.token)
    return tab.page


def test_login(tab, coordinator):
    page = tab.page
    page.goto("/")
    page.wait_for_url(re.compile(r"/login$"))
    assert page.locator("#login-error").count() == 0

    page.fill("#token", "not-the-token")
    with page.expect_response(
        lambda r: r.url.endswith("/login") and r.request.method == "POST"
    ) as r:
        page.click("#login-submit")
    assert r.value.status == 401
    err = page.locator("#login-error")
    playwright_api.expect(err).to_be_visible()
    playwright_api.expect(err).to_contain_text("not the coordinator's API token")
    assert page.url.endswith("/login")

    page.fill("#token", coordinator.token)
    page.click("#login-submit")
    page.wait_for_url(f"{coordinator.url}/")
    playwright_api.expect(page.locator("#nav-jobs")).to_have_class(re.compile("active"))
    playwright_api.expect(page.locator("#jobs-table")).to_be_visible()

    page.click("#logout")
    page.wait_for_url(re.compile(r"/login$"))
    page.goto("/parties")
    page.wait_for_url(re.compile(r"/login$"))


def test_parties_page(page, federation):
    page.goto("/parties")
    for name in ("alice", "bob"):
        row = page.locator(f"#party-row-{name}")
        playwright_api.expect(row.locator("td.reachable")).to_have_text("reachable")
        playwright_api.expect(row.locator("td.worker")).to_have_text("alive")
        # the node's own checks, each shown with its message
        checks = row.locator("ul.checks li")
        playwright_api.expect(checks.first).to_be_visible()
        redis = row.locator("li[data-check='redis']")
        assert redis.get_attribute("data-ok") == "true"
        playwright_api.expect(redis).to_contain_text("PING ok")
    # every party's mTLS probe answers every other's link check (the local federation runs them)
    links = page.locator("#party-row-alice ul.links li")
    playwright_api.expect(links).to_have_count(len(federation.nodes) - 1)
    for li in links.all():
        assert li.get_attribute("data-ok") == "true", li.inner_text()
    # carol is in the registry (in no job of these tests) and is listed as well
    playwright_api.expect(page.locator("#party-row-carol")).to_be_visible()
    # the broker URL is shown, without the coordinator's Redis password
    for name, node in federation.nodes.items():
        broker = page.locator(f"#party-row-{name} td").nth(1).inner_text()
        assert f":{node.ports['redis']}" in broker and "***" in broker, broker
        assert node.coordinator_password not in page.locator(f"#party-row-{name}").inner_text()
    # every health check readable: nothing of the table is cut off at its right edge, in a
    # 1400-pixel window with the five parties of the federation
    page.set_viewport_size({"width": 1400, "height": 900})
    for name in federation.nodes:
        row = page.locator(f"#party-row-{name}")
        playwright_api.expect(row.locator("ul.checks li").first).to_be_visible()
    wrap = page.locator(".table-wrap")
    clipped = wrap.evaluate("w => w.scrollWidth - w.clientWidth")
    assert clipped <= 1, f"the parties table is {clipped} px wider than its card"
    page.screenshot(path=str(SHOTS / "parties.png"), full_page=True)
    page.click("#refresh-parties")
    playwright_api.expect(page.locator("#refresh-parties")).to_have_text("Refresh")
    playwright_api.expect(page.locator("#party-row-alice td.reachable")).to_have_text("reachable")


def pick(page, side: str, party: str, dataset: str, keys: list[str]) -> None:
    page.select_option(f"#party-{side}", party)
    page.wait_for_selector(f"#dataset-{side} option[value='{dataset}']", state="attached")
    page.select_option(f"#dataset-{side}", dataset)
    page.select_option(f"#keys-{side}", keys)


def test_form_shows_validation_errors(page, coordinator):
    with coordinator.client() as http:
        before = http.get("/api/v1/jobs").json()["total"]

    page.goto("/new")
    pick(page, "a", "alice", "ui/alice.csv", ["uid"])
    pick(page, "b", "bob", "ui/bob.csv", ["id"])
    # the key-column picker offers the chosen dataset's header columns
    cols = page.locator("#keys-a option").all_inner_texts()
    assert cols == ["uid", "f0"], cols
    assert page.locator("#receiver option").all_inner_texts() == ["alice", "bob"]
    err = page.locator("#form-error")

    # the same party twice: refused in the form, nothing sent
    page.select_option("#party-b", "alice")
    playwright_api.expect(page.locator("#party-b-error")).to_contain_text("different parties")
    page.click("#submit-psi")
    playwright_api.expect(err).to_be_visible()
    playwright_api.expect(err).to_contain_text("alice is chosen twice")

    # an empty key selection: the API's 422 is shown as "field: message"
    pick(page, "b", "bob", "ui/bob.csv", ["id"])
    page.select_option("#keys-a", [])
    with page.expect_response("**/api/v1/jobs/psi") as resp:
        page.click("#submit-psi")
    assert resp.value.status == 422
    playwright_api.expect(err).to_contain_text("rejected")
    playwright_api.expect(err).to_contain_text("parties.alice.keys:")
    playwright_api.expect(err).to_contain_text("at least 1 item")
    page.screenshot(path=str(SHOTS / "form-error.png"), full_page=True)

    # an absolute output path: the API's message names the field
    page.select_option("#keys-a", ["uid"])
    page.fill("#output-b", "/etc/passwd.csv")
    with page.expect_response("**/api/v1/jobs/psi") as resp:
        page.click("#submit-psi")
    assert resp.value.status == 422
    playwright_api.expect(err).to_contain_text("parties.bob.output:")
    playwright_api.expect(err).to_contain_text("absolute")
    assert page.url.endswith("/new")

    with coordinator.client() as http:
        assert http.get("/api/v1/jobs").json()["total"] == before  # nothing was submitted


def test_psi_from_the_form(page, coordinator, federation, data):
    out = "out/ui-psi.csv"
    page.goto("/new")
    pick(page, "a", "alice", "ui/alice.csv", ["uid"])
    pick(page, "b", "bob", "ui/bob.csv", ["id"])
    page.fill("#output-a", out)
    page.fill("#output-b", out)
    page.select_option("#receiver", "alice")
    page.select_option("#protocol", "RR22")
    with page.expect_response("**/api/v1/jobs/psi") as resp:
        page.click("#submit-psi")
    assert resp.value.status == 201
    # the form goes on to the job's page
    page.wait_for_url(re.compile(r"/jobs/[^/]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    playwright_api.expect(page.locator("#job-id")).to_have_text(job_id)
    page.wait_for_function(
        "final => final.includes(document.querySelector('#job-status').dataset.status)",
        arg=list(FINAL),
        timeout=JOB_TIMEOUT_MS,
    )
    status = page.locator("#job-status").inner_text()
    if status != "SUCCEEDED":
        page.screenshot(path=str(SHOTS / "job-not-succeeded.png"), full_page=True)
    assert status == "SUCCEEDED", page.locator("#job-error").inner_text()

    count = page.locator("#intersection-count")
    playwright_api.expect(count).to_be_visible()
    assert int(count.inner_text()) == len(data)
    playwright_api.expect(page.locator("#result-receiver")).to_have_text("alice")
    playwright_api.expect(
        page.locator("#result-parties tr[data-party='alice'] .output-path")
    ).to_contain_text(out)
    for party in ("alice", "bob"):
        card = page.locator(f"#party-{party}")
        assert card.get_attribute("data-status") == "SUCCESS"
        playwright_api.expect(card.locator(".stage")).to_have_text("task_finished")
        timeline = page.locator(f"#timeline tbody tr[data-party='{party}']")
        assert timeline.count() >= 2
        playwright_api.expect(timeline.last).to_contain_text("task_finished")
    playwright_api.expect(page.locator("#cancel-btn")).to_be_hidden()
    playwright_api.expect(page.locator("#retry-btn")).to_be_hidden()
    playwright_api.expect(page.locator("#job-error")).to_be_hidden()
    # performance metrics are recorded just after the end; the page picks them up
    playwright_api.expect(
        page.locator("#result-parties tr[data-party='alice'] td").nth(3)
    ).to_have_text(re.compile(r"\d s$"), timeout=60_000)
    page.screenshot(path=str(SHOTS / "job-succeeded.png"), full_page=True)

    # what the page shows is what the receiver holds
    got = read_keys(federation.nodes["alice"].data_root / out, "uid")
    assert sorted(got) == data
    assert not (federation.nodes["bob"].data_root / out).exists()

    # the jobs list shows it, with the per-party states; the status filter works
    page.goto("/")
    row = page.locator(f"#job-row-{job_id}")
    playwright_api.expect(row).to_contain_text("SUCCEEDED")
    playwright_api.expect(row).to_contain_text("alice")
    playwright_api.expect(row).to_contain_text("bob")
    page.select_option("#status-filter", "FAILED")
    playwright_api.expect(page.locator(f"#job-row-{job_id}")).to_have_count(0)
    page.select_option("#status-filter", "SUCCEEDED")
    playwright_api.expect(page.locator(f"#job-row-{job_id}")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "jobs.png"), full_page=True)


def test_a_psi_of_three_parties_from_the_form(page, coordinator, federation, data):
    """A third party column added (and one removed again): the protocol select offers what runs
    for three parties, the reveal-least first; what each party learns is shown before launch;
    the job SUCCEEDS with the plain-Python intersection of the three tables at the receiver."""
    carol = [f"u{i:05d}" for i in range(0, 1700, 3)]
    write_csv(federation.nodes["carol"].data_root / "ui/carol.csv", "cust", carol)
    out = "out/ui-three.csv"
    page.goto("/new")
    pick(page, "a", "alice", "ui/alice.csv", ["uid"])
    pick(page, "b", "bob", "ui/bob.csv", ["id"])
    protocols = page.locator("#protocol option")
    playwright_api.expect(protocols).to_have_count(3)
    assert protocols.first.get_attribute("value") == "RR22"
    page.click("#add-party")
    page.click("#add-party")  # a fourth, then removed
    playwright_api.expect(page.locator("#party-block-d")).to_be_visible()
    page.click("#remove-d")
    playwright_api.expect(page.locator("#party-block-d")).to_have_count(0)
    pick(page, "c", "carol", "ui/carol.csv", ["cust"])
    for side in ("a", "b", "c"):
        page.fill(f"#output-{side}", out)
    assert protocols.evaluate_all("os => os.map(o => o.value)") == [
        "ECDH_3PC",
        "ECDH_NPC",
        "KKRT_NPC",
    ]
    playwright_api.expect(page.locator("#protocol-hint")).to_contain_text("RR22: 2 parties")
    page.select_option("#receiver", "bob")
    learns = page.locator("#psi-learns-list li")
    playwright_api.expect(learns).to_have_count(3)
    said = page.locator("#psi-learns-list li[data-party='carol']")
    playwright_api.expect(said).to_contain_text("the size of carol ∩ alice, not which keys")
    page.screenshot(path=str(SHOTS / "new-psi-three.png"), full_page=True)
    with page.expect_response("**/api/v1/jobs/psi") as resp:
        page.click("#submit-psi")
    assert resp.value.status == 201, resp.value.text()
    page.wait_for_url(re.compile(r"/jobs/[^/]+$"))
    page.wait_for_function(
        "final => final.includes(document.querySelector('#job-status').dataset.status)",
        arg=list(FINAL),
        timeout=JOB_TIMEOUT_MS,
    )
    assert page.locator("#job-status").inner_text() == "SUCCEEDED", page.locator(
        "#job-error"
    ).inner_text()
    for party in ("alice", "bob", "carol"):
        assert page.locator(f"#party-{party}").get_attribute("data-status") == "SUCCESS"
    got = read_keys(federation.nodes["bob"].data_root / out, "id")
    assert sorted(got) == sorted(set(data) & set(carol))


def test_a_kind_declared_in_one_module_gets_its_form_from_its_schema(page, coordinator, federation):
    """The hello kind has no UI code: its tab and form are drawn from its request schema (a
    party pick-list, its greeting with the declared default, the optional deadline); the API's
    422 is shown naming the field; a filled form launches a job that SUCCEEDS at every party."""
    page.goto("/new")
    tab = page.locator("#kind-tabs a[data-kind='hello']")
    playwright_api.expect(tab).to_be_visible()
    playwright_api.expect(page.locator("#kind-learns")).to_contain_text("The receiver learns")
    playwright_api.expect(page.locator("#kind-tabs a[data-kind='psi']")).to_have_class("active")
    tab.click()
    page.wait_for_url(re.compile(r"/new/hello$"))
    playwright_api.expect(page.locator("#kind-summary")).to_contain_text("greets every other")
    # what each party learns, as the kind declares it, before launch
    playwright_api.expect(page.locator("#kind-learns")).to_contain_text("the others' greetings")
    playwright_api.expect(page.locator("#field-greeting")).to_have_value("hello")
    playwright_api.expect(page.locator("#field-deadline")).to_have_attribute(
        "type", "datetime-local"
    )
    picks = page.locator("#field-parties input[type=checkbox]")
    assert sorted(picks.evaluate_all("bs => bs.map(b => b.value)")) == sorted(federation.nodes)
    err = page.locator("#form-error")

    page.check("#field-parties input[data-party='alice']")
    with page.expect_response("**/api/v1/jobs/hello") as resp:
        page.click("#submit-job")
    assert resp.value.status == 422
    playwright_api.expect(err).to_contain_text("parties:")
    playwright_api.expect(err).to_contain_text("at least 2 items")
    assert page.url.endswith("/new/hello")

    page.check("#field-parties input[data-party='bob']")
    page.fill("#field-greeting", "salut")
    page.screenshot(path=str(SHOTS / "hello-form.png"), full_page=True)
    with page.expect_response("**/api/v1/jobs/hello") as resp:
        page.click("#submit-job")
    assert resp.value.status == 201, resp.value.text()
    page.wait_for_url(re.compile(r"/jobs/[^/]+$"))
    page.wait_for_function(
        "final => final.includes(document.querySelector('#job-status').dataset.status)",
        arg=list(FINAL),
        timeout=JOB_TIMEOUT_MS,
    )
    assert page.locator("#job-status").inner_text() == "SUCCEEDED", page.locator(
        "#job-error"
    ).inner_text()
    # no intersection headline for a kind that is not a PSI; its parties are listed
    playwright_api.expect(page.locator("#result-headline")).to_be_hidden()
    playwright_api.expect(page.locator("#result-parties tr[data-party='bob']")).to_be_visible()
    # the details are the hello request's own fields, nothing of a PSI's
    facts = page.locator("#job-facts").inner_text()
    assert "salut" in facts and "alice, bob" in facts, facts
    assert "Receiver" not in facts and "input" not in facts, facts
    page.screenshot(path=str(SHOTS / "hello-job.png"), full_page=True)
    with coordinator.client() as http:
        job = http.get(f"/api/v1/jobs/{page.url.rsplit('/', 1)[1]}").json()
    assert job["kind"] == "hello" and job["request"]["greeting"] == "salut", job


def _launch_from_form(page) -> str:
    with page.expect_response(re.compile(r".*/api/v1/jobs/ub_psi(_cache)?$")) as resp:
        page.click("#submit-job")
    assert resp.value.status == 201, resp.value.text()
    page.wait_for_url(re.compile(r"/jobs/[^/]+$"))
    page.wait_for_function(
        "final => final.includes(document.querySelector('#job-status').dataset.status)",
        arg=list(FINAL),
        timeout=JOB_TIMEOUT_MS,
    )
    status = page.locator("#job-status").inner_text()
    assert status == "SUCCEEDED", page.locator("#job-error").inner_text()
    return page.url.rsplit("/", 1)[1]


def test_an_unbalanced_psi_from_the_forms_cache_then_query(page, coordinator, federation, data):
    """bob's table made into a cache for alice from the ub_psi_cache form (party selects), then
    the ub_psi form lists the cache (its table, size, age, client) and choosing it fills in
    its server and client; alice's answer is the plain-Python intersection."""
    page.goto("/new/ub_psi_cache")
    page.fill("#field-cache", "ui-bob")
    page.select_option("#field-server", "bob")
    page.fill("#field-input", "ui/bob.csv")
    page.fill("#field-keys", "id")
    page.select_option("#field-client", "alice")
    _launch_from_form(page)

    page.goto("/new/ub_psi")
    row = page.locator("#cache-list tr[data-cache='ui-bob']")
    playwright_api.expect(row).to_contain_text("ui/bob.csv")
    playwright_api.expect(row).to_contain_text(str(len(set(range(600, 1700)))))
    page.select_option("#field-cache", "ui-bob")
    playwright_api.expect(page.locator("#field-server")).to_have_value("bob")
    playwright_api.expect(page.locator("#field-client")).to_have_value("alice")
    page.fill("#field-input", "ui/alice.csv")
    page.fill("#field-keys", "uid")
    page.fill("#field-output", "out/ui-ub.csv")
    playwright_api.expect(page.locator("#field-made_by")).to_have_count(0)  # the coordinator's
    page.screenshot(path=str(SHOTS / "ub-psi-form.png"), full_page=True)
    _launch_from_form(page)
    got = read_keys(federation.nodes["alice"].data_root / "out/ui-ub.csv", "uid")
    assert sorted(got) == data


def test_an_unknown_kind_s_page_names_the_kinds_there_are(page):
    page.goto("/new/nosuch")
    err = page.locator("#form-error")
    playwright_api.expect(err).to_contain_text('no job kind "nosuch"')
    playwright_api.expect(err).to_contain_text("psi, ub_psi_cache, ub_psi, warmup, hello")


def test_a_failed_job_reads_as_one_line_naming_the_party_and_the_cause(
    page, coordinator, federation
):
    root = federation.nodes["bob"].data_root / "ui"
    (root / "ragged.csv").write_text("id,x\nu1,1\nu2\nu3,3\n")
    body = psi_body("ui/alice.csv", "ui/ragged.csv", "out/ui-bad.csv")
    with coordinator.client() as http:
        job = http.post("/api/v1/jobs/psi", json=body).json()
    page.goto(f"/jobs/{job['id']}")
    page.wait_for_function(
        "() => document.querySelector('#job-status').dataset.status === 'FAILED'",
        timeout=JOB_TIMEOUT_MS,
    )
    box = page.locator("#job-error")
    playwright_api.expect(box).to_be_visible()
    playwright_api.expect(page.locator("#failed-party")).to_have_text("bob")
    text = page.locator("#job-error-text").inner_text()
    assert text == (
        "party bob failed: MalformedCsv: party bob refused the task: table ui/ragged.csv "
        "line 3: 1 field(s), the header has 2"
    )
    card = page.locator("#party-bob")
    assert card.get_attribute("data-status") == "FAILURE"
    playwright_api.expect(card.locator(".field-error")).to_contain_text("MalformedCsv: party bob")
    page.screenshot(path=str(SHOTS / "job-failed.png"), full_page=True)


def test_docs_render_with_no_network_and_no_page_breaks_its_security_policy(tab, coordinator):
    """Air-gapped: every request that does not go to the coordinator itself is blocked, and
    Swagger and ReDoc still render (their assets come from the app). No UI page trips the
    Content-Security-Policy; on the docs pages the policy only stops what would leave the
    machine (ReDoc's bundle links its footer logo from cdn.redoc.ly)."""
    blocked: list[str] = []
    violations: list[tuple[str, str]] = []

    def only_the_coordinator(route):
        if route.request.url.startswith(coordinator.url):
            return route.continue_()
        blocked.append(route.request.url)
        return route.abort()

    tab.ctx.route("**/*", only_the_coordinator)
    page = tab.page
    page.on(
        "console",
        lambda m: (
            violations.append((page.url, m.text)) if "Content Security Policy" in m.text else None
        ),
    )
    tab.login(coordinator.token)
    page.goto("/docs")
    playwright_api.expect(page.locator(".swagger-ui .info .title")).to_contain_text(
        "Partyline coordinator"
    )
    page.goto("/redoc")
    playwright_api.expect(page.locator("h1").first).to_contain_text("Partyline coordinator")
    for path in ("/", "/parties", "/new"):
        page.goto(path)
        page.wait_for_load_state("load")
    assert not blocked, f"requests to other origins: {blocked}"
    on_ui = [v for v in violations if not v[0].split("?")[0].endswith(("/docs", "/redoc"))]
    assert not on_ui, on_ui
    on_docs = [text for _url, text in violations if "https://" not in text]
    assert not on_docs, f"the docs pages broke the policy with their own code: {on_docs}"
