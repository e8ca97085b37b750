"""Screenshots of the built documentation site in headless Chromium, to look at the pages as a reader sees them.

    python docs/screenshot.py site docs/screenshots     (or: make docs-screenshots)

Chromium comes from the system packages (Debian: apt install chromium); without it the script says so and
exits 0, writing nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PAGES = ["index", "getting-started", "guides/sde-view", "guides/samplers", "guides/own-images", "reference",
         "benchmarks"]  # fmt: skip
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def main(site: str = "site", out: str = "docs/screenshots") -> int:
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if browser is None:
        print(f"no Chromium found (looked for {', '.join(BROWSERS)}); skipping the screenshots")
        return 0
    site_dir, out_dir = Path(site).resolve(), Path(out)
    if not (site_dir / "index.html").is_file():
        print(f"{site_dir}/index.html not found; build the site first (make docs)", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    for page in PAGES:
        target = out_dir / f"{page.replace('/', '_')}.png"
        url = (site_dir / f"{page}.html").as_uri()
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1800",
               "--virtual-time-budget=4000", f"--screenshot={target.resolve()}", url]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not target.is_file():
            print(f"{page}: chromium failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
            return 1
        print(f"{page} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
