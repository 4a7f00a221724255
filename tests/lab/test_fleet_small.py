"""tools/lab/fleet/fleet.py with 20 devices: every device rotates to backup 0, none is bricked, the rogue
broker holding the retired key is never accepted."""
import json
import pathlib
import re
import subprocess
import sys

from helpers.pngcheck import read_png

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_fleet_of_20(tmp_path):
    png, js = tmp_path / "fleet.png", tmp_path / "fleet.json"
    p = subprocess.run([sys.executable, str(ROOT / "tools/lab/fleet/fleet.py"), "20", "--workers", "2", "--png", str(png),
                        "--json", str(js), "--max-seconds", "120"], check=False, capture_output=True, text=True,
                       timeout=180)
    last = p.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"fleet: (\d+) devices, (\d+) rotated, (\d+) bricked, (\d+) rogue-accepted, (\d+) s", last)
    assert m, p.stdout + p.stderr
    n, rotated, bricked, accepted, _ = map(int, m.groups())
    assert (n, rotated, bricked, accepted) == (20, 20, 0, 0), p.stdout
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(js.read_text())
    assert r["rogue_attempts"] >= 2 * 20  # every device met the rogue twice, after its rotation
    assert len(r["rotated_at_s"]) == 20 and min(r["rotated_at_s"]) >= r["switch_s"]
    assert p.stdout.count(f"chart: {png}") == 1
    img = read_png(png)  # a real PNG (Pillow verifies it), 800 x 450, with what was drawn in its metadata
    assert (img["width"], img["height"]) == (800, 450)
    assert img["text"]["Title"] == "keypin fleet: devices rotated to backup 0 over time (N=20)"
    assert img["text"]["Description"] == ("x: time since start (s); y: devices rotated (count); legend: rotated "
                                          f"devices, fleet size (20), switch to the backup key ({r['switch_s']:.0f} s)")
    assert img["colours"] >= 8  # curve, lines, text, grid: not a blank canvas
