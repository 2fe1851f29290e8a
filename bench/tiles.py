"""`python -m bench.tiles`: what preparing a ColModernVBERT page costs, against FastEmbed.

A page's preparation is the CPU work before inference: decoding, the Idefics3 resizes and
tiles, rescaling and normalising (``service/models/tiling.py``), against FastEmbed 0.9.1's
processor for the same preprocessor_config.json (Qdrant/colmodernvbert's layout: longest edge
2048, tiles of 512, mean and std 0.5). Random-noise pages of a few sizes (the longest edge
goes to 2048, so each becomes up to 16 tiles and the global view); the median of a few runs,
and the ratio measured in the same run. Then the rescale-and-normalise step alone, by table
(``images.scaled``) against the float arithmetic it replaces.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from service.models import images
from service.models.tiling import split_image, tiling_config_from_dict

CONFIG: dict[str, Any] = {
    "image_processor_type": "Idefics3ImageProcessor",
    "do_resize": True,
    "size": {"longest_edge": 2048},
    "do_image_splitting": True,
    "max_image_size": {"longest_edge": 512},
    "resample": 1,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
SIZES = ((850, 1100), (1240, 1754), (640, 480))  # width x height: a letter page, A4 at 150 dpi


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from fastembed.image.transform.operators import Compose

    theirs, ours = Compose.from_config(CONFIG), tiling_config_from_dict(CONFIG)
    rng = np.random.default_rng(0)
    print("| page (w x h) | tiles | service ms | FastEmbed ms | FastEmbed / service |")
    print("|---|---|---|---|---|")
    for width, height in SIZES:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            buffer, "PNG"
        )
        data = buffer.getvalue()
        tiles = split_image(images.decode_image(data, 0, 10**8), ours)

        def service(data: bytes = data) -> object:
            return split_image(images.decode_image(data, 0, 10**8), ours)

        def fastembed(data: bytes = data) -> object:
            return theirs([Image.open(io.BytesIO(data))], metadata={})

        a, b = median_ms(service, args.repeats), median_ms(fastembed, args.repeats)
        print(f"| {width} x {height} | {len(tiles.pixels)} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    chw = rng.integers(0, 256, (2048, 2048, 3), dtype=np.uint8).transpose(2, 0, 1)
    mean = (0.5, 0.5, 0.5)
    table = median_ms(lambda: images.scaled(chw, 1 / 255, mean, mean), args.repeats)
    arithmetic = median_ms(lambda: images._scaled(chw, 1 / 255, mean, mean), args.repeats)
    print(
        f"\nrescale + normalise 3 x 2048 x 2048: table {table:.0f} ms, arithmetic "
        f"{arithmetic:.0f} ms ({arithmetic / table:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
