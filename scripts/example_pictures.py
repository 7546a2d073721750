"""The example pictures of results/pictures/: what simam-train's curves and simam-visualize's attention
maps look like, from short runs on a slice of the real CIFAR-10 copy.

    python scripts/example_pictures.py [--data DIR] [--work DIR] [--output results/pictures]

DIR is an image-folder copy of CIFAR-10, train/<class>/*.jpg and test/<class>/*.jpg (default:
$SIMAM_DATA_DIR/cifar10-jpeg, the copy the real-data tests read). The runs are short (a few hundred
images, one or two epochs: minutes on two cores), so the pictures show the layout of each figure, not
what a trained model attends to. They are stored as 256-colour PNGs, to keep the repository small:

    curves_alexnet_simam_2_epochs.png      simam-train's curves.png of a 2-epoch run (integer epoch ticks)
    attention_alexnet_simam.png            simam-visualize: 4 test images x AlexNet-SimAM's 5 layers
    attention_mobilenet_v2_simam.png       the default for MobileNetV2's 17 SimAM layers: 6 evenly spaced
    attention_mobilenet_v2_simam_all.png   --layers all: the 17 layers, wrapped after 8 per image
    attention_resnet18_simam_own_images.png  --images FILE ... --layers layer1.0 layer4.1: given files
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def tool(name: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", f"simam_paddle.{name}", *args], check=True, cwd=REPO)


def train(model: str, work: Path, data: Path, epochs: int, *extra: str) -> Path:
    run = work / model
    tool("train", "-o", f"model.name={model}", "-o", f"data.root={data}", "-o", f"train.epochs={epochs}",
         "-o", "data.limit_train=400", "-o", "data.limit_val=100", "-o", "data.batch_size=50",
         "-o", "train.throughput_batches=0", "-o", f"train.output_dir={run}", "--overwrite", *extra)
    return run


def keep(picture: Path, name: str, output: Path) -> None:
    """``picture`` as a 256-colour PNG ``output/name``."""
    Image.open(picture).convert("RGB").quantize(256).save(output / name, optimize=True)


def main() -> int:
    shared = Path(os.environ.get("SIMAM_DATA_DIR", REPO.parent / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=shared / "cifar10-jpeg")
    p.add_argument("--work", type=Path, default=Path("runs/example_pictures"))
    p.add_argument("--output", type=Path, default=REPO / "results" / "pictures")
    args = p.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()

    alexnet = train("alexnet_simam", work, args.data, 2)
    keep(alexnet / "curves.png", "curves_alexnet_simam_2_epochs.png", args.output)
    tool("visualize", str(alexnet), "--num-images", "4", "--output", str(work / "a"))
    keep(work / "a" / "attention.png", "attention_alexnet_simam.png", args.output)

    mobilenet = train("mobilenet_v2_simam", work, args.data, 1, "-o", "data.image_size=64")
    tool("visualize", str(mobilenet), "--num-images", "3", "--output", str(work / "m"))
    keep(work / "m" / "attention.png", "attention_mobilenet_v2_simam.png", args.output)
    tool("visualize", str(mobilenet), "--num-images", "2", "--layers", "all", "--output", str(work / "m_all"))
    keep(work / "m_all" / "attention.png", "attention_mobilenet_v2_simam_all.png", args.output)

    resnet = train("resnet18_simam", work, args.data, 1, "-o", "data.image_size=64")
    files = [str(sorted((args.data / "test" / c).iterdir())[k]) for k, c in enumerate(("cat", "ship"))]
    tool("visualize", str(resnet), "--images", *files, "--layers", "layer1.0", "layer4.1", "--output", str(work / "r"))
    keep(work / "r" / "attention.png", "attention_resnet18_simam_own_images.png", args.output)
    print(f"pictures in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
