"""`cortex lens monitor` (or `cortex steer monitor` when no lens group is registered) end to end."""

from __future__ import annotations

import json

from cortex.cli.main import app, main


def _group() -> str:
    """The command group that holds `monitor`."""
    names = {g.name or g.typer_instance.info.name: g.typer_instance for g in app.registered_groups}
    for name in ("lens", "steer"):
        if name in names and any(c.name == "monitor" for c in names[name].registered_commands):
            return name
    raise AssertionError(f"no group with a monitor command among {sorted(names)}")


def test_monitor_command_writes_json_html_png(demo, tmp_path, capsys):
    home, art = demo
    out = tmp_path / "report"
    rc = main(["--home", str(home), _group(), "monitor", "--model", art.model, "--lens", art.lens_pack,
               "def run(self):\n", "--steer", "prose=0.5", "--bound", "python<=0.3", "--max-new-tokens", "20",
               "--window", "8", "--stride", "4", "--out", str(out)])
    assert rc == 0
    said = capsys.readouterr().out
    assert "wrote" in said and "bound python<=0.3" in said
    data = json.loads((out / "monitor.json").read_text())
    assert len(data["tokens"]) == 20 and data["bounds"] == ["python<=0.3"]
    assert data["steering"][0]["concept"] == "prose" and data["divergence"] is not None
    assert (out / "monitor.html").stat().st_size > 0 and (out / "monitor.png").read_bytes()[:4] == b"\x89PNG"


def test_monitor_command_errors_name_the_input(demo, tmp_path, capsys):
    home, art = demo
    base = ["--home", str(home), _group(), "monitor", "--model", art.model, "--lens", art.lens_pack, "x",
            "--max-new-tokens", "2", "--no-divergence", "--out", str(tmp_path / "o")]
    assert main(base + ["--steer", "poetry=1"]) == 1
    assert "Unknown concept 'poetry'" in capsys.readouterr().err
    assert main(base + ["--bound", "python=0.3"]) == 1
    assert "CONCEPT<=X" in capsys.readouterr().err
    assert main(base + ["--steer-mode", "push", "--steer", "prose=1"]) == 1
    assert "steer_mode" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
