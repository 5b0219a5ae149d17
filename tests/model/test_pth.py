"""The no-torch `.pth` reader against files torch wrote (fixtures from tools/reference_logits.py)."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from amberscan.model.backbones import efficientnet_lite_pretrained_path
from amberscan.model.pth import PthError, load_state_dict

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "efficientnet_lite0_reference.json").read_text())


@pytest.fixture(scope="module")
def lite0() -> dict[str, np.ndarray]:
    return load_state_dict(efficientnet_lite_pretrained_path("efficientnet-lite0"))


def test_real_pth_has_every_entry_in_order(lite0: dict[str, np.ndarray]) -> None:
    assert len(lite0) == REFERENCE["state_dict"]["entries"] == 296
    assert next(iter(lite0)) == "_conv_stem.weight"
    assert list(lite0)[-2:] == ["_fc.weight", "_fc.bias"]
    assert {str(v.dtype) for v in lite0.values()} == {"float32", "int64"}
    # Every float parameter and BN statistic: what the Keras logits model's count_params() says.
    floats = sum(v.size for v in lite0.values() if v.dtype == np.float32)
    assert floats == 4_694_024
    assert all(v.flags.c_contiguous and v.flags.owndata for v in lite0.values())


@pytest.mark.parametrize("key", sorted(REFERENCE["state_dict"]["checks"]))
def test_real_pth_values_match_torch_load(lite0: dict[str, np.ndarray], key: str) -> None:
    check = REFERENCE["state_dict"]["checks"][key]
    value = lite0[key]
    assert list(value.shape) == check["shape"]
    assert str(value.dtype) == check["dtype"]
    assert float(value.astype(np.float64).sum()) == pytest.approx(check["sum"], abs=1e-4)
    np.testing.assert_allclose(value.ravel()[:4], check["first"], atol=1e-6)


@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth"])
def test_both_formats_round_trip_awkward_tensors(name: str) -> None:
    expected = np.load(FIXTURES / "tiny_expected.npz")
    state = load_state_dict(FIXTURES / name)
    assert list(state) == list(expected.keys())
    for key, array in state.items():
        assert array.dtype == expected[key].dtype, key
        assert array.shape == expected[key].shape, key
        np.testing.assert_array_equal(array, expected[key], err_msg=key)
    # Views of one storage are copies: writing one leaves the other alone.
    state["shared_a"][2] = -1.0
    assert state["shared_b"][0] == 4.0


def test_not_a_pth_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"GIF89a not a state dict at all")
    with pytest.raises(ValueError, match=r"weights\.pth.*neither a zip nor the legacy format"):
        load_state_dict(path)


def test_truncated_legacy_file(tmp_path: Path) -> None:
    raw = (FIXTURES / "tiny_legacy.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(raw[: len(raw) - 40])
    with pytest.raises(PthError, match=r"cut\.pth"):
        load_state_dict(path)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_zip_with_foreign_global_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pth: unexpected pickle global (posix|os)\.system"):
        load_state_dict(path)


def test_legacy_with_foreign_global_is_refused(tmp_path: Path) -> None:
    stream = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, {"w": _Evil()}):
        pickle.dump(part, stream, protocol=2)
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(stream.getvalue())
    with pytest.raises(ValueError, match=r"evil_legacy\.pth: unexpected pickle global"):
        load_state_dict(path)


def test_zip_holding_something_else_than_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(PthError, match=r"list\.pth: holds a list, not a state dict"):
        load_state_dict(path)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError):
        load_state_dict("/nonexistent/weights.pth")
