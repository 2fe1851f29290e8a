"""`python -m tools.image`: build the stand-in base and the images (`make image-test`)."""

from __future__ import annotations

import sys

from tools.image.build import main

if __name__ == "__main__":
    sys.exit(main())
