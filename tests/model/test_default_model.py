"""The default model (`make model`) on the four whole tiles of the 2018 data: the rule
"flag when more than K superpixels are positive" gets every tile right."""

from __future__ import annotations

from pathlib import Path

import pytest

from amberscan.common.served_features import client_for
from amberscan.common.settings import Settings
from amberscan.model.classifier import Classifier
from amberscan.model.detect import tile_result
from amberscan.vision.crops import crops_for
from amberscan.vision.imageio import read_image
from amberscan.vision.segment import segment
from tests.modelserver.test_runtimes import assert_int8_close

pytestmark = pytest.mark.stack


@pytest.mark.parametrize(
    ("name", "mining"),
    [("positive1", True), ("positive2", True), ("negative1", False), ("negative2", False)],
)
async def test_default_model_classifies_the_shared_tiles(
    base_settings: Settings, shared_data: Path, name: str, mining: bool
) -> None:
    path = Path(base_settings.classifier.path)
    if not path.exists():
        pytest.fail(f"no classifier at {path}: build the default model with `make model`")
    classifier = Classifier.load(path)
    image = read_image(shared_data / "tiles" / f"{name}.png")
    segmentation = segment(image)
    async with client_for(base_settings) as client:
        size = (await client.metadata()).crop_size  # the served model's, read as the pipeline does
        vectors = await client.predict(crops_for(image, segmentation, size))
    result = tile_result(
        segmentation,
        classifier.score(vectors),
        classifier.threshold,
        base_settings.aggregator.min_positive_superpixels,
    )
    assert result.flagged == mining, (name, result)


# The fine-tuned default's INT8 features against its float32 ones on the shared tiles' crops,
# per tile: median relative L2 0.047-0.056 with an Intel build, 0.063-0.142 (cosine 0.991-0.998)
# with an AMD EPYC's build of the same recipe (each CPU fine-tunes to other weights, and NNCF
# calibrates each). What holds for every build is INT8's bound for any backbone, which a wrong
# scale, layout or calibration is far outside (relative error near 1), and the same verdicts.


def test_the_default_int8_backbone_keeps_the_float_verdicts(
    base_settings: Settings, shared_data: Path
) -> None:
    """The default export serves its INT8 backbone (the CPU model server's default): its
    features stay close to the same export's float32 ones, and every shared tile gets the same
    verdict from either."""

    from amberscan.modelserver.runtimes import OpenVinoRuntime

    model_dir = Path(base_settings.serving.model_dir)
    int8 = OpenVinoRuntime(model_dir, base_settings.model_server.backbone_name)
    f32 = OpenVinoRuntime(model_dir, base_settings.model_server.backbone_name, precision="f32")
    assert int8.precision == "int8", "make model exports the INT8 backbone (AMBERSCAN_INT8=1)"
    classifier = Classifier.load(Path(base_settings.classifier.path))
    for name in ("positive1", "positive2", "negative1", "negative2"):
        image = read_image(shared_data / "tiles" / f"{name}.png")
        segmentation = segment(image)
        crops = crops_for(image, segmentation, int8.inputs["serving_default"]["images"].shape[1])
        quantized = int8.predict({"images": crops})["features"]
        exact = f32.predict({"images": crops})["features"]
        assert_int8_close(quantized, exact, name)
        verdicts = [
            tile_result(
                segmentation,
                classifier.score(features),
                classifier.threshold,
                base_settings.aggregator.min_positive_superpixels,
            ).flagged
            for features in (quantized, exact)
        ]
        assert verdicts[0] == verdicts[1], name
