"""The Dagster UI as people use it: ``dagster dev`` on loopback serving the session's materialized lineage,
a run launched through its GraphQL API, and a real browser (Debian chromium via playwright) on its pages."""

import re
import shutil

import psutil
import pytest

from pipelines.definitions import PROJECT_ROOT
from tests.conftest import _free_port
from tests.ui_server import start_dagster_ui, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT_MS = 120_000
GROUPS = ("raw", "datasets", "checkpoints", "evals")
RAW_AND_DATASETS = ["raw_problems", "raw_corpus", "sft_dataset", "think_dataset", "eval_suites"]

LATEST_MATERIALIZATION = """
query Latest($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
  ... on Asset { assetMaterializations(limit: 1) { runId } } } }"""


@pytest.fixture(scope="module")
def dagster_ui(materialized_lineage, tmp_path_factory):
    env = {"LLM_LINEAGE_HOME": str(materialized_lineage.lineage_home), "LLM_LINEAGE_PROFILE": "smoke",
           "MLFLOW_TRACKING_URI": materialized_lineage.tracking_uri, "HF_HUB_OFFLINE": "1"}
    log = tmp_path_factory.mktemp("dagster_ui") / "dagster_dev.log"
    ui = start_dagster_ui(PROJECT_ROOT, materialized_lineage.dagster_home, env, _free_port(), log)
    yield ui
    stop(ui)


def test_ui_listens_on_loopback_only(dagster_ui):
    family = {psutil.Process(dagster_ui.process.pid), *psutil.Process(dagster_ui.process.pid).children(True)}
    listening = {(c.laddr.ip, c.laddr.port) for p in family for c in p.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    port = int(dagster_ui.url.rsplit(":", 1)[1])
    assert (("127.0.0.1", port)) in listening
    assert all(ip in ("127.0.0.1", "::1") for ip, _ in listening), listening


def test_materialization_launched_through_graphql_succeeds(dagster_ui):
    run_id = dagster_ui.launch_assets(RAW_AND_DATASETS)
    assert dagster_ui.wait_for_run(run_id) == "SUCCESS", dagster_ui.log()[-3000:]
    for name in RAW_AND_DATASETS:
        latest = dagster_ui.graphql(LATEST_MATERIALIZATION, {"path": [name]})["assetOrError"]
        assert latest["assetMaterializations"][0]["runId"] == run_id, name


@pytest.fixture
def page(dagster_ui):
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: `make setup` installs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        # first visit to an instance: a "join the community" dialog covers the page until skipped
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
        yield page
        browser.close()


def test_browser_shows_the_four_groups_in_the_asset_graph(dagster_ui, page):
    page.goto(f"{dagster_ui.url}/asset-groups")
    page.get_by_text("Global asset lineage").wait_for()
    for group in GROUPS:
        page.get_by_text(group, exact=True).first.wait_for()
    shown = page.inner_text("body").split()
    assert all(shown.count(group) >= 2 for group in GROUPS), shown  # sidebar tree and graph node


def test_browser_opens_eval_report_and_sees_the_comparison_table(dagster_ui, page):
    page.goto(f"{dagster_ui.url}/assets/eval_report")
    page.get_by_text("[Show Markdown]").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Variant comparison (pass@1, gap to base)").wait_for()
    table = dialog.locator("table").first
    header = table.locator("th").all_inner_texts()
    assert header[0] == "variant" and "in_distribution pass@1" in header
    rows = [row.locator("td").first.inner_text() for row in table.locator("tbody tr").all()]
    assert rows == ["base", "instruct", "reasoning_round_0", "reasoning"]  # round 0, then the final round
    assert dialog.locator("img[src^='data:image/png;base64,']").count() == 4  # the embedded plots, the rounds' too


def test_browser_shows_think_dataset_previews_as_trained(dagster_ui, page):
    """The preview's completions carry their <think> tags: before, the UI's markdown took them for HTML."""
    page.goto(f"{dagster_ui.url}/assets/think_dataset")
    header = page.locator("th").filter(has_text=re.compile(r"^completion$")).first
    header.wait_for()
    table = header.locator("xpath=ancestor::table[1]")
    column = [text.strip() for text in table.locator("th").all_inner_texts()].index("completion") + 1
    completions = table.locator(f"tbody tr td:nth-child({column})").all_inner_texts()
    assert completions and all(text.startswith("<think>") for text in completions), completions
