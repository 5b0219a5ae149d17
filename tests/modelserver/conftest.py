"""The tiny SavedModel of tests/model serves the model-server tests too."""

from tests.model.conftest import tiny_model  # noqa: F401 - the fixture, shared
