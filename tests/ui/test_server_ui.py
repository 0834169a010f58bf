"""The web UI of a real `runstore serve`, in a real browser: log in, a folder's runs table
(sort, filter), a run's charts (series and point counts, zoom), compare, an artifact and its
download, another user's run by URL (404), hostile strings shown as text, logout.

Shared by the tests of this module (one server, one browser): they only read.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.ui import seed as S
from tests.ui.conftest import shot

FOLDER_URL = "/ui/folder?path=%2Falice%2Fvision"


def login(page, base: str, token: str, then: str = "/ui/") -> None:
    page.goto(base + then)
    assert "/ui/login" in page.url, "an anonymous visitor must land on the login page"
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(then) + "$"))


def names_in_table(page) -> list[str]:
    return page.locator("table.runs tbody a.run-link").all_inner_texts()


def run_link(page, name: str):
    return page.locator("a.run-link", has_text=re.compile(f"^{re.escape(name)}$"))


def wait_charts(page) -> None:
    page.wait_for_function(
        "() => { const f = [...document.querySelectorAll('figure.chart')];"
        " return f.length && f.every(x => x.dataset.state); }")


def chart(page, title: str) -> dict:
    """What the chart of a metric key shows: series count, points per series, raw or not."""
    return page.evaluate(
        """(title) => {
          const fig = [...document.querySelectorAll('figure.chart')].find(
              f => f.querySelector('.chart-title').textContent === title);
          const c = window.runstoreCharts[Number(fig.dataset.chart)];
          const u = c.uplot;
          return {series: c.runs, points: c.points, raw: c.raw,
                  requested: Number(fig.dataset.requested),
                  width: fig.querySelector('.plot').clientWidth,
                  canvas: !!fig.querySelector('canvas'),
                  maxes: u.data.slice(1).map(s => Math.max(...s.filter(v => v != null)))};
        }""", title)


def test_login_sort_filter_run_chart_zoom(page, server_ui) -> None:
    base = server_ui.server.url
    page.goto(base + "/ui/login")
    page.fill("#token", "rst_000000000000_not-a-real-token-at-all")
    page.click("button[type=submit]")
    assert page.locator(".alert").inner_text().startswith("That token was not accepted")
    shot(page, "server-login-refused")

    login(page, base, server_ui.alice)
    assert page.locator(".user").inner_text() == "alice"
    assert sorted(page.locator("#recent a.run-link").all_inner_texts()) == sorted(
        server_ui.seeded.runs)  # the latest runs: alice's five, none of bob's
    shot(page, "server-folders")
    page.click("a.folder:has-text('/alice/vision')")
    page.wait_for_url(re.compile(r"/ui/folder\?path=(%2F|/)alice(%2F|/)vision"))
    assert len(names_in_table(page)) == 5
    shot(page, "server-runs")

    page.click("table.runs th.name a")                       # sort by name, ascending
    page.wait_for_url(re.compile(r"sort=name"))
    assert names_in_table(page) == ["baseline", "diverged", "hostile", "lr-sweep-1",
                                    "lr-sweep-2"]
    page.click("table.runs th.name a")                       # again: descending
    page.wait_for_url(re.compile(r"dir=desc"))
    assert names_in_table(page)[0] == "lr-sweep-2"

    page.select_option("select[name=status]", "Error")      # filter by status
    page.wait_for_url(re.compile(r"status=Error"))
    assert names_in_table(page) == ["diverged"]
    page.select_option("select[name=status]", "")
    page.wait_for_url(re.compile(r"status=&"))
    page.fill("#name-filter", "sweep")                       # filter by name
    page.wait_for_url(re.compile(r"name=sweep"))
    assert sorted(names_in_table(page)) == ["lr-sweep-1", "lr-sweep-2"]

    page.goto(base + FOLDER_URL)
    run_link(page, "baseline").click()
    page.wait_for_url(re.compile(r"/ui/run/"))
    wait_charts(page)
    loss = chart(page, "loss")
    # 5,000 points, downsampled: one series (line + min/max band), never more points than
    # twice the chart's width, and the spike survives as the band's maximum.
    assert loss["series"] == 1 and loss["canvas"]
    assert loss["raw"] == [False]
    assert 0 < loss["points"][0] <= 2 * loss["width"] <= loss["requested"] + 1
    assert S.SPIKE_VALUE in loss["maxes"]
    acc = chart(page, "accuracy")
    assert acc["series"] == 1 and acc["points"] == [S.SHORT_STEPS] and acc["raw"] == [True]
    assert page.locator(".nan-note").first.inner_text() == "1 NaN"
    shot(page, "server-run")

    # Zoom: drag across a tenth of the loss chart; the finer range comes back as raw points.
    fig = page.locator("figure.chart", has=page.locator(".chart-title", has_text="loss"))
    box = fig.locator(".u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.30, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.40, y, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "() => { const f = [...document.querySelectorAll('figure.chart')].find(x => "
        "x.querySelector('.chart-title').textContent === 'loss');"
        " return window.runstoreCharts[Number(f.dataset.chart)].raw[0] === true; }")
    zoomed = chart(page, "loss")
    assert 300 < zoomed["points"][0] < 700  # every step of ~a tenth of 5,000
    fig.locator(".log-toggle").click()                        # a log y axis
    page.wait_for_function(
        "() => [...document.querySelectorAll('figure.chart')].some(f => f.dataset.log === '1'"
        " && window.runstoreCharts[Number(f.dataset.chart)].uplot.scales.y.distr === 3)")
    shot(page, "server-run-zoomed-log")


def test_compare_selected_runs(page, server_ui) -> None:
    base = server_ui.server.url
    login(page, base, server_ui.alice, then=FOLDER_URL)
    for name in ("baseline", "lr-sweep-1", "lr-sweep-2"):
        page.locator("table.runs tbody tr", has=run_link(page, name)) \
            .locator("input[type=checkbox]").check()
    assert page.locator("#compare-button .count").inner_text() == "3"
    page.click("#compare-button")
    page.wait_for_url(re.compile(r"/ui/compare\?"))
    wait_charts(page)
    assert chart(page, "loss")["series"] == 3
    assert chart(page, "accuracy")["points"] == [S.SHORT_STEPS] * 3
    differs = page.locator("table.compare tr.differs th").all_inner_texts()
    assert differs == ["batch_size", "lr", "optimizer.name"]
    assert page.locator("table.compare tr.same th").all_inner_texts() == ["optimizer.beta1"]
    shot(page, "server-compare")


def test_artifact_page_and_download(page, server_ui) -> None:
    base = server_ui.server.url
    login(page, base, server_ui.alice, then=FOLDER_URL)
    run_link(page, "baseline").click()
    ref = page.locator("#lineage .art-ref", has_text="resnet18-model")
    assert ref.locator(".art-files").inner_text() == "1 object · 10.0 KB"
    page.click("#lineage a:has-text('resnet18-model')")
    page.wait_for_url(re.compile(r"/ui/artifact/"))
    row = page.locator("#objects tbody tr")
    assert row.locator("td").first.inner_text() == "model/weights.bin"
    assert row.locator("td.num").inner_text() == "10.0 KB"
    with page.expect_download() as info:
        row.locator("a:has-text('Download')").click()
    assert info.value.suggested_filename == "weights.bin"
    assert Path(info.value.path()).read_bytes() == server_ui.seeded.file_bytes
    assert page.locator("#art-lineage a").all_inner_texts() == ["baseline"]  # produced by
    shot(page, "server-artifact")


def local_stdout(server_ui, name: str) -> Path:
    from runstore.store import Store

    store = Store(server_ui.alice_home)
    try:
        local = store.read("SELECT local_dir FROM runs WHERE uuid = ?",
                           (server_ui.seeded.runs[name],))[0][0]
    finally:
        store.close()
    return Path(local) / "stdout.log"


def test_run_page_shows_the_uploaded_stdout(page, server_ui) -> None:
    """The stdout.log that went up with the run: its tail on the page, the whole file as a
    download byte for byte; a run that printed nothing says so."""
    base = server_ui.server.url
    login(page, base, server_ui.alice, then=FOLDER_URL)
    run_link(page, "baseline").click()
    page.wait_for_url(re.compile(r"/ui/run/"))
    tail = page.locator("#stdout-tail").inner_text()
    assert tail.startswith("epoch 0: loss=") and tail.endswith(f"done {S.HOSTILE_SCRIPT}\n")
    assert page.locator("#stdout .stdout-head .muted").inner_text() == "the whole file"
    with page.expect_download() as info:
        page.click("a:has-text('Download full log')")
    assert info.value.suggested_filename.endswith("-stdout.log")
    assert Path(info.value.path()).read_bytes() == local_stdout(server_ui, "baseline")\
        .read_bytes()
    assert page.evaluate("window.__pwned") is None
    shot(page, "server-run-stdout")
    page.goto(f"{base}/ui/run/{server_ui.seeded.runs['lr-sweep-1']}")
    assert page.locator("#stdout-tail").count() == 0
    assert page.locator("#stdout-none").inner_text().startswith("No stdout.log came with")


def test_another_users_run_is_not_found(page, server_ui) -> None:
    base = server_ui.server.url
    login(page, base, server_ui.alice)
    response = page.goto(f"{base}/ui/run/{server_ui.bob_run}")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Not found"
    assert "bobs-secret" not in page.content()
    for path in (f"/ui/api/series?run={server_ui.bob_run}&type=train&key=k1",
                 f"/ui/run/{server_ui.bob_run}/stdout.log",
                 "/ui/folder?path=%2Fbob%2Fprivate",
                 f"/ui/compare?run={server_ui.bob_run}"):
        assert page.goto(base + path).status == 404, path
    home = page.goto(base + "/ui/").text()
    assert "/bob" not in home and "bobs-secret" not in home  # folders, latest runs: alice's
    # bob sees his own run
    page.context.clear_cookies()
    login(page, base, server_ui.bob, then=f"/ui/run/{server_ui.bob_run}")
    assert page.locator("#run-name").inner_text() == "bobs-secret"
    assert page.locator("#stdout-tail").inner_text() == "bobs-secret output\n"


def test_hostile_values_are_text(page, server_ui) -> None:
    base = server_ui.server.url
    login(page, base, server_ui.alice, then=FOLDER_URL)
    page.click("details.columns summary")
    page.locator(f"input[name=h][value='{S.HOSTILE_KEY}']").check()
    page.wait_for_url(re.compile(r"h=%22%3E%3Cscript"))
    headers = page.locator("table.runs thead th").all_inner_texts()
    assert any(S.HOSTILE_KEY in h for h in headers)
    assert any(S.HOSTILE_METRIC in h for h in headers)  # among the default metric columns
    assert S.HOSTILE_IMG in page.locator("table.runs tbody").inner_text()
    assert page.evaluate("window.__pwned") is None
    shot(page, "server-runs-hostile-columns")
    hostile_uuid = server_ui.seeded.runs["hostile"]
    response = page.goto(f"{base}/ui/run/{hostile_uuid}")
    assert "script-src 'self';" in response.headers["content-security-policy"]
    wait_charts(page)
    assert page.evaluate("window.__pwned") is None
    labels = page.locator(".page-head .labels .label").all_inner_texts()
    assert labels == [S.HOSTILE_SCRIPT, S.HOSTILE_IMG, S.RTL]
    assert S.HOSTILE_SCRIPT in page.locator("#run-description").inner_text()
    assert page.locator("#hparams th").first.inner_text() == S.HOSTILE_KEY
    assert page.locator(".chart-title").inner_text() == S.HOSTILE_METRIC
    # stdout.log as uploaded: markup and direction controls are text, line for line
    assert page.locator("#stdout-tail").inner_text().splitlines() == [
        S.HOSTILE_SCRIPT, S.HOSTILE_IMG, S.RTL]
    assert page.locator("script:not([src]):not([type='application/json'])").count() == 0
    shot(page, "server-hostile")


def test_logout_needs_the_csrf_token_and_api_keeps_bearer_auth(page, server_ui) -> None:
    base = server_ui.server.url
    login(page, base, server_ui.alice)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    assert {"runstore_session", "runstore_csrf"} <= set(cookies)
    session = next(c for c in page.context.cookies() if c["name"] == "runstore_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    # A forged logout (no CSRF field) and a forged login are refused ...
    forged = httpx.post(base + "/ui/logout", cookies=cookies, data={}, follow_redirects=False)
    assert forged.status_code == 400
    forged = httpx.post(base + "/ui/login", cookies=cookies,
                        data={"token": server_ui.alice, "csrf": "guess"}, follow_redirects=False)
    assert forged.status_code == 403
    # ... and the session cookie is no key to the sync API, which keeps its bearer tokens.
    assert httpx.get(base + "/api/v1/whoami", cookies=cookies).status_code == 401
    assert httpx.get(base + "/api/v1/whoami", headers={
        "Authorization": f"Bearer {server_ui.alice}"}).json()["user"] == "alice"
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/ui/login$"))
    assert page.goto(base + FOLDER_URL).url.startswith(base + "/ui/login")


@pytest.mark.parametrize("path", ["/ui/api/series?run=x&type=t&key=k", "/ui/folder?path=/a"])
def test_anonymous_requests_get_nothing(server_ui, path: str) -> None:
    r = httpx.get(server_ui.server.url + path, follow_redirects=False)
    assert r.status_code in (303, 401)
    assert "alice" not in r.text


def ui_routes() -> list[tuple[str, str]]:
    """(method, path template) of every web UI route, from the router itself."""
    from runstore.ui.routes import build_router

    def no_data(_request):
        raise AssertionError("not called")

    router, _page = build_router(no_data, login=True)
    return sorted((m, r.path) for r in router.routes for m in getattr(r, "methods", ())
                  if m != "HEAD")


def browser_session(base: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=False)
    client.get("/ui/login")
    r = client.post("/ui/login", data={"token": token, "csrf": client.cookies["runstore_csrf"]})
    assert r.status_code == 303
    return client


def test_every_ui_route_needs_the_owners_session(server_ui) -> None:
    """Anonymous: a redirect to the login page (401 for the JSON endpoint), never data.
    Another user: 404 for everything of alice's, the same answer as for what does not exist."""
    runs, arts = server_ui.seeded.runs, server_ui.seeded.artifacts
    fill = {"{uuid}": runs["baseline"]}
    query = {"/ui/folder": "?path=/alice/vision", "/ui/compare": f"?run={runs['baseline']}",
             "/ui/api/series": f"?run={runs['baseline']}&type=train&key=loss",
             "/ui/artifact/{uuid}/file": "?path=model/weights.bin"}
    routes = ui_routes()
    assert ("GET", "/ui/run/{uuid}") in routes and ("GET", "/ui/api/series") in routes
    bob = browser_session(server_ui.server.url, server_ui.bob)
    with httpx.Client(base_url=server_ui.server.url, follow_redirects=False) as anon:
        for method, template in routes:
            if template in ("/", "/ui", "/ui/"):
                continue
            path = template
            if "/artifact/" in template:
                path = path.replace("{uuid}", arts["resnet18-model"])
            for key, value in fill.items():
                path = path.replace(key, value)
            path += query.get(template, "")
            r = anon.request(method, path)
            if template.startswith("/ui/api/"):
                assert r.status_code == 401, (template, r.status_code)
            else:
                assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
            assert "baseline" not in r.text and "resnet" not in r.text
            r = bob.request(method, path)
            assert r.status_code == 404, (template, r.status_code)
            assert "baseline" not in r.text and "weights" not in r.text
    bob.close()


def test_csrf_cookie_once_and_server_timing_everywhere(server_ui) -> None:
    """The CSRF cookie is set (HttpOnly, SameSite=Strict, on /ui) when the browser has none,
    and not again once it sends it; every response, page, API or error, says how long the
    server took (Server-Timing), which benchmarks/ui_latency.py reads."""
    base = server_ui.server.url
    with httpx.Client(base_url=base, follow_redirects=False) as client:
        first = client.get("/ui/login")
        cookie = first.headers["set-cookie"]
        assert cookie.startswith("runstore_csrf=") and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert "set-cookie" not in client.get("/ui/login").headers
        assert client.cookies["runstore_csrf"] in client.get("/ui/login").text  # the form's
        api = httpx.get(base + "/api/v1/health")
        missing = client.get("/ui/run/" + "0" * 32)
        for r in (first, api, missing):
            name, _, dur = r.headers["server-timing"].partition(";dur=")
            assert name == "app" and 0 < float(dur) < 60_000, r.headers["server-timing"]
    assert "set-cookie" not in api.headers  # not the UI's: no CSRF cookie
