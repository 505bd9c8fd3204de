import pytest
from train_testutil import write_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_corpus(str(tmp_path_factory.mktemp("corpus") / "text.txt"))
