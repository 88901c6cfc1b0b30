"""Acceptance of ``mxplain review`` in headless Chromium (driven over the DevTools protocol by the
stdlib client in ``cdp.py``): the page opened from disk is answered pair by pair with the keyboard,
reloaded midway with its answers kept, the answers downloaded (the button's own code path, through
the ``s`` shortcut) and imported; the agreement is then in metrics.json and the report. The run's
lot and attribute are named ``<img src=x onerror=alert(1)>``: shown as text, never run; the page
makes no network request."""

import json
import time

import numpy as np
import pytest
from cdp import Browser, chromium

from mxplain import pipeline
from mxplain.cli import main
from mxplain.store import LotTable, TileStore

EVIL = "<img src=x onerror=alert(1)>"
N_PAIRS = 10
KEYS = {"left": ("ArrowLeft", 37), "right": ("ArrowRight", 39), "cant_tell": ("ArrowDown", 40)}


def evil_run(root):
    """A tiny run on a store whose first lot and second attribute are named EVIL: 4 lots of four
    32 px tiles, a 3-layer AttGAN trained for one epoch (about 3 s)."""
    rng = np.random.default_rng(0)
    table = LotTable([EVIL, "lot-b", "lot-c", "lot-d"], ("size", EVIL),
                     np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.3], [0.4, 0.6]]),
                     np.array([1000.0, 1100.0, 1200.0, 1300.0]))
    store = root / "tiles.zarr"
    TileStore.create(store, table, [4] * 4, 32)
    for i in range(4):
        TileStore.write_lot(store, i, rng.integers(0, 255, (4, 32, 32), dtype=np.uint8), 4)
    TileStore.mark_complete(store)
    cfg = root / "c.toml"
    cfg.write_text(f'[data]\nname = "store"\npath = "{store}"\n[data.attribute_descriptions]\n'
                   f'"{EVIL}" = "defined as {EVIL}"\n'
                   '[editor]\nname = "attgan"\nenc_dim = 8\ndec_dim = 8\ndis_dim = 8\n'
                   'dis_fc_dim = 16\nn_layers = 3\nepochs = 1\nbatch_size = 8\n'
                   '[run]\neditor_eval_tiles = 1\neditor_realism_tiles = 0\n')
    return pipeline.run(cfg, out=root / "run", device="cpu", progress=False)


def planned(m: int, more: str) -> str:
    """The test's reviewer: pairs 0, 1, 2 of every five the requested way, 3 the other, 4 can't
    tell; over 10 pairs 6 agree, 2 disagree, 2 can't tell: agreement 0.75, can't tell 0.2."""
    return {3: "left" if more == "right" else "right", 4: "cant_tell"}.get(m % 5, more)


def _answer_current(b: Browser, order, pairs) -> str:
    current = b.evaluate("mxplainReview.state().current")
    pid = order[current]
    key, vk = KEYS[planned(current, pairs[pid]["more"])]
    b.key(key, vk=vk)
    return pid


def _check_escaping(b: Browser, order, pairs) -> None:
    """Walk every pair by keyboard: where the lot or attribute is EVIL it is shown as text."""
    b.key("ArrowUp", vk=38)  # navigation by keyboard as well
    seen = set()
    for _ in range(N_PAIRS):
        pid = order[b.evaluate("mxplainReview.state().current")]
        if pairs[pid]["attribute"] == EVIL:
            assert b.evaluate("document.getElementById('attr').textContent") == EVIL
            assert b.evaluate("document.getElementById('definition').textContent") == \
                f"defined as {EVIL}"
            seen.add("attribute")
        if pairs[pid]["lot"] == EVIL:
            assert b.evaluate("document.getElementById('meta').textContent").endswith(
                f"lot {EVIL}")
            seen.add("lot")
        b.key("n", code="KeyN", vk=78, text="n")
    assert seen == {"attribute", "lot"}
    assert b.evaluate("document.images.length") == 2


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (.ci/run installs the "
                    "Debian package 'chromium'; it could not be installed here)")
def test_review_page_in_headless_chromium(tmp_path, capsys):
    t0 = time.perf_counter()
    run = evil_run(tmp_path)
    assert main(["review", str(run), "--pairs", str(N_PAIRS), "--seed", "5"]) == 0
    page = run / "review" / "index.html"
    key = json.loads((run / "review" / "pairs.json").read_text())
    (sid, entry), = key["sets"].items()
    order, pairs = entry["order"], entry["pairs"]
    assert EVIL not in page.read_text()  # escaped in the JSON block
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    b = Browser(tmp_path / "profile")
    try:
        for domain in ("Page", "Network", "Runtime"):
            b.call(f"{domain}.enable")
        b.call("Browser.setDownloadBehavior", browser=True, behavior="allow",
               downloadPath=str(downloads), eventsEnabled=True)
        b.load(page.as_uri())
        assert b.evaluate("document.images.length") == 2
        assert b.evaluate("document.images[0].complete && document.images[0].naturalWidth") == 32
        b.evaluate("document.getElementById('reviewer').focus()")
        b.call("Input.insertText", text="Ada Reviewer")
        b.key("Enter", vk=13, text="\r")
        answered = [_answer_current(b, order, pairs) for _ in range(N_PAIRS // 2)]
        b.reload()  # midway: every answer and the name are still there
        state = b.evaluate("mxplainReview.state()")
        assert sorted(state["answers"]) == sorted(answered)
        assert state["reviewer"] == "Ada Reviewer"
        assert b.evaluate("document.getElementById('reviewer').value") == "Ada Reviewer"
        assert b.evaluate("document.getElementById('count').textContent") == "5 / 10 answered"
        answered += [_answer_current(b, order, pairs) for _ in range(N_PAIRS - N_PAIRS // 2)]
        assert sorted(answered) == sorted(order)
        assert b.evaluate("document.getElementById('bar').style.width") == "100%"
        _check_escaping(b, order, pairs)
        # download through the page's own button code (the 's' shortcut)
        b.key("s", code="KeyS", vk=83, text="s")
        b.wait_event("Browser.downloadProgress", lambda p: p.get("state") == "completed")
        files = list(downloads.glob("*.json"))
        assert [f.name for f in files] == [f"review-Ada_Reviewer-{sid}.json"]
        doc = json.loads(files[0].read_text())
        same = json.loads(b.evaluate("mxplainReview.answersJSON()"))
        assert {k: v for k, v in doc.items() if k != "downloaded_at"} == \
            {k: v for k, v in same.items() if k != "downloaded_at"}
        requests = [e["params"]["request"]["url"] for e in b.events
                    if e["method"] == "Network.requestWillBeSent"]
        dialogs = [e for e in b.events if e["method"] == "Page.javascriptDialogOpening"]
        errors = [e for e in b.events if e["method"] == "Runtime.exceptionThrown"]
    finally:
        b.close()
    assert not dialogs and not errors
    # every request is the page itself, one of its own data: tiles or the download's blob:
    assert requests.count(page.as_uri()) == 2  # the first load and the reload
    others = [u.split(":", 1)[0] for u in requests if u != page.as_uri()]
    assert set(others) <= {"data", "blob"} and others.count("data") >= 2, requests[:5]
    assert doc["reviewer"] == "Ada Reviewer" and doc["run_id"] == key["run_id"]
    assert doc["pair_ids"] == order and len(doc["answers"]) == N_PAIRS
    assert all(a["seconds"] >= 0 for a in doc["answers"])
    # import: the agreement is in metrics.json and in the report
    capsys.readouterr()
    assert main(["review", str(run), "--import", str(files[0])]) == 0
    assert "agreement 0.75" in capsys.readouterr().out
    review = json.loads((run / "metrics.json").read_text())["review"]
    pooled = review["pooled"]
    assert (pooled["answers"], pooled["agree"], pooled["disagree"], pooled["cant_tell"]) == \
        (10, 6, 2, 2)
    assert pooled["agreement"] == 0.75 and pooled["cant_tell_share"] == 0.2
    assert pooled["agreement_ci"] == pytest.approx([0.4093, 0.9285], abs=1e-4)  # Wilson, 6 of 8
    assert review["reviewers"] == ["Ada Reviewer"]
    html = (run / "report" / "index.html").read_text()
    assert "Trust: expert review" in html and "0.75 [0.41 – 0.93]" in html
    assert EVIL not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    print(f"browser acceptance: {time.perf_counter() - t0:.1f} s")
