"""Scan features on the real features topic, computed by the real model server, and a small
classifier of them in the registry: what the explore page and the browser test project."""

from __future__ import annotations

import numpy as np

from amberscan.common import registry, topic_admin, topics
from amberscan.common.blobstore import BlobStore
from amberscan.common.served_features import client_for, served_backbone
from amberscan.common.settings import Settings
from amberscan.model.classifier import Classifier
from amberscan.v1 import messages_pb2 as pb
from amberscan.vision.crops import crop_superpixel
from amberscan.vision.imageio import decode_image
from amberscan.vision.labels import decode_labels
from amberscan.vision.segment import Segmentation
from tests import streams
from tests.web.conftest import Seeded


async def publish_classifier(
    settings: Settings, vectors: np.ndarray, labels: list[int], backbone: str
) -> Classifier:
    """A small XGBoost model of these vectors, made the registry's current classifier: the tests
    then need neither the local model file (rebuilt now and then) nor a long training run."""
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=10, max_depth=2, n_jobs=1, random_state=0)
    model.fit(np.asarray(vectors, dtype=np.float32), np.asarray(labels))
    meta = {"version": "explore-test-1", "backbone": backbone}
    classifier = Classifier(model.get_booster(), 0.5, meta)
    await BlobStore(settings.s3).ensure_bucket()
    await registry.make_current(settings.s3, classifier, action="promote", by="test")
    return classifier


async def produce_scan_features(seeded: Seeded, per_tile: int = 3) -> list[pb.SuperpixelFeatures]:
    """Features of the first `per_tile` superpixels of each seeded tile, computed by the model
    server from their real crops, produced to the features topic as the feature stage does;
    a classifier of them (mining = superpixels of the positive tiles) is published."""
    settings = seeded.settings
    messages: list[pb.SuperpixelFeatures] = []
    mining: list[int] = []
    async with client_for(settings) as client:
        await client.wait_until_serving(180)
        served = await served_backbone(client)
        backbone = served.label
        for name, detection in seeded.tiles.items():
            image = decode_image(await seeded.store.get(detection.image_key), "tile")
            segmentation = Segmentation.from_labels(
                decode_labels(await seeded.store.get(detection.labels_key))
            )
            chosen = segmentation.superpixels[:per_tile]
            crops = np.stack([crop_superpixel(image, sp.bbox, served.crop_size) for sp in chosen])
            vectors = await client.predict(crops)
            for sp, vector in zip(chosen, vectors, strict=True):
                r0, c0, r1, c1 = sp.bbox
                ref = pb.SuperpixelRef(
                    tile_id=detection.tile_id,
                    scan_id=detection.scan_id,
                    imagery_date=detection.imagery_date,
                    image_key=detection.image_key,
                    labels_key=detection.labels_key,
                    image_width=image.shape[1],
                    image_height=image.shape[0],
                    segment_index=sp.index,
                    segment_count=len(segmentation.superpixels),
                    bbox=pb.PixelBox(row0=r0, col0=c0, row1=r1, col1=c1),
                    demo=detection.demo,
                )
                messages.append(
                    pb.SuperpixelFeatures(ref=ref, vector=vector.tolist(), backbone=backbone)
                )
                mining.append(int(name.startswith("positive")))
    vectors = np.array([m.vector for m in messages])
    await publish_classifier(settings, vectors, mining, backbone)
    await topic_admin.ensure_topics(settings.kafka, [topics.FEATURES])
    await streams.produce(
        settings,
        topics.FEATURES,
        [(m.ref.tile_id.encode(), m.SerializeToString()) for m in messages],
    )
    return messages
