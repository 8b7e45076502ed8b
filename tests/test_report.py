"""``sagan report``: a self-contained, escaped HTML report, checked as text and in a real
headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium)."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from sagan.cli import main
from sagan.viz import report as R

EVIL_RUN = "x<script>alert(1)<img src=x onerror=alert(2)>"
EVIL_CLASSES = ["<img src=x onerror=alert(3)>", "</script><script>alert(4)</script>"]


def _rewrite_class_names(run_dir: Path, names: list[str]) -> None:
    for ckpt in (run_dir / "checkpoints").glob("*.pt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state["data"]["class_names"] = names
        torch.save(state, ckpt)


@pytest.fixture(scope="module")
def evil_report(tiny_run, tmp_path_factory) -> Path:
    """The tiny run, renamed to a name full of HTML, with hostile class names, evaluation JSON
    (Inception keys of an older record, Fashion-MNIST classifier keys of a current one) and FID
    columns (the classifier's, and an older run's plain ``eval/fid``); its report."""
    run = tmp_path_factory.mktemp("evil") / EVIL_RUN
    shutil.copytree(tiny_run, run)
    _rewrite_class_names(run, EVIL_CLASSES)
    (run / "eval").mkdir()
    (run / "eval" / "step_00000004-classifier-test.json").write_text(json.dumps(
        {"metrics": {"fid": 123.25, "kid_mean": 0.5}, "step": 4, "note": "<b>not bold</b>"}))
    (run / "eval" / "step_00000004-fmnist-test.json").write_text(json.dumps(
        {"metrics": {"fid_fmnist": 45.5, "is_mean_fmnist": 3.25, "class_accuracy": 0.75}, "step": 4}))
    (run / "metrics_extra.json").write_text("{not json")
    lines = (run / "metrics.csv").read_text().splitlines()
    last = len(lines) - 2
    lines = [lines[0] + ",eval/fid_fmnist,eval/best_fid_fmnist,eval/fid"] + [
        ln + (",,," if i < last else ",99.5,99.5,120.0") for i, ln in enumerate(lines[1:])]
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    assert main(["report", str(run), "--explorer-images", "3"]) == 0
    return run / "report.html"


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


# --------------------------------------------------------------------------- the page as text

def test_report_is_self_contained(evil_report):
    html = evil_report.read_text(encoding="utf-8")
    p = _Collect()
    p.feed(html)
    for tag, attrs in p.tags:
        for name in ("src", "href"):
            v = attrs.get(name)
            if v is not None:
                assert v.startswith(("data:", "#")), f"<{tag} {name}={v[:60]!r}> would need a file or the network"
        assert not (tag == "link" and attrs.get("rel") == "stylesheet")
    assert not re.search(r"https?://", html), "the report must not reference the network"
    assert "@import" not in html and "url(" not in html


def test_report_escapes_run_and_class_names(evil_report):
    html = evil_report.read_text(encoding="utf-8")
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "x&lt;script&gt;alert(1)&lt;img src=x onerror=alert(2)&gt;" in html  # the run name, as text
    assert "&lt;img src=x onerror=alert(3)&gt;" in html  # a class name in the samples table
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html  # a string from an evaluation JSON
    p = _Collect()
    p.feed(html)
    assert sum(tag == "script" for tag, _ in p.tags) == 3  # evolution data, explorer data, the code
    data = json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html,
                                re.S).group(1))
    assert {im["title"] for im in data["images"]} <= set(EVIL_CLASSES)  # JSON escaping round-trips


def test_report_sections_curves_and_metrics(evil_report):
    html = evil_report.read_text(encoding="utf-8")
    for title in ("Hinge losses", "Discriminator outputs D(real) / D(fake)", "Attention gamma",
                  "FID (Fashion-MNIST classifier features; lower is better)",
                  "FID (Inception; lower is better)"):  # the tiny run's plain eval/fid: Inception
        assert f'alt="{R.html_escape(title)}' in html, title
    assert 'title="eval/fid_fmnist, eval/best_fid_fmnist"' in html and 'title="eval/fid"' in html
    assert "eval/step_00000004-classifier-test.json" in html and "metrics.fid" in html and "123.25" in html
    assert "<td>metrics.fid_fmnist</td><td>FID (Fashion-MNIST classifier features)</td><td>45.5</td>" in html
    assert "<td>metrics.fid</td><td>FID (Inception)</td><td>123.25</td>" in html
    assert "<td>metrics.class_accuracy</td><td>class accuracy</td><td>0.75</td>" in html
    assert "metrics_extra.json" in html and "could not read" in html
    assert "Generator attention on generated images" in html
    assert "Discriminator attention on real training images" in html
    assert html.count('class="pix" src="data:image/png') >= 2 + 1  # one row per class + the latest grid


def test_script_json_cannot_close_the_script_element():
    hostile = {"a": "</script><script>alert(1)</script>", "b": "<!-- & \u2028"}
    text = R.script_json(hostile)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == hostile


def test_explorer_encoding_round_trips_the_maps():
    torch.manual_seed(0)
    maps = torch.softmax(torch.randn(2, 64, 16) * 3, -1)  # 8x8 queries, 4x4 keys (biggan-like)
    rec = R.encode_layer("G.attn8", maps, budget=10 ** 9, n_layers=1)
    assert (rec["qside"], rec["kside"], rec["stride"], rec["qgrid"]) == (8, 4, 1, 8)
    w, cells = R.decode_layer(rec, 2)
    np.testing.assert_allclose(w, maps.numpy(), atol=float(maps.max()) / 255 * 0.51 + 1e-7)
    assert (cells[9] == (1, 1)).all()
    # a small budget keeps every second query cell (the centre of each 2x2 block)
    rec2 = R.encode_layer("G.attn8", maps, budget=2 * 16 * 16, n_layers=1)
    w2, cells2 = R.decode_layer(rec2, 2)
    assert rec2["stride"] == 2 and len(cells2) == 16 and (cells2[0] == (1, 1)).all()
    np.testing.assert_allclose(w2[:, 0], maps[:, 1 * 8 + 1].numpy(), atol=float(maps.max()) / 255 * 0.51 + 1e-7)


def test_fid_charts_say_which_features():
    cols = ["step", "loss_d", "eval/fid_fmnist", "eval/best_fid_fmnist", "eval/is_fmnist", "eval/class_acc",
            "eval/fid", "eval/seconds"]
    groups = {title: names for title, names, _ in R.curve_groups(cols)}
    assert R.metric_features("eval/is_mean_fmnist") == ("is_mean", "fmnist")
    assert R.metric_features("metrics.kid_mean") == ("kid_mean", "inception")
    assert R.metric_features("eval/class_acc") is None and R.metric_features("kid_subset_size") is None
    assert groups["FID (Fashion-MNIST classifier features; lower is better)"] == ["eval/fid_fmnist",
                                                                                 "eval/best_fid_fmnist"]
    assert groups["IS (Fashion-MNIST classifier features; higher is better)"] == ["eval/is_fmnist"]
    assert groups["FID (Inception; lower is better)"] == ["eval/fid"]
    assert groups["eval/seconds"] == ["eval/seconds"] and groups["eval/class_acc"] == ["eval/class_acc"]
    # an older run wrote eval/fid whatever the features; its config says the classifier's
    old = {title: names for title, names, _ in R.curve_groups(["step", "eval/fid", "eval/best_fid"], "fmnist")}
    assert old == {"FID (Fashion-MNIST classifier features; lower is better)": ["eval/fid", "eval/best_fid"]}
    # a Fashion-MNIST run resumed across the renaming: both columns on one chart
    resumed = R.curve_groups(["step", "eval/fid", "eval/fid_fmnist"], "fmnist")
    assert resumed == [("FID (Fashion-MNIST classifier features; lower is better)", ["eval/fid", "eval/fid_fmnist"],
                        "FID")]
    step = np.arange(4.0)
    charts = R.training_charts({"step": step, "eval/fid": np.array([np.nan, 80.0, np.nan, 60.0])}, "fmnist")
    assert [c.title for c in charts] == ["FID (Fashion-MNIST classifier features; lower is better)"]
    assert charts[0].uri.startswith("data:image/png;base64,") and charts[0].columns == ["eval/fid"]


def test_plain_fid_features_of_older_runs():
    from types import SimpleNamespace

    from sagan.config import Config
    cfg = Config()
    cfg.data.dataset, cfg.train.fid_features = "fashion_mnist", "auto"
    assert R.plain_metric_features(SimpleNamespace(cfg=cfg, tracked_fid=None)) == "fmnist"
    cfg.data.dataset = "image_folder"
    assert R.plain_metric_features(SimpleNamespace(cfg=cfg, tracked_fid=None)) == "inception"
    assert R.plain_metric_features(SimpleNamespace(cfg=cfg, tracked_fid={"fid": 1.0, "features": "fmnist"})) == "fmnist"
    cfg.train.fid_features = "fmnist"
    assert R.plain_metric_features(SimpleNamespace(cfg=cfg, tracked_fid=None)) == "fmnist"


def test_metrics_json_tables_label_the_features(tmp_path):
    old = tmp_path / "old.json"  # an older sagan evaluate record: plain keys, the extractor named
    old.write_text(json.dumps({"metrics": {"fid": 30.0, "kid_mean": 0.01}, "extractor": {"name": "fmnist"}}))
    t = R.json_table(old, tmp_path)
    assert t.columns == ["key", "metric", "value"]
    assert ["metrics.fid", "FID (Fashion-MNIST classifier features)", "30"] in t.rows
    assert ["metrics.kid_mean", "KID (Fashion-MNIST classifier features)", "0.01"] in t.rows
    assert ["extractor.name", "", "fmnist"] in t.rows
    rows = tmp_path / "rows.json"  # a list of records: the column headers are labelled
    rows.write_text(json.dumps([{"step": 1, "precision_fmnist": 0.5, "fid": 9.0}]))
    t = R.json_table(rows, tmp_path)
    assert t.columns == ["step", "precision (Fashion-MNIST classifier features) [precision_fmnist]",
                         "FID (Inception) [fid]"]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"note": "no metrics here"}))
    assert R.json_table(plain, tmp_path).columns == ["key", "value"]


def test_report_command_errors(tiny_run, tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory, checkpoint file or exported model" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "has no checkpoints" in capsys.readouterr().err
    assert main(["report", str(tiny_run), "--checkpoint", "best"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sagan report: error: --checkpoint best: {tiny_run} has no checkpoints/best.pt")
    assert len(err.splitlines()) == 1
    assert main(["report", str(tiny_run), "--out", str(tmp_path / "r.html")]) == 2
    assert ("--out is a folder (the report is written as report.html in it); give e.g. --out "
            f"{tmp_path / 'r'}") in capsys.readouterr().err
    assert main(["report"]) == 2
    assert "give a SOURCE" in capsys.readouterr().err
    assert not (tiny_run / "report.html").exists()


def test_report_of_an_exported_folder(tiny_run, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert main(["export", str(tiny_run), "--out", str(exp)]) == 0
    assert main(["report", str(exp), "--explorer-images", "2", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    page = exp / "report.html"
    assert f"wrote {page}" in out and f"from exported model {exp} (step 4, EMA generator, standing BN statistics)" in out
    html = page.read_text(encoding="utf-8")
    assert "<title>SAGAN model exp (exported)</title>" in html
    assert "a folder written by &#39;sagan export&#39;: the generator without its training record" in html
    assert "<th>parameters</th><td>G " in html and "(generator only: no discriminator)" in html
    assert "Generator attention on generated images" in html
    assert "Discriminator attention: not drawn: this model holds only the generator." in html
    assert html.count("the generator without its training record") == 4  # overview, evolution, curves, metrics
    assert 'id="evo-data"' not in html and '<div class="charts">' not in html
    data = json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html,
                                re.S).group(1))
    assert [lay["label"] for lay in data["layers"]] == ["G.attn16"] and len(data["images"]) == 2
    assert "the training config stored with the exported model" in html  # the config section, from the export
    assert "<th>export.checkpoint_kind</th><td>latest</td>" in html and "<th>weights.kind</th><td>export</td>" in html
    assert html.count('class="pix" src="data:image/png') == 2  # one row per class, no training grids
    assert not re.search(r"https?://", html)
    # --out names a folder
    assert main(["report", str(exp), "--out", str(tmp_path / "pages"), "--explorer-images", "1", "--no-real"]) == 0
    assert (tmp_path / "pages" / "report.html").is_file()


# --------------------------------------------------------------------------- in a real browser

CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def _browser_or_fail():
    """Selenium + Debian's chromium/chromium-driver. Missing in CI: fail; elsewhere: skip."""
    problems = []
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("the selenium package (pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)
    if not chromium:
        problems.append("Debian's chromium (apt-get install chromium)")
    if not driver:
        problems.append("chromedriver (apt-get install chromium-driver)")
    if problems:
        msg = "browser test needs " + " and ".join(problems) + "; .ci/apt-packages lists the Debian packages"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return chromium, driver


@pytest.fixture()
def browser(tmp_path):
    chromium, driver_path = _browser_or_fail()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROME_FLAGS + [f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", "--window-size=1280,1000"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()


def _canvas_png(drv, el) -> str:
    return drv.execute_script("return arguments[0].querySelector('canvas').toDataURL()", el)


def test_report_in_chromium_click_changes_the_map(evil_report, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    html = evil_report.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html,
                                re.S).group(1))
    browser.get(evil_report.resolve().as_uri())

    # hostile names are shown as text, nothing they hold ran
    assert browser.title == f"SAGAN run {EVIL_RUN}"
    assert browser.find_element(By.TAG_NAME, "h1").text == f"SAGAN run {EVIL_RUN}"
    assert browser.execute_script("return document.querySelectorAll('img[src=x]').length") == 0
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#ex-thumbs button")
    assert [t.get_attribute("title") for t in thumbs] == [im["title"] for im in data["images"]]

    panels = browser.find_elements(By.CSS_SELECTOR, "#ex-panels .ex-map")
    assert [p.get_attribute("data-layer") for p in panels] == ["G.attn16", "D.attn16"]
    image = browser.find_element(By.CSS_SELECTOR, "#ex-image")
    res = data["resolution"]
    x0, y0 = data["start"][0]
    assert image.get_attribute("data-query") == f"{x0},{y0}"
    before = [_canvas_png(browser, p) for p in panels]

    # click the pixel diagonally opposite the starting query
    x1, y1 = res - 1 - x0, res - 1 - y0
    canvas = image.find_element(By.TAG_NAME, "canvas")
    w = canvas.size["width"]
    ActionChains(browser).move_to_element_with_offset(
        canvas, int((x1 + 0.5) * w / res - w / 2), int((y1 + 0.5) * w / res - w / 2)).click().perform()
    assert image.get_attribute("data-query") == f"{x1},{y1}"
    after = [_canvas_png(browser, p) for p in panels]
    assert all(a != b for a, b in zip(after, before)), "clicking a pixel must redraw every layer's map"

    # the page shows the peak that the embedded map has for this query (same maths as Python)
    for rec, panel in zip(data["layers"], panels):
        weights, cells = R.decode_layer(rec, len(data["images"]))
        cell = (min(x1 * rec["qside"] // res, rec["qside"] - 1), min(y1 * rec["qside"] // res, rec["qside"] - 1))
        q = int(np.flatnonzero((cells // rec["stride"] == np.array(cell) // rec["stride"]).all(1))[0])
        k = int(np.argmax(weights[0, q]))
        assert panel.get_attribute("data-peak") == f"{k % rec['kside']},{k // rec['kside']}", rec["label"]
        assert panel.get_attribute("data-query-cell") == f"{cell[0]},{cell[1]}"

    # another image: its title (a hostile class name) is shown as text
    thumbs[1].click()
    assert image.find_element(By.CSS_SELECTOR, ".label").text == data["images"][1]["title"]

    # the evolution slider moves through the snapshots
    slider = browser.find_element(By.ID, "evo-range")
    browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert browser.find_element(By.ID, "evo-step").text == "step 0"

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors

    browser.execute_script("document.getElementById('explorer').scrollIntoView()")
    shots = Path(os.environ.get("SAGAN_TEST_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shots / "report_explorer.png"))
    png = (shots / "report_explorer.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
