"""Open a semantic-ID explorer page (reports/explorer/<page>.html, the `explore` stage) in headless Chromium:
report the JavaScript errors it raised, what it shows, and save a screenshot.

    python scripts/explorer_screenshot.py reports/explorer/rqvae.html --out reports/explorer_rqvae.png

Needs Chromium and the `playwright` package (`pip install -e .[browser]`); the page itself needs no network.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("mlflow_compare_screenshot", HERE / "mlflow_compare_screenshot.py")
_shot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shot)
find_chromium, CHROMIUM_ARGS = _shot.find_chromium, _shot.CHROMIUM_ARGS


def open_page(page: Path, out: Path | None = None, chromium: str | None = None, width: int = 1100,
              height: int = 1500) -> dict:
    """{"errors": [...], "stats": {id: text}, "code_rows": n, "code_note": text, "title": text} for ``page``,
    read from the rendered DOM; with ``out``, a screenshot of the first ``height`` pixels."""
    from playwright.sync_api import sync_playwright

    browser_path = find_chromium(chromium)
    if browser_path is None:
        raise RuntimeError("no Chromium found (apt-get install chromium, or pass --chromium <path>)")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            tab.on("console",
                   lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None)
            tab.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            tab.goto(Path(page).resolve().as_uri())
            tab.wait_for_load_state("load")
            result = {
                "title": tab.title(),
                "stats": tab.eval_on_selector_all("#stats td", "cells => Object.fromEntries(cells.map(c => "
                                                  "[c.id.replace('stat-', ''), c.textContent]))"),
                "code_rows": tab.locator("#code-items tbody tr").count(),
                "code_note": tab.text_content("#code-note") if tab.locator("#code-note").count() else "",
                "svg_count": tab.locator("svg").count(),
            }
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": width, "height": height})
        finally:
            browser.close()
    result["errors"] = errors
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="PNG to write")
    ap.add_argument("--chromium", default=None)
    args = ap.parse_args(argv)
    result = open_page(args.page, args.out, args.chromium)
    print({k: v for k, v in result.items() if k != "stats"})
    print(result["stats"])
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
