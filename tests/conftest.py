import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

from kai_drive.catalog import env_ids  # noqa: E402

ENV_IDS = sorted(env_ids())


def pytest_generate_tests(metafunc):
    if "env_id" in metafunc.fixturenames:
        metafunc.parametrize("env_id", ENV_IDS)


@pytest.fixture
def make_env():
    """Factory that closes every env it made at the end of the test."""
    import gymnasium

    made = []

    def _make(env_id, **kwargs):
        env = gymnasium.make(env_id, **kwargs)
        made.append(env)
        return env

    yield _make
    for env in made:
        env.close()
