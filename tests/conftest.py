"""Shared pytest configuration (several modules' tests add to this file)."""

import pytest


# --- live MAST tests: @pytest.mark.remote_data runs only with --remote-data ------------------


def pytest_addoption(parser):
    parser.addoption(
        "--remote-data", action="store_true", default=False,
        help="run the tests marked remote_data (they need the live MAST service)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--remote-data"):
        return
    skip = pytest.mark.skip(reason="needs the live MAST service; run with --remote-data")
    for item in items:
        if "remote_data" in item.keywords:
            item.add_marker(skip)
