"""Configuration loading and validation."""

import pytest

from hstcosmicrays.config import ConfigError, load_config

ALL = {"acs_wfc", "acs_hrc", "stis_ccd", "wfc3_uvis", "wfc3_ir", "wfpc2", "nicmos_nic1", "nicmos_nic2", "nicmos_nic3"}


def test_defaults_cover_every_instrument_of_the_mission():
    cfg = load_config()
    assert set(cfg.instruments) == ALL
    uvis = cfg.instruments["wfc3_uvis"]
    assert uvis.mast_name == "WFC3/UVIS"
    assert uvis.chip_shape == (2051, 4096)
    assert uvis.crreject.crsigmas == (6.5, 5.5, 4.5)
    assert uvis.crreject.badinpdq == 32575
    assert cfg.instruments["acs_wfc"].inactive == (("2007-01-27", "2009-05-01"),)


@pytest.mark.parametrize("alias", ["wfc3uvis", "wfc3_uvis", "WFC3/UVIS", "Wfc3-Uvis", "WFC3UVIS"])
def test_aliases_any_case(alias):
    assert load_config().instrument(alias).name == "wfc3_uvis"


def test_unknown_instrument_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        load_config().instrument("nosuch")
    msg = str(err.value)
    assert "nosuch" in msg and "wfc3_uvis" in msg and "acs_wfc" in msg


def test_integration_time_rules():
    cfg = load_config()
    assert cfg.instruments["wfc3_uvis"].integration_time(exptime=900.0, flashdur=10.0) == 960.0
    wfpc2 = cfg.instruments["wfpc2"]
    assert wfpc2.integration_time(exptime=180.0) == 210.0
    assert wfpc2.integration_time(exptime=181.0) == 241.0


def test_user_file_overrides_key_by_key(tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("pipeline:\n  workers: 3\ninstruments:\n  stis_ccd:\n    crreject:\n      crradius: 2.5\n")
    cfg = load_config(user)
    assert cfg.pipeline.workers == 3
    assert cfg.pipeline.output_dir == "data_products"  # untouched keys keep their default
    stis = cfg.instruments["stis_ccd"]
    assert stis.crreject.crradius == 2.5
    assert stis.crreject.crthresh == 0.75
    assert cfg.digest != load_config().digest


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("pipeline:\n  workers: many\n", "pipeline.workers", "an integer"),
        ("instruments:\n  acs_wfc:\n    readout_time: slow\n", "instruments.acs_wfc.readout_time", "a number"),
        ("instruments:\n  acs_wfc:\n    crreject:\n      crsigmas: 5\n", "instruments.acs_wfc.crreject.crsigmas", "a list"),
        ("pipeline:\n  keep_downloads: 1\n", "pipeline.keep_downloads", "true or false"),
    ],
)
def test_wrong_type_names_file_key_and_expected_type(tmp_path, text, key, expected):
    user = tmp_path / "bad.yaml"
    user.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(user)
    msg = str(err.value)
    assert str(user) in msg and f"'{key}'" in msg and expected in msg
    assert "\n" not in msg


def test_negative_workers_names_the_file_and_key(tmp_path):
    """A value of the right type but out of range is reported against the file's key, not a flag."""
    user = tmp_path / "neg.yaml"
    user.write_text("pipeline:\n  workers: -3\n")
    with pytest.raises(ConfigError) as err:
        load_config(user)
    assert str(err.value) == f"{user}: key 'pipeline.workers': expected 0 or more (0 = number of cores), got -3"


def test_unknown_key_is_an_error(tmp_path):
    user = tmp_path / "typo.yaml"
    user.write_text("pipeline:\n  wrokers: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'pipeline.wrokers'"):
        load_config(user)


def test_new_instrument_missing_key_is_named(tmp_path):
    user = tmp_path / "new.yaml"
    user.write_text("instruments:\n  foc:\n    mast_name: FOC\n")
    with pytest.raises(ConfigError, match=r"missing key 'instruments\.foc\.instrume'"):
        load_config(user)


def test_bad_choice_and_bad_yaml(tmp_path):
    user = tmp_path / "choice.yaml"
    user.write_text("instruments:\n  acs_wfc:\n    crreject:\n      initgues: mean\n")
    with pytest.raises(ConfigError, match="initgues"):
        load_config(user)
    broken = tmp_path / "broken.yaml"
    broken.write_text("pipeline: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_a_binary_file_given_as_configuration_is_named(tmp_path):
    """A FITS file given to --config by mistake gave only the codec's "'utf-8' codec can't
    decode byte 0xf3 in position ...", naming no file."""
    fits_file = tmp_path / "dark_flt.fits"
    fits_file.write_bytes(b"SIMPLE  =                    T" + b"\xf3\xff" + b" " * 40)
    with pytest.raises(ConfigError) as exc:
        load_config(fits_file)
    assert str(exc.value) == f"{fits_file}: cannot read configuration (not UTF-8 text: byte 30 is b'\\xf3')"


def test_crreject_keys_shadowed_by_crreject_rows_are_named_once(tmp_path, caplog):
    """STIS/CCD's crreject_rows set crsigmas, crthresh and initgues in every row, so a user's
    crreject of those keys is never used unless crreject_rows is emptied: one warning naming
    both keys; none for keys no row sets, for an emptied table or for an instrument without rows."""
    user = tmp_path / "mine.yaml"
    user.write_text("instruments:\n  stis_ccd:\n    crreject:\n      crsigmas: [9.0]\n      crradius: 3.0\n"
                    "  wfc3_uvis:\n    crreject:\n      crsigmas: [9.0]\n")
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        cfg = load_config(user)
    assert [r.getMessage() for r in caplog.records] == [
        f"{user}: instruments.stis_ccd.crreject.crsigmas is not used: instruments.stis_ccd.crreject_rows sets it "
        "in every one of its 42 rows, and the row chosen for a stack (by its number of frames and mean exposure "
        "time) wins; add 'crreject_rows: []' beside crreject to use your value"]
    assert cfg.instruments["stis_ccd"].crreject.crsigmas == (9.0,)
    caplog.clear()
    user.write_text("instruments:\n  stis_ccd:\n    crreject:\n      crsigmas: [9.0]\n      crthresh: 0.5\n"
                    "    crreject_rows:\n      - {crsplit: 2, crsigmas: [5.0]}\n      - {crsplit: 3}\n")
    with caplog.at_level("WARNING", logger="hstcosmicrays"):
        load_config(user)
    assert caplog.records == []  # the file gives its own rows
    for text in ("instruments:\n  stis_ccd:\n    crreject_rows: []\n    crreject:\n      crsigmas: [9.0]\n",
                 "instruments:\n  stis_ccd:\n    crreject:\n      crradius: 3.0\n"):
        user.write_text(text)
        with caplog.at_level("WARNING", logger="hstcosmicrays"):
            load_config(user)
        assert caplog.records == []


def test_opt_in_simulation_keys_are_off_by_default_and_a_user_file_may_set_them(tmp_path):
    """The opt-in features of the simulated archive (SimulationConfig fields with a default) are
    not in the packaged file, so that its digest, and the default archive, do not change; a
    --config file may still set them, and other optional keys the defaults leave out."""
    cfg = load_config()
    for inst in cfg.instruments.values():
        assert inst.simulation.opt_in_features == ()
    user = tmp_path / "sim.yaml"
    user.write_text("instruments:\n  acs_wfc:\n    jump_sigma: 5.0\n    simulation:\n      dn_frames: true\n"
                    "      amp_gain_factors: [0.9, 1.0, 1.1, 1.2]\n      subarray_fraction: 0.5\n"
                    "      subarray_shape: [64, 2100]\n      reed_solomon_fraction: 0.25\n")
    mine = load_config(user)
    sim = mine.instruments["acs_wfc"].simulation
    assert (sim.dn_frames, sim.amp_gain_factors, sim.subarray_fraction, sim.subarray_shape,
            sim.reed_solomon_fraction) == (True, (0.9, 1.0, 1.1, 1.2), 0.5, (64, 2100), 0.25)
    assert sim.opt_in_features == ("dn_frames", "amp_gain_factors", "subarray_fraction", "reed_solomon_fraction")
    assert mine.instruments["acs_wfc"].jump_sigma == 5.0
    assert mine.digest != cfg.digest and mine.instruments["acs_hrc"] == cfg.instruments["acs_hrc"]
    user.write_text("instruments:\n  acs_wfc:\n    simulation:\n      dn_frame: true\n")
    with pytest.raises(ConfigError, match="unknown key 'instruments.acs_wfc.simulation.dn_frame'"):
        load_config(user)


@pytest.mark.parametrize("name, text, match", [
    ("wfc3_uvis", "reed_solomon_fraction: 0.5", "ACS only, not WFC3"),
    ("wfpc2", "subarray_fraction: 0.5", "CCD FLT files"),
    ("wfc3_ir", "dn_frames: true", "CCD FLT files"),
    ("acs_hrc", "subarray_fraction: 0.5\n      subarray_shape: [2000, 64]", "does not fit"),
    ("acs_hrc", "amp_gain_factors: [1.0, 2.0]", "4 positive values"),
    ("acs_hrc", "subarray_fraction: 1.5", "within \\[0, 1\\]"),
])
def test_opt_in_simulation_keys_are_checked(tmp_path, name, text, match):
    user = tmp_path / "bad.yaml"
    user.write_text(f"instruments:\n  {name}:\n    simulation:\n      {text}\n")
    with pytest.raises(ConfigError, match=match) as err:
        load_config(user)
    assert str(user) in str(err.value) and "\n" not in str(err.value)
