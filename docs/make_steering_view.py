"""Regenerate docs/steering-view.html (and, with Chromium installed, docs/steering-view.png).

    DIRECTER_CACHE_DIR=/tmp/dcache .venv/bin/python docs/make_steering_view.py
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from directer import Directer
from directer.view.html import render_html

HERE = Path(__file__).resolve().parent
TASK, INSTRUCTION = "Write a haiku about autumn.", "Do not use any commas."

d = Directer.from_pretrained(max_new_tokens=60)
steered = d.generate(TASK, INSTRUCTION)
plain = d.generate(TASK, INSTRUCTION, method="none")
html_path = HERE / "steering-view.html"
html_path.write_text(render_html(steered, d.tokenizer, unsteered=plain), encoding="utf-8")
print(f"wrote {html_path}")

chromium = shutil.which("chromium") or shutil.which("chromium-browser")
if chromium:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1200,900", f"--screenshot={HERE / 'steering-view.png'}",
             html_path.as_uri()],
            check=True, capture_output=True,
        )
    print(f"wrote {HERE / 'steering-view.png'}")
