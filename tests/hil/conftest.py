import pytest


@pytest.fixture
def sim_only(request):
    if request.config.getoption("--hub") != "sim":
        pytest.skip("needs the simulated world (virtual hub); running against a real hub")
