"""Config loading: valid files load, errors name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.config import load_config, parse_size
from pipeline.errors import EXIT_CONFIG, ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_minimal_config_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "name: x\n"))
    assert (cfg.crs.horizontal, cfg.crs.vertical) == ("auto", "auto")  # the inputs' own, resolved by a build
    assert cfg.raw_dir == (tmp_path / "../data/raw").resolve()
    assert cfg.layers.mobile_points.access == "internal"
    assert cfg.layers.panoramas.access == "internal"
    assert cfg.layers.aerial_points.access == "public"


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, "name: x\nlayers:\n  buildings:\n    roof_percentil: 75\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "layers.buildings.roof_percentil" in msg and "unknown key" in msg


def test_bad_value_is_named(tmp_path):
    p = write(tmp_path, "name: x\nlayers:\n  buildings:\n    roof_percentile: 120\n")
    with pytest.raises(ConfigError, match=r"layers\.buildings\.roof_percentile"):
        load_config(p)


def test_bad_access_class(tmp_path):
    p = write(tmp_path, "name: x\nlayers:\n  panoramas:\n    access: secret\n")
    with pytest.raises(ConfigError, match=r"layers\.panoramas\.access"):
        load_config(p)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "name: [x\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_memory_size(tmp_path):
    with pytest.raises(ConfigError, match=r"runtime\.memory"):
        load_config(write(tmp_path, "name: x\nruntime:\n  memory: lots\n"))


def test_parse_size():
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("800mb") == 800_000_000
    with pytest.raises(ConfigError):
        parse_size("12 parsecs")


def test_duplicate_epochs(tmp_path):
    p = write(
        tmp_path,
        "name: x\nsources:\n  aerial:\n    - {epoch: '2024', points: 'a/*.laz'}\n"
        "    - {epoch: '2024', points: 'b/*.laz'}\n",
    )
    with pytest.raises(ConfigError, match="duplicate epoch"):
        load_config(p)


def test_cli_exit_code_for_bad_config(tmp_path, capsys):
    p = write(tmp_path, "name: x\nbogus: 1\n")
    assert main(["build", str(p)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "bogus" in err and str(p) in err


@pytest.mark.parametrize("name", ["demo.yaml", "tiny.yaml", "ruhr.example.yaml"])
def test_shipped_configs_load(name):
    path = REPO / "configs" / name
    if not path.exists():
        pytest.fail(f"configs/{name} missing")
    cfg = load_config(path)
    assert cfg.name


def test_example_config_lists_no_standard_las_field_as_extra_dimension():
    """issue 16: the example listed intensity and classification as extra dimensions, and every build warned
    "extra dimensions not found" (they are standard LAS fields, always in the tiles)."""
    cfg = load_config(REPO / "configs" / "ruhr.example.yaml")
    for layer in (cfg.layers.aerial_points, cfg.layers.mobile_points):
        names = layer.extra_dimensions
        assert isinstance(names, str) or not {n.lower() for n in names} & {"intensity", "classification"}


def test_standard_las_fields_in_extra_dimensions_are_accepted(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            "name: x\nlayers:\n  aerial_points:\n    extra_dimensions: [intensity, Amplitude, classification, "
            "gps_time, red, Reflectance]\n",
        )
    )
    assert list(cfg.layers.aerial_points.extra_dimensions) == ["Amplitude", "Reflectance"]
    cfg = load_config(
        write(tmp_path, "name: x\nlayers:\n  mobile_points:\n    extra_dimensions: [Intensity]\n")
    )
    assert list(cfg.layers.mobile_points.extra_dimensions) == []


@pytest.mark.parametrize(
    ("name", "hint"),
    [("scan_angle", "attributes: \\[scan_angle\\]"), ("user_data", "do not carry it")],
)
def test_standard_las_field_the_tiles_lack_is_a_clear_config_error(tmp_path, name, hint):
    path = write(tmp_path, f"name: x\nlayers:\n  aerial_points:\n    extra_dimensions: [{name}]\n")
    with pytest.raises(ConfigError, match=r"layers\.aerial_points\.extra_dimensions") as e:
        load_config(path)
    assert f"'{name}' is a standard LAS field" in str(e.value)
    assert "c.yaml" in str(e.value)
    import re

    assert re.search(hint, str(e.value))
